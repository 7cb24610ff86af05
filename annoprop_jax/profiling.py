"""``profile_steps = 'A,B'``: a jax.profiler trace of train steps A to B (1-based, inclusive),
written where TensorBoard's profile tab finds it (``WORKDIR/tensorboard/plugins/profile/``).

Process 0 traces. On a bucket workdir the trace is written locally, then uploaded.
"""
import tempfile

import jax

from annoprop_jax import errors
from annoprop_jax import storage


def parse_steps(text):
  """``'A,B'`` -> (A, B); ``''`` -> None; anything else is a ConfigError."""
  if not text:
    return None
  try:
    first, last = (int(part) for part in str(text).split(','))
  except ValueError:
    first = last = 0
  if not 0 < first <= last:
    raise errors.ConfigError(f'profile_steps must be "A,B" with 0 < A <= B (train steps, '
                             f'inclusive), got {text!r}')
  return first, last


class StepProfiler:
  """Call ``before(step)`` before running train step ``step`` and ``after(step, state)`` after."""

  def __init__(self, steps, workdir, print_fn=print):
    self.steps = parse_steps(steps) if jax.process_index() == 0 else None
    self.target = storage.path(workdir) / 'tensorboard'
    self.print_fn = print_fn
    self._local = None

  def before(self, step):
    if self.steps and step == self.steps[0]:
      remote = storage.is_remote(self.target)
      self._local = tempfile.mkdtemp(prefix='annoprop-trace-') if remote else str(self.target)
      jax.profiler.start_trace(self._local)

  def after(self, step, state):
    if self.steps and self._local and step == self.steps[1]:
      jax.block_until_ready(state)           # the traced steps' device work, finished
      self.close()
      self.print_fn(f'wrote a profile of steps {self.steps[0]}-{self.steps[1]} to '
                    f'{self.target}/plugins/profile (TensorBoard: the PROFILE tab)')

  def close(self):
    """Ends the trace (also one the run stopped inside of: a signal, an error)."""
    if self._local:
      jax.profiler.stop_trace()
      if storage.is_remote(self.target):
        storage.put_folder(self._local, self.target)
      self._local = None
