"""Orbax checkpoints of the train state together with each data stream's grain iterator.

Layout: ``WORKDIR/checkpoints/<step>/{state, data_<stream>}``. ``state`` is a plain nested dict
of arrays (``state.to_pytree``), so it restores with or without a target.
"""
import os

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp


class NoReadableCheckpointError(RuntimeError):
  pass


class Checkpointer:
  """Async saves every ``every`` steps, keeps the last ``keep``; restores the latest."""

  def __init__(self, workdir, every, keep, iterators, keep_every=0, log=print):
    self.every = every
    self.log = log
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.iterators = dict(iterators)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(save_interval_steps=every, max_to_keep=keep,
                                             keep_period=keep_every or None,
                                             enable_async_checkpointing=True))

  def _items(self, state_tree=None, restore=False):
    items = {}
    if state_tree is not None:
      items['state'] = (ocp.args.StandardRestore(state_tree) if restore
                        else ocp.args.StandardSave(state_tree))
    for name, it in self.iterators.items():
      items[f'data_{name}'] = (grain.checkpoint.CheckpointRestore(it) if restore
                               else grain.checkpoint.CheckpointSave(it))
    return ocp.args.Composite(**items)

  def due(self, step, final):
    """Whether to save ``step``: on the interval, and always when the run ends after it."""
    return final or step % self.every == 0

  def save(self, step, state_tree):
    """Saves ``step`` (asynchronously) unless it is saved already."""
    if step in self.manager.all_steps():
      return False
    return self.manager.save(step, args=self._items(state_tree), force=True)

  def latest_step(self):
    return self.manager.latest_step()

  def restore(self, abstract_state_tree, step=None):
    """Restores state (into the shardings of ``abstract_state_tree``) and the iterators."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=self._items(abstract_state_tree, restore=True))
    return step, restored['state']

  def restore_newest_readable(self, abstract_state_tree):
    """Restores the newest checkpoint that reads back, warning loudly about each one skipped.

    Returns (step, state tree), or None if there is no checkpoint; raises if checkpoints exist
    but none is readable (never silently trains from scratch).
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    errors = []
    for step in steps:
      try:
        return self.restore(abstract_state_tree, step)
      except Exception as e:  # pylint: disable=broad-except  # any damage: try an older one
        errors.append(f'step {step}: {type(e).__name__}: {str(e).splitlines()[0][:200]}')
        self.log(f'WARNING: checkpoint {self.directory}/{step} is unreadable ({errors[-1]}); '
                 f'falling back to an older one')
    raise NoReadableCheckpointError(f'no readable checkpoint in {self.directory}; refusing to train from '
                       f'scratch over them. Errors: {"; ".join(errors)}')

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


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
  directory = os.path.join(path, 'checkpoints') if os.path.isdir(
      os.path.join(path, 'checkpoints')) else path
  with ocp.CheckpointManager(
      directory, item_handlers={'state': ocp.StandardCheckpointHandler()}) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f'{path!r}: no checkpoint found in {directory}')
    step = max(steps) if step is None else step
    if step not in steps:
      raise FileNotFoundError(f'{path!r}: no checkpoint of step {step}; there are {sorted(steps)}')
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
