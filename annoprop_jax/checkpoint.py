"""Orbax checkpoints of the train state together with each data stream's grain iterator.

Layout: ``WORKDIR/checkpoints/<step>/{state, run, checksums, data_<stream>}``. ``state`` is a
plain nested dict of arrays (``state.to_pytree``), so it restores with or without a target;
``run`` is what the resume depends on (``configuration.resume_identity``), which the loop
compares; ``checksums`` holds a checksum of every array and of each iterator state, verified
after a restore (a bit flipped on disk that still decodes counts as damage).

A restore tells its failures apart:
- a mismatch (the saved tree or shapes are not this model's; a data iterator saved with another
  worker or process count): one error that says so; nothing is skipped or moved;
- a transient read error (connection reset, timeout, an unavailable store): retried, then
  raised, and out of memory is raised at once: neither marks a step damaged;
- damage (any other error while reading a step): the step moves to
  ``WORKDIR/checkpoints_damaged/`` with a warning (never reused, not counted among the kept
  steps, invisible to evaluate and export) and the next older step is tried.
Every process restores the same step: a step counts only if all of them read it. Temporary
folders of interrupted saves are removed when the checkpointer opens: local ones by their
``.orbax-checkpoint-tmp`` name; on a bucket, where Orbax writes a step in place and marks it
complete with ``commit_success.txt``, step folders without that file.
"""
import contextlib
import json
import time
import zlib

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from annoprop_jax import errors
from annoprop_jax import storage

DAMAGED = 'checkpoints_damaged'
TMP_MARK = '.orbax-checkpoint-tmp'   # in the name of a step folder still being written
COMMIT_FILE = 'commit_success.txt'   # in a step folder Orbax completed in place (a bucket)
RETRIES = 3                    # reads of a step after a transient error, 1 s, 2 s, 4 s apart
_TRANSIENT_CODES = ('UNAVAILABLE', 'DEADLINE_EXCEEDED', 'Connection reset', 'timed out')


class NoReadableCheckpointError(RuntimeError):
  pass


class CheckpointMismatchError(RuntimeError):
  """A readable checkpoint of another model, or of another data-reading layout."""


class CheckpointSaveError(RuntimeError):
  """An (asynchronous) save failed: the disk is full, the store is gone, ..."""


def _chain(error):
  while error is not None:
    yield error
    error = error.__cause__ or error.__context__


def failure_kind(error):
  """'mismatch', 'resources', 'transient' or 'damage' for an error raised by a restore."""
  chain = list(_chain(error))
  text = ' '.join(str(e) for e in chain)
  if any(isinstance(e, (errors.ConfigError, CheckpointMismatchError)) for e in chain):
    return 'mismatch'
  if any(isinstance(e, MemoryError) for e in chain) or 'RESOURCE_EXHAUSTED' in text:
    return 'resources'
  if (any(isinstance(e, (ConnectionError, TimeoutError)) for e in chain)
      or any(code in text for code in _TRANSIENT_CODES)):
    return 'transient'
  return 'damage'


def _first_line(error):
  """The error's type and first line, its middle cut when long (the cause is often last)."""
  line = (str(error).splitlines() or [''])[0]
  if len(line) > 240:
    line = f'{line[:140]} ... {line[-100:]}'
  return f'{type(error).__name__}: {line}'


def _all_processes(value, reduce):
  """``reduce`` (np.min / np.max) of an int over all processes (itself on one process)."""
  if jax.process_count() == 1:
    return value
  return int(reduce(multihost_utils.process_allgather(np.int32(value))))


class Checkpointer:
  """Async saves every ``every`` steps, keeps the last ``keep`` (plus every ``keep_every``-th
  step); restores the newest readable step. ``run``: the json saved beside each state."""

  def __init__(self, workdir, every, keep, iterators, keep_every=0, log=print, run=None):
    self.every = every
    self.log = log
    self.run = run
    self.directory = storage.path(workdir) / 'checkpoints'
    self.damaged_directory = storage.path(workdir) / DAMAGED
    self.iterators = dict(iterators)
    self._remove_interrupted_saves()
    keep_policy = checkpoint_managers.LatestN(keep)
    if keep_every:
      keep_policy = checkpoint_managers.AnyPreservationPolicy(
          [keep_policy, checkpoint_managers.EveryNSteps(keep_every)])
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            save_decision_policy=checkpoint_managers.FixedIntervalPolicy(every),
            preservation_policy=keep_policy, enable_async_checkpointing=True))

  def _remove_interrupted_saves(self):
    """Process 0 deletes the temporary folders that killed saves left (synchronously: Orbax's
    own cleanup runs in the background and may not be done when the run saves again)."""
    if jax.process_index() != 0 or not self.directory.is_dir():
      return
    remote = storage.is_remote(self.directory)
    for folder in self.directory.iterdir():
      if TMP_MARK in folder.name or (remote and folder.name.isdigit()
                                     and not (folder / COMMIT_FILE).exists()):
        self.log(f'removing {folder}, left by an interrupted save')
        folder.rmtree(missing_ok=True)

  def _items(self, state_tree, restore=False):
    items = {'state': (ocp.args.StandardRestore(state_tree) if restore
                       else ocp.args.StandardSave(state_tree))}
    if not restore:
      items['checksums'] = ocp.args.JsonSave(self._checksums(state_tree))
      if self.run is not None:
        items['run'] = ocp.args.JsonSave(self.run)
    for name, it in self.iterators.items():
      items[f'data_{name}'] = (grain.checkpoint.CheckpointRestore(it) if restore
                               else grain.checkpoint.CheckpointSave(it))
    return ocp.args.Composite(**items)

  def _checksums(self, state_tree):
    """{'state': {leaf: checksum}, 'data_<stream>': checksum of its iterator state}."""
    sums = {'state': {k: int(v) for k, v in jax.device_get(array_checksums(state_tree)).items()}}
    # Every process has its own iterator states; the json is written by process 0 only, so it
    # holds them all, in process order.
    names = sorted(self.iterators)
    local = self._iterator_checksums()
    if jax.process_count() > 1:
      gathered = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, len(names))
    else:
      gathered = local[None]
    for i, name in enumerate(names):
      sums[f'data_{name}'] = [int(c) for c in gathered[:, i]]
    return sums

  def _iterator_checksums(self):
    """This process's CRC32 of each iterator's state (json), in stream-name order."""
    return np.array([zlib.crc32(json.dumps(self.iterators[n].get_state(), sort_keys=True,
                                           default=str).encode())
                     for n in sorted(self.iterators)], np.uint32)

  def _verify(self, step, state_tree):
    """Damage (RuntimeError) unless the restored state and iterators match the checksums saved
    with them: a flipped bit that still decodes is caught here."""
    if not (self.directory / str(step) / 'checksums').is_dir():
      return                                       # saved before checksums existed
    saved = self.manager.restore(step, args=ocp.args.Composite(
        checksums=ocp.args.JsonRestore()))['checksums']
    arrays = jax.device_get(array_checksums(state_tree))
    bad = sorted(f'state{k}' for k, v in arrays.items() if saved['state'].get(k) != int(v))
    index = jax.process_index()        # no collective here: only this process's iterators
    for name, crc in zip(sorted(self.iterators), self._iterator_checksums()):
      per_process = saved.get(f'data_{name}')
      per_process = per_process if isinstance(per_process, list) else [per_process]
      if index >= len(per_process) or per_process[index] != int(crc):
        bad.append(f'data_{name}')
    if bad:
      raise RuntimeError(f'checksum mismatch in {", ".join(bad[:3])}: a file changed after '
                         'it was written')

  def due(self, step, final):
    """Whether to save ``step``: on the interval, and always when the run ends after it."""
    return final or step % self.every == 0

  def save(self, step, state_tree):
    """Saves ``step`` (asynchronously) unless it is saved already; CheckpointSaveError if this
    save cannot start or an earlier one has failed since."""
    with self._save_errors():
      self.manager.check_for_errors()
      if step in self.manager.all_steps():
        return False
      return self.manager.save(step, args=self._items(state_tree), force=True)

  @contextlib.contextmanager
  def _save_errors(self):
    """Whatever the store raised while saving, as one CheckpointSaveError line."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointSaveError(f'saving a checkpoint in {self.directory} failed '
                                f'({_first_line(e)}); the previous checkpoints are kept') from e

  def latest_step(self):
    return self.manager.latest_step()

  def restore(self, abstract_state_tree, step=None):
    """(step, state tree) of ``step`` (default: the latest), into the shardings of
    ``abstract_state_tree``; restores the iterators too."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=self._items(abstract_state_tree, restore=True))
    return step, restored['state']

  def saved_run(self, step):
    """The run json saved with ``step``, or None for a checkpoint without one (older ones)."""
    if not (self.directory / str(step) / 'run').is_dir():
      return None
    return self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))['run']

  def _check_layout(self, step):
    """CheckpointMismatchError if step's iterator states were saved by another number of
    processes (grain keeps one file per process and would only say a file is missing)."""
    count = jax.process_count()
    for name in self.iterators:
      folder = self.directory / str(step) / f'data_{name}'
      files = [f.name for f in folder.iterdir()] if folder.is_dir() else []
      saved = {f.rsplit('-of-', 1)[1].split('.')[0] for f in files if '-of-' in f}
      if saved and saved != {str(count)}:
        raise CheckpointMismatchError(
            f'{folder} was saved by {", ".join(sorted(saved))} JAX processes and this run has '
            f'{count}; resume with the same process count, or start a new run from these '
            f'weights with --config.init_from')

  def _check_shapes(self, step, abstract_state_tree):
    """CheckpointMismatchError unless step's saved state has this tree's keys and shapes."""
    detail = tree_differences(abstract_state_tree, _state_metadata(self.directory, step))
    if detail:
      raise CheckpointMismatchError(
          f'checkpoint {self.directory}/{step} holds another model ({detail}); resume with the '
          f'config it was trained with, or start a new workdir (--config.init_from to reuse '
          f'weights of the same shapes)')

  def _read(self, abstract_state_tree, step, check_run):
    """(outcome, (step, state tree, run json) or error): outcome 0 read, 1 damaged, 2 must stop
    (mismatch, no memory, a transient error that persisted)."""
    for attempt in range(RETRIES + 1):
      try:
        self._check_layout(step)
        run = self.saved_run(step)
        if check_run is not None:
          check_run(step, run)
        try:
          self._check_shapes(step, abstract_state_tree)
        except CheckpointMismatchError:
          raise
        except Exception as e:  # pylint: disable=broad-except  # unreadable metadata: damage
          raise RuntimeError(f'its state metadata does not read ({_first_line(e)})') from e
        step, tree = self.restore(abstract_state_tree, step)
        self._verify(step, tree)
        return 0, (step, tree, run)
      except Exception as e:  # pylint: disable=broad-except  # classified below
        kind = failure_kind(e)
        if kind == 'transient' and attempt < RETRIES:
          self.log(f'WARNING: reading {self.directory}/{step} failed ({_first_line(e)}); '
                   f'retrying in {2 ** attempt} s')
          time.sleep(2 ** attempt)
          continue
        return (1 if kind == 'damage' else 2), e

  def restore_newest_readable(self, abstract_state_tree, check_run=None):
    """Restores the newest step every process can read, moving damaged ones aside loudly.

    ``check_run(step, saved run json or None)`` runs before a step's arrays are read; an error
    it raises (a ConfigError: the run cannot resume this step) stops the restore.
    Returns (step, state tree, saved run json or None), or None if there is no checkpoint;
    raises the error itself for a mismatch, no memory or a persistent transient error, and
    NoReadableCheckpointError if every step is damaged (never silently trains from scratch).
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    damaged = []
    for step in steps:
      outcome, result = self._read(abstract_state_tree, step, check_run)
      worst = _all_processes(outcome, np.max)
      if worst == 0:
        # Only now, with a step to resume from, are the damaged ones moved aside: if none
        # reads, they all stay, and every later start refuses as this one does.
        for bad in damaged:
          self._quarantine(bad)
        if damaged:
          self.log(f'WARNING: moved the damaged checkpoint steps {damaged} to '
                   f'{self.damaged_directory}; resuming from step {step}')
        return result
      if worst == 2:
        if outcome == 2:
          raise result
        raise CheckpointMismatchError(f'another process could not restore '
                                      f'{self.directory}/{step}; see its log')
      error = _first_line(result) if outcome else 'another process could not read it'
      self.log(f'WARNING: checkpoint {self.directory}/{step} is unreadable ({error}); '
               f'falling back to an older one')
      damaged.append(step)
    raise NoReadableCheckpointError(
        f'no readable checkpoint in {self.directory} (steps {damaged}, all damaged; left '
        f'where they are); refusing to train from scratch over them')

  def _quarantine(self, step):
    """Process 0 moves ``step`` to the damaged folder; every process then forgets it."""
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoint read {step}')
    if jax.process_index() == 0:
      self.damaged_directory.mkdir(parents=True, exist_ok=True)
      target, n = self.damaged_directory / str(step), 1
      while target.exists():
        target, n = self.damaged_directory / f'{step}.{n}', n + 1
      (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoint moved {step}')
    self.manager.reload()

  def close(self):
    """Waits for the last save; CheckpointSaveError if it (or an earlier one) failed."""
    with self._save_errors():
      try:
        self.manager.wait_until_finished()
        self.manager.check_for_errors()
      finally:
        self.manager.close()


@jax.jit
def array_checksums(tree):
  """{leaf path: uint32} of the leaves' raw bits b_i: sum of b_i * (2i + 1) mod 2**32, which
  any single flipped bit changes (the weights are odd)."""
  def one(x):
    if x.dtype == jnp.bool_:
      bits = x.astype(jnp.uint32)
    else:
      unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[jnp.dtype(x.dtype).itemsize]
      bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    bits = bits.reshape(-1)
    return jnp.sum(bits * (jnp.arange(bits.size, dtype=jnp.uint32) * 2 + 1), dtype=jnp.uint32)
  return {jax.tree_util.keystr(path): one(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _shapes(tree):
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def tree_differences(want, got):
  """'' if the trees have the same keys and shapes, else what differs (the first few)."""
  want, got = _shapes(want), _shapes(got)
  if want == got:
    return ''
  missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
  differ = [f'{k} {got[k]} (this run: {want[k]})' for k in sorted(want.keys() & got.keys())
            if want[k] != got[k]]
  return '; '.join(filter(None, (
      missing and f'missing {", ".join(missing[:3])}', extra and f'extra {", ".join(extra[:3])}',
      differ and f'shapes {", ".join(differ[:3])}')))


def _state_metadata(directory, step):
  """The saved state tree's array metadata (shapes, dtypes) of ``step``, arrays unread."""
  with ocp.CheckpointManager(
      directory, item_handlers={'state': ocp.StandardCheckpointHandler()}) as manager:
    metadata = manager.item_metadata(step)['state']
  if not metadata:
    raise FileNotFoundError(f'no state metadata in {directory}/{step}')
  return metadata


def abstract_tree(tree, shardings):
  """ShapeDtypeStructs with shardings: the restore target."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def load_params(path, step=None):
  """(step, params, target params) of the latest (or the given) checkpoint under ``path``, a
  workdir or its checkpoints folder (for init_from, evaluate and export)."""
  step, state = load_state(path, step)
  return step, state['params'], state['target_params']


def load_state(path, step=None):
  """(step, the train state as a nested dict) of a checkpoint, as ``load_params`` finds it."""
  root = storage.path(path)
  directory = root / 'checkpoints' if (root / 'checkpoints').is_dir() else root
  with ocp.CheckpointManager(
      directory, item_handlers={'state': ocp.StandardCheckpointHandler()}) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f'{str(path)!r}: no checkpoint found in {directory}')
    step = max(steps) if step is None else step
    if step not in steps:
      raise FileNotFoundError(f'{str(path)!r}: no checkpoint of step {step}; there are {sorted(steps)}')
    # Onto this process's first device, whatever mesh wrote it; the data-iterator items are not
    # read (orbax warns about each: quiet for this call).
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            manager.item_metadata(step)['state'])
      tree = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
    finally:
      logging.set_verbosity(verbosity)
  return step, tree['state']


def saved_worker_counts(workdir):
  """{stream: grain worker processes} its data iterators were saved with, in the newest step
  under ``WORKDIR/checkpoints`` ({} when there is none, or it does not say): the counts a resume
  must read with (``pipeline.reading_plan``)."""
  directory = storage.path(workdir) / 'checkpoints'
  steps = sorted((int(f.name) for f in directory.iterdir() if f.name.isdigit()),
                 reverse=True) if directory.is_dir() else []
  counts = {}
  for folder in (directory / str(steps[0])).iterdir() if steps else ():
    files = sorted(folder.glob(f'process_{jax.process_index()}-of-*.json'))
    if folder.name.startswith('data_') and files:
      try:
        counts[folder.name[len('data_'):]] = int(json.loads(files[0].read_text())['num_workers'])
      except (ValueError, KeyError, TypeError):
        pass          # unreadable: the restore itself reports it
  return counts
