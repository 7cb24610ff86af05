"""One run per workdir: a lock file whose heartbeat the running process keeps fresh.

``WORKDIR/lock`` holds the owner (host, boot id, pid) and a heartbeat, rewritten every
``heartbeat_every`` seconds while the run is alive. A new run refuses a live lock. It takes a
lock over, with a warning, when the lock is stale:
- its heartbeat is older than ``stale_after`` seconds (any host: a preempted TPU VM, a requeued
  SLURM job on another node);
- it is empty or unreadable (a kill while it was being written);
- its owner is on this machine and gone: the pid is dead, the pid is our own (a restarted
  container has a fresh pid namespace, so the dead owner's pid can be ours), or the machine
  has rebooted since (another boot id);
or when ``takeover`` (``--takeover_lock``) says so. Of several runs taking over one stale lock
at once exactly one wins: a takeover needs ``WORKDIR/lock.takeover``, created exclusively
(``storage.create_exclusive``: a local workdir or a bucket).
"""
import json
import os
import socket
import threading
import time
import uuid

from annoprop_jax import storage

STALE_AFTER = 120.0        # seconds without a heartbeat after which any host may take over
HEARTBEAT_EVERY = 20.0
_HELD = set()              # tokens of the locks this process holds
_ACTIVE = []               # the WorkdirLocks this process holds


def release_held():
  """Releases every lock this process holds (a process that must exit at once, e.g. when
  another process of its run was lost)."""
  for lock in list(_ACTIVE):
    lock.__exit__(None, None, None)


class WorkdirLockedError(RuntimeError):
  pass


def _boot_id():
  try:
    with open('/proc/sys/kernel/random/boot_id') as f:
      return f.read().strip()
  except OSError:
    return ''


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OverflowError, ValueError):
    return True
  return True


class WorkdirLock:
  """Context manager; only JAX process 0 should take it."""

  def __init__(self, workdir, log=print, stale_after=STALE_AFTER,
               heartbeat_every=HEARTBEAT_EVERY, takeover=False):
    self.path = storage.path(workdir) / 'lock'
    self.log = log
    self.stale_after = stale_after
    self.heartbeat_every = heartbeat_every
    self.takeover = takeover
    self.owner = {'host': socket.gethostname(), 'boot': _boot_id(), 'pid': os.getpid(),
                  'token': uuid.uuid4().hex}
    self._stop = threading.Event()
    self._thread = None

  def _record(self):
    return json.dumps({**self.owner, 'heartbeat': time.time()})

  def __enter__(self):
    if not storage.create_exclusive(self.path, self._record()):
      self._take_over(self._read())
    _HELD.add(self.owner['token'])
    _ACTIVE.append(self)
    self._thread = threading.Thread(target=self._beat, daemon=True, name='workdir_lock')
    self._thread.start()
    return self

  def _read(self):
    try:
      owner = json.loads(self.path.read_text())
      return owner if isinstance(owner, dict) else {}
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}

  def stale_reason(self, owner):
    """Why ``owner`` (a lock's content) is stale, or '' if it may still be running."""
    if owner is None:
      return 'it was released'
    if not owner or not isinstance(owner.get('heartbeat'), (int, float)):
      return 'it is empty or unreadable'
    age = time.time() - owner['heartbeat']
    if age > self.stale_after:
      return f'its heartbeat is {age:.0f} s old (more than {self.stale_after:.0f} s)'
    if owner.get('host') == self.owner['host']:
      if owner.get('boot') != self.owner['boot']:
        return 'this machine has rebooted since'
      pid = int(owner.get('pid', -1))
      if pid == self.owner['pid'] and owner.get('token') not in _HELD:
        return f'its pid {pid} is ours (a restarted container)'
      if not _alive(pid):
        return f'its process {pid} is gone'
    return ''

  def _take_over(self, owner):
    reason = self.stale_reason(owner) or ('--takeover_lock' if self.takeover else '')
    if not reason:
      raise WorkdirLockedError(
          f'workdir is in use by pid {owner.get("pid")} on host {owner.get("host")} (heartbeat '
          f'{time.time() - owner["heartbeat"]:.0f} s ago; {self.path}); wait for that run to '
          f'end, or pass --takeover_lock once it is gone (a lock without a heartbeat for '
          f'{self.stale_after:.0f} s is taken over by itself)')
    takeover = self.path.with_name('lock.takeover')
    if not storage.create_exclusive(takeover, self._record()):
      # Another run is taking over right now, or one died doing it long ago.
      try:
        taking_over = storage.age(takeover) < self.stale_after
      except FileNotFoundError:          # that takeover just ended: judge the lock again
        return self._take_over(self._read())
      if taking_over:
        raise WorkdirLockedError(f'another run is taking over {self.path}; it owns the workdir')
      takeover.unlink(missing_ok=True)
      return self._take_over(self._read())
    try:
      if self._read() != owner:        # it changed since we judged it: judge again
        return self._take_over(self._read())
      if owner is not None:
        self.path.unlink(missing_ok=True)
      if not storage.create_exclusive(self.path, self._record()):
        raise WorkdirLockedError(f'another run took {self.path} first')
    finally:
      takeover.unlink(missing_ok=True)
    if owner is not None:
      self.log(f'WARNING: taking over the lock of pid {owner.get("pid")} on host '
               f'{owner.get("host")}: {reason} ({self.path})')

  def _beat(self):
    while not self._stop.wait(self.heartbeat_every):
      if (self._read() or {}).get('token') != self.owner['token']:
        self.log(f'WARNING: {self.path} is no longer ours: another run took over this workdir')
        return
      storage.write_atomically(self.path, self._record())

  def __exit__(self, *exc):
    if self in _ACTIVE:
      _ACTIVE.remove(self)
    _HELD.discard(self.owner['token'])
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if (self._read() or {}).get('token') == self.owner['token']:
      self.path.unlink(missing_ok=True)
