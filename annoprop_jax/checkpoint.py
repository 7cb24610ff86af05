"""Orbax checkpoints of the train state together with each data stream's grain iterator.

Layout: ``WORKDIR/checkpoints/<step>/{state, run, checksums, data_<stream>}``. ``state`` is a
plain nested dict of arrays (``state.to_pytree``), so it restores with or without a target;
``run`` is the checkpoint format and what the resume depends on (``configuration.
resume_identity``), which the loop compares; ``checksums`` holds a checksum of every array and
of each iterator state (``checkpoint_integrity``). The ``Checkpointer`` saves (asynchronously,
with a keep policy) and restores one step; ``checkpoint_recovery`` finds the newest step that
every process can read.
"""
import contextlib
import json

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from annoprop_jax import checkpoint_integrity as integrity
from annoprop_jax import storage


class CheckpointSaveError(RuntimeError):
  """An (asynchronous) save failed: the disk is full, the store is gone, ..."""


def first_line(error):
  """The error's type and first line, its middle cut when long (the cause is often last)."""
  line = (str(error).splitlines() or [''])[0]
  if len(line) > 240:
    line = f'{line[:140]} ... {line[-100:]}'
  return f'{type(error).__name__}: {line}'


class Checkpointer:
  """Async saves every ``every`` steps, keeps the last ``keep`` (plus every ``keep_every``-th
  step); restores one step. ``run``: the json saved beside each state, with the format."""

  def __init__(self, workdir, every, keep, iterators, keep_every=0, log=print, run=None):
    self.every = every
    self.log = log
    self.run = {'format_version': integrity.FORMAT_VERSION, **(run or {})}
    self.directory = storage.path(workdir) / 'checkpoints'
    self.iterators = dict(iterators)
    keep_policy = checkpoint_managers.LatestN(keep)
    if keep_every:
      keep_policy = checkpoint_managers.AnyPreservationPolicy(
          [keep_policy, checkpoint_managers.EveryNSteps(keep_every)])
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            save_decision_policy=checkpoint_managers.FixedIntervalPolicy(every),
            preservation_policy=keep_policy, enable_async_checkpointing=True))

  def _items(self, state_tree, restore=False):
    if restore:
      items = {'state': ocp.args.StandardRestore(state_tree)}
    else:
      items = {'state': ocp.args.StandardSave(state_tree),
               'checksums': ocp.args.JsonSave(integrity.checksums(state_tree, self.iterators)),
               'run': ocp.args.JsonSave(self.run)}
    for name, it in self.iterators.items():
      items[f'data_{name}'] = (grain.checkpoint.CheckpointRestore(it) if restore
                               else grain.checkpoint.CheckpointSave(it))
    return ocp.args.Composite(**items)

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
                                f'({first_line(e)}); the previous checkpoints are kept') from e

  def latest_step(self):
    return self.manager.latest_step()

  def steps(self):
    """The saved steps, newest first."""
    return sorted(self.manager.all_steps(), reverse=True)

  def restore(self, abstract_state_tree, step):
    """The state tree of ``step``, into the shardings of ``abstract_state_tree``, verified
    against its checksums; restores the iterators too."""
    tree = self.manager.restore(step, args=self._items(abstract_state_tree, restore=True))
    integrity.verify(self._json(step, 'checksums'), tree['state'], self.iterators)
    return tree['state']

  def saved_run(self, step):
    """The run json saved with ``step`` (None if it has none: an older format)."""
    if not (self.directory / str(step) / 'run').is_dir():
      return None
    return self._json(step, 'run')

  def _json(self, step, item):
    return self.manager.restore(step, args=ocp.args.Composite(
        **{item: ocp.args.JsonRestore()}))[item]

  def close(self):
    """Waits for the last save; CheckpointSaveError if it (or an earlier one) failed."""
    with self._save_errors():
      try:
        self.manager.wait_until_finished()
        self.manager.check_for_errors()
      finally:
        self.manager.close()


def abstract_tree(tree, shardings):
  """ShapeDtypeStructs with shardings: the restore target."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def load_params(path, step=None):
  """(step, params, target params) of the latest (or the given) checkpoint under ``path``, a
  workdir or its checkpoints folder (for init_from, evaluate and export; any format: the
  parameters are stored alike in all)."""
  step, state, _ = _load(path, step)
  return step, state['params'], state['target_params']


def load_state(path, step=None):
  """(step, the train state as a nested dict) of a checkpoint, as ``load_params`` finds it; a
  CheckpointMismatchError for an older format (its state has other parts)."""
  step, state, run = _load(path, step)
  integrity.check_format(f'{str(path)!r} step {step}', run)
  return step, state


def _load(path, step):
  root = storage.path(path)
  directory = root / 'checkpoints' if (root / 'checkpoints').is_dir() else root
  with ocp.CheckpointManager(
      directory, item_handlers={'state': ocp.StandardCheckpointHandler(),
                                'run': ocp.JsonCheckpointHandler()}) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f'{str(path)!r}: no checkpoint found in {directory}')
    step = max(steps) if step is None else step
    if step not in steps:
      raise FileNotFoundError(f'{str(path)!r}: no checkpoint of step {step}; there are '
                              f'{sorted(steps)}')
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
      run = (manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))['run']
             if (directory / str(step) / 'run').is_dir() else None)
    finally:
      logging.set_verbosity(verbosity)
  return step, tree['state'], run


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
