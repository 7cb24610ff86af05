"""Readers of real datasets for ``prepare``: each turns an input folder into example dicts.

A format module has two functions:

  plan(options) -> Plan        what to write: the class names and, per output split, a list of
                               tasks, one task per output shard (a chunk of images, one tar
                               shard, one video); tasks are small picklable descriptions
  examples(task, options)      yields the task's examples (``make_example`` dicts) and, for an
                               input that cannot be read, ``Skipped(source, reason)``

Example dicts follow the prepared schema (see ``annoprop_jax.data.prepare``): boxes are
(ymin, xmin, ymax, xmax) in [0, 1] of the image (docs/method.md, Boxes).
"""
import dataclasses
import io
import os
import re

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

SPLIT_NAMES = {'train': 'train', 'val': 'validation', 'valid': 'validation',
               'validation': 'validation', 'test': 'test'}
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif', '.tif', '.tiff')


class PrepareError(ValueError):
  """An input that cannot be prepared at all (missing folder, no files, bad CSV): one line."""


@dataclasses.dataclass(frozen=True)
class Skipped:
  """An input file (or record) that could not be read, and why."""
  source: str
  reason: str


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a format will write: class names and, per split, one task per output shard."""
  class_names: tuple
  splits: dict            # split name -> list of tasks
  video: bool = False     # adds video_id and timestamp features
  description: str = ''


def split_name(folder):
  """Output split name of a source folder: the year dropped, ``val`` -> ``validation``
  (train2017 -> train, val2017 -> validation, test -> test); other names are kept."""
  base = re.sub(r'[-_]?\d{4}$', '', folder)
  return SPLIT_NAMES.get(base.lower(), base)


def split_folders(root):
  """``{split: folder}`` when every sub-folder of ``root`` is named like a split (train, val,
  validation, test, train2017, ...), else ``{'train': root}``: the folder is one split."""
  subdirs = sorted(d for d in os.listdir(root)
                   if os.path.isdir(os.path.join(root, d)) and not d.startswith('.'))
  if subdirs and all(split_name(d) in SPLIT_NAMES.values() for d in subdirs):
    splits = {}
    for d in subdirs:
      name = split_name(d)
      if name in splits:
        raise PrepareError(f'{root}: folders {splits[name]!r} and {d!r} both map to split {name!r}')
      splits[name] = os.path.join(root, d)
    return splits
  return {'train': root}


def files_under(root, extensions):
  """Sorted paths of the files under ``root`` (recursively) with one of ``extensions``."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    found.extend(os.path.join(dirpath, f) for f in filenames
                 if f.lower().endswith(extensions) and not f.startswith('.'))
  return sorted(found)


def chunks(items, size):
  """``items`` cut into consecutive lists of at most ``size``."""
  return [items[i:i + size] for i in range(0, len(items), size)]


def _resized(img, max_size):
  """``img`` scaled down so that its longer side is ``max_size`` (unchanged if it fits)."""
  width, height = img.size
  scale = max_size / max(width, height) if max_size else 1.0
  if scale >= 1:
    return img
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  if img.format == 'JPEG':
    img.draft('RGB', size)       # let the JPEG decoder downscale by 1/2, 1/4 or 1/8 first
  return img.convert('RGB').resize(size, Image.BICUBIC)


def encode_pil(img, max_size=0, quality=95):
  """A PIL image as RGB JPEG bytes, scaled down to ``max_size`` if it is larger."""
  img = _resized(img, max_size).convert('RGB')
  buf = io.BytesIO()
  img.save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


def encode_image(data, max_size=0, quality=95):
  """The bytes to store for an image file: the source bytes when they are an RGB JPEG or PNG
  that fits ``max_size`` (no re-encoding), else an RGB JPEG. Raises if ``data`` does not decode."""
  with Image.open(io.BytesIO(data)) as img:
    fits = not max_size or max(img.size) <= max_size
    if not (fits and img.mode == 'RGB' and img.format in ('JPEG', 'PNG')):
      return encode_pil(img, max_size, quality)
    img.load()                   # decodes every pixel: truncated or corrupt files raise here
    return data


def reason(error):
  """A short, one-line reason for an input that could not be read."""
  if isinstance(error, UnidentifiedImageError):
    return 'not an image that PIL can decode'
  return ' '.join(f'{type(error).__name__}: {error}'.split())


def describe(name):
  """The text annotation of a box of class ``name``: "a photo of a dog", "an apple"."""
  article = 'an' if name[:1].lower() in ('a', 'e', 'i', 'o', 'u') else 'a'
  return f'a photo of {article} {name}'


def make_example(image, source_id, boxes=(), box_labels=(), descriptions=(), labels=(),
                 captions=()):
  """One example of the prepared schema (without the video fields)."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if not len(boxes) == len(box_labels) == len(descriptions):
    raise ValueError('boxes, box_labels and descriptions must have the same length')
  return {
      'image': image,
      'source_id': source_id,
      'objects': {'bbox': boxes, 'label': list(box_labels), 'description': list(descriptions)},
      'labels': list(labels),
      'caption': list(captions),
  }
