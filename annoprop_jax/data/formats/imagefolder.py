"""ImageFolder trees (the ImageNet layout): INPUT/<split>/<class>/*.jpg, or INPUT/<class>/*.jpg
for a single ``train`` split. Each image gets its class folder as its image-level label
(``labels``); class names are the sorted union of the class folders of every split."""
import dataclasses
import os

from annoprop_jax.data import formats


@dataclasses.dataclass(frozen=True)
class Shard:
  entries: tuple          # (path, source_id, label) per image


def _class_folders(split_dir):
  return sorted(d for d in os.listdir(split_dir)
                if os.path.isdir(os.path.join(split_dir, d)) and not d.startswith('.'))


def plan(options):
  splits = formats.split_folders(options.input)
  class_names = sorted({c for d in splits.values() for c in _class_folders(d)})
  if not class_names:
    raise formats.PrepareError(f'{options.input}: no class folders (expected '
                               f'INPUT/<class>/*.jpg or INPUT/<split>/<class>/*.jpg)')
  index = {name: i for i, name in enumerate(class_names)}
  tasks = {}
  for split, split_dir in splits.items():
    entries = []
    for name in _class_folders(split_dir):
      for path in formats.files_under(os.path.join(split_dir, name), formats.IMAGE_EXTENSIONS):
        entries.append((path, os.path.relpath(path, split_dir), index[name]))
    if not entries:
      raise formats.PrepareError(f'{split_dir}: no images in its class folders')
    tasks[split] = [Shard(tuple(chunk)) for chunk in formats.chunks(entries, options.shard_size)]
  return formats.Plan(class_names=tuple(class_names), splits=tasks,
                      description=f'Image folders of {options.input}; label = class folder.')


def examples(task, options):
  for path, source_id, label in task.entries:
    try:
      with open(path, 'rb') as f:
        image = formats.encode_image(f.read(), options.max_image_size, options.jpeg_quality)
    except Exception as e:  # pylint: disable=broad-except  # any unreadable file is skipped
      yield formats.Skipped(source_id, formats.reason(e))
      continue
    yield formats.make_example(image, source_id, labels=[label])
