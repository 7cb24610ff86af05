"""COCO as the official download lays it out:

  INPUT/annotations/instances_<split>.json   boxes and categories (optional per split)
  INPUT/annotations/captions_<split>.json    captions (optional per split)
  INPUT/<split>/                             the images (train2017/, val2017/, ...)

Every <split> with an instances or captions file becomes an output split named without the year
(train2017 -> train, val2017 -> validation). COCO's sparse category ids (1..90) map to
contiguous labels 0..79 in id order, the names kept in the ClassLabel. Boxes (x, y, w, h in
pixels) become (ymin, xmin, ymax, xmax) in [0, 1], crowd boxes included; each box gets the
description "a photo of a <category>"; ``labels`` is the sorted set of the image's box labels;
``caption`` holds all of the image's captions in annotation-id order.
"""
import collections
import dataclasses
import json
import os
import re

from annoprop_jax.data import formats


@dataclasses.dataclass(frozen=True)
class Image:
  file_name: str
  boxes: tuple            # (ymin, xmin, ymax, xmax) in [0, 1] per object
  box_labels: tuple
  captions: tuple


@dataclasses.dataclass(frozen=True)
class Shard:
  image_dir: str
  images: tuple           # of Image
  class_names: tuple


def box_to_yxyx(bbox, height, width):
  """COCO's (x, y, w, h) in pixels -> (ymin, xmin, ymax, xmax) in [0, 1], clipped."""
  x, y, w, h = (float(v) for v in bbox)
  clip = lambda v: min(max(v, 0.0), 1.0)
  return (clip(y / height), clip(x / width), clip((y + h) / height), clip((x + w) / width))


def _load(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise formats.PrepareError(f'cannot read {path}: {e}') from None


def _annotation_files(annotations_dir):
  """``{source split: {'instances': path, 'captions': path}}`` of the annotation folder."""
  found = collections.defaultdict(dict)
  for name in sorted(os.listdir(annotations_dir)):
    match = re.fullmatch(r'(instances|captions)_(.+)\.json', name)
    if match:
      found[match.group(2)][match.group(1)] = os.path.join(annotations_dir, name)
  return dict(found)


def _categories(instances):
  """Sorted COCO category ids and names of every instances file (union)."""
  by_id = {}
  for data in instances:
    for cat in data.get('categories', []):
      by_id[cat['id']] = cat['name']
  return sorted(by_id.items())


def _images(instances, captions, label_of):
  """Image records of one split, sorted by file name."""
  meta, boxes, texts = {}, collections.defaultdict(list), collections.defaultdict(list)
  for data in (instances, captions):
    for img in (data or {}).get('images', []):
      meta[img['id']] = img
  for ann in sorted((instances or {}).get('annotations', []), key=lambda a: a['id']):
    img = meta.get(ann['image_id'])
    if img is None:
      continue                  # an annotation of an image the file does not list
    boxes[ann['image_id']].append((box_to_yxyx(ann['bbox'], img['height'], img['width']),
                                   label_of[ann['category_id']]))
  for ann in sorted((captions or {}).get('annotations', []), key=lambda a: a['id']):
    texts[ann['image_id']].append(ann['caption'].strip())
  return sorted((Image(file_name=img['file_name'],
                       boxes=tuple(b for b, _ in boxes[i]),
                       box_labels=tuple(l for _, l in boxes[i]),
                       captions=tuple(texts[i]))
                 for i, img in meta.items()), key=lambda im: im.file_name)


def plan(options):
  annotations_dir = os.path.join(options.input, 'annotations')
  if not os.path.isdir(annotations_dir):
    raise formats.PrepareError(f'{options.input} has no annotations/ folder (expected the '
                               f'official layout: annotations/instances_train2017.json, '
                               f'train2017/, ...)')
  files = _annotation_files(annotations_dir)
  if not files:
    raise formats.PrepareError(f'{annotations_dir} has no instances_<split>.json or '
                               f'captions_<split>.json')
  loaded = {src: {kind: _load(path) for kind, path in kinds.items()}
            for src, kinds in files.items()}
  categories = _categories([d['instances'] for d in loaded.values() if 'instances' in d])
  label_of = {cat_id: i for i, (cat_id, _) in enumerate(categories)}
  class_names = tuple(name for _, name in categories)
  tasks = {}
  for src, data in loaded.items():
    split = formats.split_name(src)
    image_dir = os.path.join(options.input, src)
    if not os.path.isdir(image_dir):
      raise formats.PrepareError(f'{files[src]} has no image folder {image_dir}')
    if split in tasks:
      raise formats.PrepareError(f'two COCO splits map to the output split {split!r}')
    images = _images(data.get('instances'), data.get('captions'), label_of)
    tasks[split] = [Shard(image_dir, tuple(chunk), class_names)
                    for chunk in formats.chunks(images, options.shard_size)]
  return formats.Plan(class_names=class_names, splits=tasks,
                      description=f'COCO-format dataset from {options.input}.')


def examples(task, options):
  for img in task.images:
    path = os.path.join(task.image_dir, img.file_name)
    try:
      with open(path, 'rb') as f:
        image = formats.encode_image(f.read(), options.max_image_size, options.jpeg_quality)
    except Exception as e:  # pylint: disable=broad-except  # any unreadable file is skipped
      yield formats.Skipped(img.file_name, formats.reason(e))
      continue
    yield formats.make_example(
        image, img.file_name, boxes=img.boxes, box_labels=img.box_labels,
        descriptions=[formats.describe(task.class_names[l]) for l in img.box_labels],
        labels=sorted(set(img.box_labels)), captions=img.captions)
