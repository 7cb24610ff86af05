"""Resuming after a crash: what interrupted saves left is removed, and the newest step that
every process can read is restored, its failures told apart.

A failure to read a step (``classify``) is
- a mismatch (the saved tree, shapes or format are not this run's; a data iterator saved with
  another worker or process count): one error that says so; nothing is skipped or moved;
- out of memory, raised at once, and a transient read error (connection reset, timeout, an
  unavailable store), retried, then raised: neither marks a step damaged;
- damage (any other error while reading a step): the step moves to
  ``WORKDIR/checkpoints_damaged/`` with a warning (never reused, not counted among the kept
  steps, invisible to evaluate and export) and the next older step is tried.
Every process restores the same step: a step counts only if all of them read it. Temporary
folders of interrupted saves are removed before a run opens its checkpoints: local ones by
their ``.orbax-checkpoint-tmp`` name; on a bucket, where Orbax writes a step in place and marks
it complete with ``commit_success.txt``, step folders without that file.
"""
import enum
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from annoprop_jax import checkpoint
from annoprop_jax import checkpoint_integrity as integrity
from annoprop_jax import errors
from annoprop_jax import storage

DAMAGED = 'checkpoints_damaged'
TMP_MARK = '.orbax-checkpoint-tmp'   # in the name of a step folder still being written
COMMIT_FILE = 'commit_success.txt'   # in a step folder Orbax completed in place (a bucket)
RETRIES = 3                    # reads of a step after a transient error, 1 s, 2 s, 4 s apart
_TRANSIENT_CODES = ('UNAVAILABLE', 'DEADLINE_EXCEEDED', 'Connection reset', 'timed out')


class NoReadableCheckpointError(RuntimeError):
  pass


class Failure(enum.Enum):
  """Why a step did not read."""
  MISMATCH = 'mismatch'        # not this run's checkpoint: stop, say so
  RESOURCES = 'resources'      # out of memory: stop
  TRANSIENT = 'transient'      # the store did not answer: retry, then stop
  DAMAGE = 'damage'            # the step is broken: move it aside, try the older one


class Outcome(enum.IntEnum):
  """A process's result for one step; the processes act on the worst (the largest)."""
  READ = 0
  DAMAGED = 1
  STOP = 2


def _chain(error):
  while error is not None:
    yield error
    error = error.__cause__ or error.__context__


def classify(error):
  """The Failure of an error raised while reading a step (its whole cause chain counts)."""
  chain = list(_chain(error))
  text = ' '.join(str(e) for e in chain)
  if any(isinstance(e, (errors.ConfigError, integrity.CheckpointMismatchError)) for e in chain):
    return Failure.MISMATCH
  if any(isinstance(e, MemoryError) for e in chain) or 'RESOURCE_EXHAUSTED' in text:
    return Failure.RESOURCES
  if (any(isinstance(e, (ConnectionError, TimeoutError)) for e in chain)
      or any(code in text for code in _TRANSIENT_CODES)):
    return Failure.TRANSIENT
  return Failure.DAMAGE


def remove_interrupted_saves(workdir, log=print):
  """Process 0 deletes the temporary folders that killed saves left under
  ``WORKDIR/checkpoints`` (synchronously: Orbax's own cleanup runs in the background and may
  not be done when the run saves again)."""
  directory = storage.path(workdir) / 'checkpoints'
  if jax.process_index() != 0 or not directory.is_dir():
    return
  remote = storage.is_remote(directory)
  for folder in directory.iterdir():
    if TMP_MARK in folder.name or (remote and folder.name.isdigit()
                                   and not (folder / COMMIT_FILE).exists()):
      log(f'removing {folder}, left by an interrupted save')
      folder.rmtree(missing_ok=True)


def _read_step(checkpointer, abstract_state_tree, step, check_run):
  """(step, state tree, run json) of ``step``, checked: format, process layout, the run
  (``check_run``), shapes, then the arrays and their checksums."""
  step_directory = checkpointer.directory / str(step)
  run = checkpointer.saved_run(step)
  integrity.check_format(step_directory, run)
  integrity.check_layout(step_directory, checkpointer.iterators)
  if check_run is not None:
    check_run(step, run)
  try:
    integrity.check_shapes(checkpointer.directory, step, abstract_state_tree)
  except integrity.CheckpointMismatchError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # unreadable metadata: damage
    raise RuntimeError(f'its state metadata does not read ({checkpoint.first_line(e)})') from e
  return step, checkpointer.restore(abstract_state_tree, step), run


def _attempt(checkpointer, abstract_state_tree, step, check_run):
  """(Outcome, (step, state tree, run json) or the error); transient errors retried."""
  for attempt in range(RETRIES + 1):
    try:
      return Outcome.READ, _read_step(checkpointer, abstract_state_tree, step, check_run)
    except Exception as e:  # pylint: disable=broad-except  # classified below
      failure = classify(e)
      if failure is Failure.TRANSIENT and attempt < RETRIES:
        checkpointer.log(f'WARNING: reading {checkpointer.directory}/{step} failed '
                         f'({checkpoint.first_line(e)}); retrying in {2 ** attempt} s')
        time.sleep(2 ** attempt)
        continue
      return (Outcome.DAMAGED if failure is Failure.DAMAGE else Outcome.STOP), e


def _worst(outcome):
  """The worst outcome of any process (itself on one process)."""
  if jax.process_count() == 1:
    return outcome
  return Outcome(int(np.max(multihost_utils.process_allgather(np.int32(outcome)))))


def restore_newest_readable(checkpointer, abstract_state_tree, check_run=None):
  """Restores the newest step every process can read, moving damaged ones aside loudly.

  ``check_run(step, saved run json)`` runs before a step's arrays are read; an error it raises
  (a ConfigError: the run cannot resume this step) stops the restore. Returns (step, state
  tree, saved run json), or None if there is no checkpoint; raises the error itself for a
  mismatch, no memory or a persistent transient error, and NoReadableCheckpointError if every
  step is damaged (never silently trains from scratch).
  """
  damaged, log = [], checkpointer.log
  for step in checkpointer.steps():
    outcome, result = _attempt(checkpointer, abstract_state_tree, step, check_run)
    worst = _worst(outcome)
    if worst is Outcome.READ:
      # Only now, with a step to resume from, are the damaged ones moved aside: if none
      # reads, they all stay, and every later start refuses as this one does.
      for bad in damaged:
        _quarantine(checkpointer, bad)
      if damaged:
        log(f'WARNING: moved the damaged checkpoint steps {damaged} to '
            f'{_damaged_directory(checkpointer)}; resuming from step {step}')
      return result
    if worst is Outcome.STOP:
      if outcome is Outcome.STOP:
        raise result
      raise integrity.CheckpointMismatchError(
          f'another process could not restore {checkpointer.directory}/{step}; see its log')
    error = checkpoint.first_line(result) if outcome else 'another process could not read it'
    log(f'WARNING: checkpoint {checkpointer.directory}/{step} is unreadable ({error}); '
        f'falling back to an older one')
    damaged.append(step)
  if not damaged:
    return None
  raise NoReadableCheckpointError(
      f'no readable checkpoint in {checkpointer.directory} (steps {damaged}, all damaged; left '
      f'where they are); refusing to train from scratch over them')


def _damaged_directory(checkpointer):
  return checkpointer.directory.parent / DAMAGED


def _quarantine(checkpointer, step):
  """Process 0 moves ``step`` to the damaged folder; every process then forgets it."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'checkpoint read {step}')
  if jax.process_index() == 0:
    directory = _damaged_directory(checkpointer)
    directory.mkdir(parents=True, exist_ok=True)
    target, n = directory / str(step), 1
    while target.exists():
      target, n = directory / f'{step}.{n}', n + 1
    (checkpointer.directory / str(step)).rename(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'checkpoint moved {step}')
  checkpointer.manager.reload()
