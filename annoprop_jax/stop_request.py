"""Stop requests: SIGTERM and SIGINT (a preemption notice, Ctrl-C) only set a flag.

Nothing else runs in the handler, so a signal during a print or a save cannot break it; the
training loop reads the flag after each step, saves and exits. ``main`` installs the handler
for ``train`` before it imports anything heavy, so a signal during start-up, data opening,
restore or compilation stops the run as cleanly (before its first step: without training).
A second SIGINT aborts at once (KeyboardInterrupt; the last checkpoint stays). Several
processes agree on the stop every ``AGREE_EVERY`` steps, so a signal is answered within that
many steps (keep it well inside the preemption grace period).
"""
import signal

_active = []          # the installed StopRequest, if any
AGREE_EVERY = 10      # steps between the processes' agreements on a stop (multi-process)


class StopRequest:
  """Installs the handlers on creation; ``restore()`` puts the previous ones back."""

  def __init__(self):
    self.signal = 0
    self._previous = {sig: signal.signal(sig, self._handle)
                      for sig in (signal.SIGTERM, signal.SIGINT)}
    _active.append(self)

  def reinstall(self):
    """Takes the signals back: ``jax.distributed.initialize`` installs its own SIGTERM
    handler (XLA's preemption notifier), which would hide a preemption from the loop."""
    for sig in self._previous:
      signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    if self.signal and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal = self.signal or signum

  def agreed(self, step=0):
    """Whether any process was asked to stop: all processes stop after the same step. With
    several processes they agree (a tiny all-gather, which waits for the step to finish) only
    after every ``AGREE_EVERY``-th step, so the host runs ahead of the devices in between."""
    import jax  # pylint: disable=g-import-not-at-top
    if jax.process_count() == 1:
      return bool(self.signal)
    if step % AGREE_EVERY:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    return bool(multihost_utils.process_allgather(np.int32(self.signal)).max())

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    _active.remove(self)


def active():
  """The installed StopRequest, or None."""
  return _active[-1] if _active else None
