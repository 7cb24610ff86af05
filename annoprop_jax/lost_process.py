"""A lost process (a host gone, an OOM kill): the others notice and stop, within a bound.

Without this, the processes left wait in the step's collective, or fail it and then wait in
jax.distributed's shutdown barrier, until JAX's heartbeat timeout aborts them with a C++ stack.
Here every process of a multi-process run counts up its own number in the coordination
service's key-value store every ``period`` seconds and reads the others'. A process whose number
has not moved for ``timeout`` seconds is lost (for the others, so is a coordinator that has not
answered for that long): each process left prints one line naming it, releases the workdir lock
and exits 75 ("rerun me"), and the rerun resumes from the last complete checkpoint.
``multihost.initialize`` sets JAX's heartbeat timeout longer, so that this comes first. A
process that finishes says so first (``stop``), so that it is not taken for lost.

Known limit: the coordination service lives in process 0. When process 0 is lost, JAX's client
in every other process sees its connection fail and ends that process at once, with JAX's own
message and SIGABRT (exit 134), before this watch can; JAX 0.10 gives Python no say there (its
client's error callback cannot be set from Python).
"""
import os
import sys
import threading
import time

import jax
from jax._src import distributed   # the coordination service's client (as Orbax uses it)

from annoprop_jax import workdir_lock

EXIT_RESUME = 75
_DONE = 'done'


def _key(process):
  return f'annoprop-alive/{process}'


class Watch:
  """Started once the processes have joined; a daemon thread does the counting and watching."""

  def __init__(self, process, count, timeout, period=None,
               exit_fn=os._exit):  # pylint: disable=protected-access
    self.process, self.count, self.timeout = process, count, float(timeout)
    self.period = period or max(0.5, self.timeout / 10)
    self.exit_fn = exit_fn
    self.lost = None
    self._client = distributed.global_state.client
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True, name='lost_process')

  def start(self):
    self._thread.start()
    return self

  def stop(self):
    """This process has finished: the others stop watching it."""
    self._stop.set()
    self._thread.join()
    try:
      self._client.key_value_set(_key(self.process), _DONE, allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except  # the others are gone too: nothing to tell
      pass

  def confirm(self):
    """After a failed collective: waits until a lost process would have been noticed (and this
    process stopped); returns if none was, so that the caller raises the error itself."""
    deadline = time.monotonic() + self.timeout + 3 * self.period
    while time.monotonic() < deadline and self._thread.is_alive():
      time.sleep(self.period / 2)

  def _run(self):
    others = [p for p in range(self.count) if p != self.process]
    seen = {p: (None, time.monotonic()) for p in others}
    answered, beat = time.monotonic(), 0
    while not self._stop.wait(self.period):
      now = time.monotonic()
      beat += 1
      try:
        self._client.key_value_set(_key(self.process), str(beat), allow_overwrite=True)
        answered = now
      except Exception:  # pylint: disable=broad-except  # no coordinator: counted below
        pass
      for p in others:
        try:
          value = self._client.key_value_try_get(_key(p)) if seen[p][0] != _DONE else _DONE
        except Exception:  # pylint: disable=broad-except  # not set yet, or no coordinator
          continue
        if value != seen[p][0]:
          seen[p] = (value, now)
      stale = [p for p in others if seen[p][0] != _DONE and now - seen[p][1] > self.timeout]
      if self.process != 0 and now - answered > self.timeout:
        stale = sorted(set(stale) | {0})
      if stale:
        self._give_up(stale)
        return

  def _give_up(self, lost):
    self.lost = lost
    names = ', '.join(f'process {p}' for p in lost)
    stop_run(f'{names} of {self.count} stopped answering for {self.timeout:.0f} s (a lost '
             'host, or a killed process)', self.exit_fn)


def stop_run(reason, exit_fn=os._exit):  # pylint: disable=protected-access
  """One line (``reason``), the workdir lock released, exit 75."""
  print(f'error: {reason}; stopping with exit 75: rerun the same command on every process to '
        'resume from the last complete checkpoint', file=sys.stderr, flush=True)
  workdir_lock.release_held()
  exit_fn(EXIT_RESUME)


def watch(timeout):
  """A started Watch of this run's processes (None for a single process)."""
  if jax.process_count() == 1:
    return None
  return Watch(jax.process_index(), jax.process_count(), timeout).start()
