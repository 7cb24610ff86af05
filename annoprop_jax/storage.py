"""Where a run's files live: a local folder or a bucket (``gs://``), behind one path type.

Every file the package reads or writes (workdir, checkpoints, metrics.jsonl, TensorBoard,
config.json, the lock, exports, ``data_dir`` and prepared datasets) is named by ``path(...)``:
an ``etils.epath.Path``, the type Orbax and tfds use, so ``gs://BUCKET/run`` works wherever a
local folder does (with the ``[gcs]`` extra installed). Local paths are made absolute (``~``
expanded), so that no bucket URL is ever read as a relative folder named ``gs:``.

Buckets have no renames that are atomic and no appends, but an object appears whole or not at
all; the operations below keep the guarantees of their local versions on both. Writers that
only know local files (array_record's) write through ``local_file``.
"""
import contextlib
import functools
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse

from etils import epath

_URL = re.compile(r'^[a-z][a-z0-9+.-]*://')


def is_remote(name):
  """Whether ``name`` is a URL (``gs://...``) rather than a local path."""
  return bool(_URL.match(os.fspath(name)))


class StoreUnreachableError(OSError):
  """A bucket that does not answer, or does not let these credentials in."""


def bucket(name):
  """``gs://BUCKET`` of a bucket URL."""
  protocol, rest = os.fspath(name).split('://', 1)
  return f'{protocol}://{rest.split("/", 1)[0]}'


def _endpoint(protocol):
  """(host, port) that ``protocol``'s client talks to, or None when it is not known here."""
  if protocol not in ('gs', 'gcs'):
    return None
  url = urllib.parse.urlsplit(os.environ.get('STORAGE_EMULATOR_HOST')
                              or 'https://storage.googleapis.com')
  return url.hostname, url.port or (443 if url.scheme == 'https' else 80)


def check_reachable(name, timeout=10.0):
  """Raises StoreUnreachableError, within about ``timeout`` seconds, unless the bucket of
  ``name`` answers and exists (a local path passes). Clients retry a dead endpoint for minutes
  and end in chained tracebacks; this says which bucket and why, in one line, first."""
  if not is_remote(name):
    return
  root = bucket(name)
  endpoint = _endpoint(root.split('://')[0])
  if endpoint:
    try:
      socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as e:
      raise StoreUnreachableError(f'cannot reach {root}: its endpoint {endpoint[0]}:'
                                  f'{endpoint[1]} does not answer ({e})') from None
  answer = {}

  def probe():
    try:
      answer['exists'] = path(root).exists()
    except Exception as e:  # pylint: disable=broad-except  # reported below, in one line
      answer['error'] = e

  thread = threading.Thread(target=probe, daemon=True, name='check_reachable')
  thread.start()
  thread.join(timeout)
  if thread.is_alive():
    raise StoreUnreachableError(f'cannot reach {root}: no answer within {timeout:.0f} s')
  if 'error' in answer:
    error = answer['error']
    lines = str(error).strip().splitlines() or [type(error).__name__]
    raise StoreUnreachableError(f'cannot reach {root}: {type(error).__name__}: {lines[0]}')
  if not answer['exists']:
    raise StoreUnreachableError(f'{root} does not exist, or these credentials cannot see it')


def path(name):
  """The one path type for ``name``: a bucket URL as given, a local path made absolute."""
  name = os.fspath(name)
  if is_remote(name):
    _fresh_listings(name.split('://')[0])
    return epath.Path(name)
  return epath.Path(os.path.abspath(os.path.expanduser(name)))


@functools.lru_cache(maxsize=None)
def _fresh_listings(protocol):
  """No cached folder listings for ``protocol``'s filesystem (fsspec caches them for ever by
  default): another process (an evaluation, a takeover, a save) changes the bucket under us."""
  import fsspec  # pylint: disable=g-import-not-at-top
  fsspec.config.conf.setdefault(protocol, {}).setdefault('use_listings_cache', False)


@contextlib.contextmanager
def local_file(target):
  """A local file name to write ``target``'s new content into (for writers that know only local
  files, like array_record's). When the block ends without an error the file becomes ``target``
  whole, never seen half-written: renamed over it locally, uploaded in one piece to a bucket
  (an object appears only once complete). On an error ``target`` keeps its old content."""
  target = path(target)
  remote = is_remote(target)
  if remote:
    fd, tmp = tempfile.mkstemp(prefix='annoprop-')
    os.close(fd)
  else:
    tmp = f'{target}.tmp{os.getpid()}'
  try:
    yield tmp
    if remote:
      with open(tmp, 'rb') as src, target.open('wb') as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
    else:
      os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_atomically(target, data):
  """Writes ``data`` (str or bytes) to ``target``; readers see the old or the new content,
  never a part (``local_file``)."""
  with local_file(target) as tmp, open(tmp, 'wb' if isinstance(data, bytes) else 'w') as f:
    f.write(data)


def put_folder(local_folder, target, last=()):
  """Copies every file under ``local_folder`` to the same place under ``target``, each whole
  (``local_file``); the files named in ``last`` (e.g. the one whose presence marks a complete
  dataset) go last."""
  target = path(target)
  files = sorted((os.path.relpath(os.path.join(d, f), local_folder)
                  for d, _, names in os.walk(local_folder) for f in names),
                 key=lambda name: (os.path.basename(name) in last, name))
  for name in files:
    (target / name).parent.mkdir(parents=True, exist_ok=True)
    with local_file(target / name) as tmp:
      shutil.copyfile(os.path.join(local_folder, name), tmp)


def create_exclusive(target, text):
  """Writes ``text`` to ``target`` only if it does not exist; False if it does. Of several
  creators exactly one wins: ``O_EXCL`` locally, a generation-0 precondition on a bucket."""
  target = path(target)
  if is_remote(target):
    import fsspec  # pylint: disable=g-import-not-at-top
    url = os.fspath(target)
    try:
      fsspec.filesystem(url.split('://')[0]).pipe_file(url, text.encode(), mode='create')
    except FileExistsError:
      return False
    return True
  try:
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  return True


def age(target):
  """Seconds since ``target`` was last written."""
  return time.time() - path(target).stat().mtime
