"""Metrics to ``WORKDIR/metrics.jsonl``, TensorBoard event files in ``WORKDIR/tensorboard`` and a
progress line with ETA (process 0 only). The workdir may be a bucket (``storage``)."""
import contextlib
import json
import math
import sys
import time

from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
import numpy as np

from annoprop_jax import storage


def _to_python(value):
  """Numbers for JSON; NaN (e.g. an empty IoU bin) becomes null."""
  value = np.asarray(value)
  if value.size != 1:
    return value.tolist()
  value = value.item()
  return None if isinstance(value, float) and not math.isfinite(value) else value


def format_duration(seconds):
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def is_curve(key):
  """Whether a number in metrics.jsonl is a curve (not the step or a data fingerprint)."""
  return key != 'step' and not key.endswith('data_fingerprint')


class Throughput:
  """Steps per second of wall-clock time between two reads, less the time spent ``paused``."""

  def __init__(self, step):
    self._step, self._start, self._paused = step, time.perf_counter(), 0.0

  @contextlib.contextmanager
  def paused(self):
    start = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - start

  def steps_per_sec(self, step):
    """Since the last read (or the start), then starts counting anew from ``step``."""
    now = time.perf_counter()
    elapsed = max(now - self._start - self._paused, 1e-9)
    rate = (step - self._step) / elapsed
    self._step, self._start, self._paused = step, now, 0.0
    return rate


@jax.jit
def _window_sums(window, metrics):
  """``window`` ({key: clu Average}) merged with one step's ``metrics``; only finite values
  count (an IoU bin with no pair in a step is NaN in that step only)."""
  def average(value):
    value = jnp.asarray(value, jnp.float32).reshape(-1)
    return clu_metrics.Average.from_model_output(value, mask=jnp.isfinite(value))
  step = {k: average(v) for k, v in metrics.items()}
  if window is None:
    return step
  return {k: window[k].merge(step[k]) for k in step}


class WindowMean:
  """A step's metrics accumulated on the device every step (one small async op) and read as
  their means over the steps since the last read: a logged loss is the window's, not one
  step's."""

  def __init__(self):
    self._window = None

  def add(self, metrics):
    self._window = _window_sums(self._window, metrics)

  def read(self):
    """{key: mean over the window} (NaN where a value was never finite); starts a new window."""
    window, self._window = jax.device_get(self._window), None
    return {k: np.where(a.count > 0, a.total / np.maximum(a.count, 1), np.nan)
            for k, a in window.items()}



def _tensorboardx():
  """The tensorboardX module, imported without torch: where torch is installed, tensorboardX
  imports it only to recognise torch tensors, which costs each training process 1-1.6 s of
  start-up (measured on 2 cores)."""
  if 'torch' in sys.modules or 'tensorboardX' in sys.modules:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  sys.modules['torch'] = None               # `import torch` raises ImportError meanwhile
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules['torch']
  return tensorboardX

class MetricsLogger:
  """Appends one JSON object per log step (and per evaluation), mirrors every number to
  TensorBoard (``tensorboard --logdir WORKDIR/tensorboard``) and prints
  ``step/total | loss | img/s | ETA``.

  During training it logs every ``every`` steps and on the last one the means of the steps'
  metrics since the previous log (``add`` each step's), with the throughput of
  ``images_per_step`` over the same window (time in ``paused()`` not counted).
  A training run passes ``start_step`` (the restored step, or 0): the records past it that an
  interrupted run wrote are dropped first, from metrics.jsonl and TensorBoard, so every step is
  logged once, in order. Without it (``evaluate`` appending a probe) nothing is dropped.
  A bucket object cannot be appended to: on a ``gs://`` workdir each record rewrites the whole
  file (one upload, small next to a checkpoint), so a killed run loses no logged record.
  """

  def __init__(self, workdir, total_steps, print_fn=None, every=0, images_per_step=0,
               start_step=None, mirror=None):
    self.path = storage.path(workdir) / 'metrics.jsonl'
    self.total_steps = total_steps
    self.every = every
    self.images_per_step = images_per_step
    self.throughput = Throughput(start_step or 0)
    self.window = WindowMean()
    self.print_fn = print_fn or (lambda line: print(line, flush=True))
    self.is_writer = jax.process_index() == 0
    self._tensorboard = None
    if self.is_writer:
      purge_step = None
      if start_step is not None:
        truncate_metrics(workdir, start_step)
        purge_step = start_step + 1
      self._tensorboard = _tensorboardx().SummaryWriter(str(storage.path(workdir) / 'tensorboard'),
                                        purge_step=purge_step)
    self.mirror = mirror          # e.g. a wandb_mirror.Mirror: log, image, close
    self._text = None             # a bucket's file content, rewritten on each record
    if self.is_writer and storage.is_remote(self.path):
      self._text = self.path.read_text() if self.path.exists() else ''

  def _append(self, record, prefix):
    line = json.dumps(record) + '\n'
    if self._text is None:
      with self.path.open('a') as f:
        f.write(line)
    else:
      self._text += line
      storage.write_atomically(self.path, self._text)
    scalars = {prefix + key: value for key, value in record.items()
               if is_curve(key) and isinstance(value, (int, float))
               and not isinstance(value, bool)}
    for tag, value in scalars.items():
      self._tensorboard.add_scalar(tag, value, record['step'])
    self._tensorboard.flush()
    if self.mirror is not None:
      self.mirror.log(scalars, record['step'])

  def due(self, step, final):
    """Whether to log ``step`` (``final``: the run ends after it)."""
    return final or step % self.every == 0

  def paused(self):
    """A context whose time is not training time (evaluations, hooks)."""
    return self.throughput.paused()

  def add(self, metrics):
    """One train step's (device) ``metrics``, into the window the next log averages."""
    self.window.add(metrics)

  def write_step(self, step, host_metrics):
    """Logs the window's mean metrics with ``host_metrics`` and the throughput."""
    steps_per_sec = self.throughput.steps_per_sec(step)
    metrics = dict(self.window.read(), **host_metrics,
                   images_per_sec=self.images_per_step * steps_per_sec)
    return self.write(step, metrics, steps_per_sec)

  def write(self, step, metrics, steps_per_sec):
    record = {'step': int(step), **{k: _to_python(v) for k, v in metrics.items()}}
    if not self.is_writer:
      return record
    self._append(record, 'train/')
    eta = (self.total_steps - step) / steps_per_sec if steps_per_sec > 0 else float('inf')
    self.print_fn(
        f'step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%) '
        f'loss {record["loss"]:.4f} | lr {record["learning_rate"]:.2e} | '
        f'{record["images_per_sec"]:.0f} img/s | {steps_per_sec:.2f} steps/s | '
        f'ETA {format_duration(eta)}')
    return record

  def write_evaluation(self, step, results):
    """``results``: {'<task>_<probe>': score}; stored as 'eval/<task>_<probe>'."""
    record = {'step': int(step), **{f'eval/{k}': _to_python(v) for k, v in results.items()}}
    if self.is_writer:
      self._append(record, '')
    return record

  def write_config(self, config, metric_tags):
    """The run's config in TensorBoard: as text (the whole JSON) and as hparams (its scalar
    leaves by dotted key, tuples as text), compared on ``metric_tags`` in the HPARAMS tab."""
    if not self.is_writer:
      return
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    self._tensorboard.add_text('config', '```\n' + config.to_json(indent=2) + '\n```', 0)
    for protobuf in summary.hparams(flat_hparams(config.to_dict()),
                                    {tag: 0.0 for tag in metric_tags}):
      self._tensorboard.file_writer.add_summary(protobuf)
    self._tensorboard.flush()

  def write_image(self, tag, image, step):
    """An (H, W, 3) uint8 image at ``step``."""
    if self.is_writer:
      self._tensorboard.add_image(tag, np.asarray(image), step, dataformats='HWC')
      self._tensorboard.flush()
      if self.mirror is not None:
        self.mirror.image(tag, np.asarray(image), step)

  def close(self):
    if self._tensorboard is not None:
      self._tensorboard.close()
    if self.mirror is not None:
      self.mirror.close()


def flat_hparams(tree, prefix=''):
  """{dotted key: bool, int, float or str} of a nested dict (lists and None as text)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flat_hparams(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value if isinstance(value, (bool, int, float, str)) else str(value)
  return flat


def view_grid(images, max_images=8, gap=2):
  """(N, V, S, S, 3) uint8 views -> one image: the first ``max_images`` images in rows, each
  row its V views, ``gap`` white pixels between them."""
  images = np.asarray(images)[:max_images]
  n, v, s = images.shape[:3]
  grid = np.full((n * (s + gap) - gap, v * (s + gap) - gap, 3), 255, np.uint8)
  for i in range(n):
    for j in range(v):
      grid[i * (s + gap):i * (s + gap) + s, j * (s + gap):j * (s + gap) + s] = images[i, j]
  return grid


def truncate_metrics(workdir, step):
  """Keeps the records of metrics.jsonl up to ``step`` (rewritten atomically). A torn last line
  (a kill mid-write) is dropped too."""
  path = storage.path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return
  lines = [line for line in path.read_text().splitlines(keepends=True) if line.strip()]
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if record.get('step', 0) <= step:
      kept.append(line if line.endswith('\n') else line + '\n')
  if len(kept) < len(lines):
    storage.write_atomically(path, ''.join(kept))


def read_metrics(workdir):
  text = (storage.path(workdir) / 'metrics.jsonl').read_text()
  return [json.loads(line) for line in text.splitlines() if line.strip()]
