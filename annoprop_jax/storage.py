"""Where a run's files live: a local folder or a bucket (``gs://``), behind one path type.

Every file the package reads or writes (workdir, checkpoints, metrics.jsonl, TensorBoard,
config.json, the lock, exports, ``data_dir`` and prepared datasets) is named by ``path(...)``:
an ``etils.epath.Path``, the type Orbax and tfds use, so ``gs://BUCKET/run`` works wherever a
local folder does (with the ``[gcs]`` extra installed). Local paths are made absolute (``~``
expanded), so that no bucket URL is ever read as a relative folder named ``gs:``.

Buckets have no renames that are atomic and no appends, but an object appears whole or not at
all; the operations below keep the guarantees of their local versions on both. Writers that
only know local files (array_record's) write to a local file that ``put`` then uploads.
"""
import functools
import os
import re
import shutil
import time

from etils import epath

_URL = re.compile(r'^[a-z][a-z0-9+.-]*://')


def is_remote(name):
  """Whether ``name`` is a URL (``gs://...``) rather than a local path."""
  return bool(_URL.match(os.fspath(name)))


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


def write_atomically(target, data):
  """Writes ``data`` (str or bytes) to ``target`` so that readers see the old or the new
  content, never a part: a temporary file renamed over it locally; one upload on a bucket."""
  target = path(target)
  write = 'write_bytes' if isinstance(data, bytes) else 'write_text'
  if is_remote(target):
    getattr(target, write)(data)
    return
  tmp = target.with_name(f'{target.name}.tmp{os.getpid()}')
  try:
    getattr(tmp, write)(data)
    os.replace(tmp, target)
  finally:
    if tmp.exists():
      tmp.unlink()


def put(local_file, target):
  """Copies ``local_file`` to ``target`` (streamed), never seen half-written: through a
  temporary file and a rename locally; one upload, visible once complete, on a bucket."""
  target = path(target)
  if is_remote(target):
    with open(local_file, 'rb') as src, target.open('wb') as dst:
      shutil.copyfileobj(src, dst, 1 << 24)
    return
  tmp = target.with_name(f'{target.name}.tmp{os.getpid()}')
  shutil.copyfile(local_file, tmp)
  os.replace(tmp, target)


def put_folder(local_folder, target, last=()):
  """``put`` of every file under ``local_folder`` to the same place under ``target``; the
  files named in ``last`` (e.g. the one whose presence marks a complete dataset) go last."""
  target = path(target)
  files = sorted((os.path.relpath(os.path.join(d, f), local_folder)
                  for d, _, names in os.walk(local_folder) for f in names),
                 key=lambda name: (os.path.basename(name) in last, name))
  for name in files:
    (target / name).parent.mkdir(parents=True, exist_ok=True)
    put(os.path.join(local_folder, name), target / name)


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
