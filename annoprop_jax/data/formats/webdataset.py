"""Webdataset tar shards of image + caption, as img2dataset writes them (CC12M):
``00000.tar`` holding ``<key>.jpg``, ``<key>.txt`` (the caption) and/or ``<key>.json`` (with a
"caption" field), the files of one example next to each other.

INPUT/*.tar is one ``train`` split; INPUT/<split>/*.tar (train, val, ...) gives several. Each
input tar becomes one output shard; ``source_id`` is ``<tar path>/<key>``. ``caption`` holds the
.txt caption and, if different, the .json one. An example without an image, with an
undecodable image, or in the unreadable tail of a damaged tar is skipped and reported.
"""
import dataclasses
import json
import os
import tarfile

from annoprop_jax.data import formats


@dataclasses.dataclass(frozen=True)
class Shard:
  path: str
  source_prefix: str      # the tar's path relative to the input folder


def plan(options):
  tasks = {}
  for split, folder in formats.split_folders(options.input).items():
    tars = formats.files_under(folder, ('.tar',))
    if tars:
      tasks[split] = [Shard(p, os.path.relpath(p, options.input)) for p in tars]
  if not tasks:
    raise formats.PrepareError(f'{options.input}: no .tar shards found')
  return formats.Plan(class_names=(), splits=tasks,
                      description=f'Image-caption pairs from the webdataset shards of '
                                  f'{options.input}.')


def _split_key(member_name):
  """``dir/000123.jpg`` -> (``dir/000123``, ``jpg``): webdataset's key is all before the first
  dot of the file name."""
  directory, base = os.path.split(member_name)
  key, _, ext = base.partition('.')
  return os.path.join(directory, key), ext.lower()


def _grouped(tar):
  """(key, {extension: bytes}) of consecutive members that share a key."""
  key, files = None, {}
  for member in tar:
    if not member.isfile():
      continue
    member_key, ext = _split_key(member.name)
    if member_key != key and files:
      yield key, files
      files = {}
    key = member_key
    files[ext] = tar.extractfile(member).read()
  if files:
    yield key, files


def _captions(files):
  captions = []
  if 'txt' in files:
    captions.append(files['txt'].decode('utf-8', 'replace').strip())
  if 'json' in files:
    try:
      caption = json.loads(files['json']).get('caption')
    except (ValueError, AttributeError):
      caption = None
    if isinstance(caption, str) and caption.strip() and caption.strip() not in captions:
      captions.append(caption.strip())
  return [c for c in captions if c]


def _example(source_id, files, options):
  image_ext = next((e for e in ('jpg', 'jpeg', 'png', 'webp') if e in files), None)
  if image_ext is None:
    return formats.Skipped(source_id, f'no image file (has {", ".join(sorted(files))})')
  try:
    image = formats.encode_image(files[image_ext], options.max_image_size, options.jpeg_quality)
  except Exception as e:  # pylint: disable=broad-except  # any undecodable image is skipped
    return formats.Skipped(source_id, formats.reason(e))
  return formats.make_example(image, source_id, captions=_captions(files))


def examples(task, options):
  last = None
  try:
    with tarfile.open(task.path, 'r|*') as tar:   # streaming: one pass over the file
      for key, files in _grouped(tar):
        last = key
        yield _example(f'{task.source_prefix}/{key}', files, options)
  except (tarfile.TarError, OSError, EOFError) as e:
    where = f'after {last}' if last else 'at its start'
    yield formats.Skipped(task.source_prefix, f'tar unreadable {where}: {formats.reason(e)}')
