"""One run per workdir: a lock file holding the owner's host and pid.

A second run on a locked workdir refuses to start. A lock left by a dead process on this host
(e.g. after SIGKILL) is taken over with a warning; a lock from another host is never broken
automatically: delete ``WORKDIR/lock`` by hand once that run is gone.
"""
import json
import os
import socket


class WorkdirLockedError(RuntimeError):
  pass


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """Context manager; only JAX process 0 should take it."""

  def __init__(self, workdir, log=print):
    self.path = os.path.join(workdir, 'lock')
    self.log = log
    self.owner = {'host': socket.gethostname(), 'pid': os.getpid()}

  def __enter__(self):
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        self._handle_existing()
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(self.owner, f)
      return self
    raise WorkdirLockedError(f'could not take the lock {self.path}')

  def _handle_existing(self):
    try:
      with open(self.path) as f:
        owner = json.load(f)
    except (OSError, ValueError):
      owner = {}
    if owner.get('host') == self.owner['host'] and not _alive(int(owner.get('pid', -1))):
      self.log(f'WARNING: taking over the lock of process {owner.get("pid")}, which is gone '
               f'({self.path})')
      os.remove(self.path)
      return
    raise WorkdirLockedError(
        f'workdir is in use by pid {owner.get("pid")} on host {owner.get("host")} '
        f'({self.path}); wait for that run to end, or delete the lock file if it is gone')

  def __exit__(self, *exc):
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass
