"""Which feature of a dataset feeds each field of a stream (``data.<stream>.features``).

A stream reads four things from a record: ``image`` (encoded bytes), ``boxes`` ((n, 4) boxes,
docs/method.md order), ``labels`` (class ids: a list, or a scalar image label such as
imagenet2012's ``label``) and ``caption`` (one text, or a list of texts to choose from). Each
maps to a feature path of the dataset (``objects/bbox`` = the ``bbox`` of the ``objects``
sequence); an empty path means the dataset has none (the field is padding). Defaults fit the
scenes dataset and every dataset ``prepare`` writes:

  image='image', boxes='objects/bbox', labels='objects/label', caption='caption'

tfds catalogue datasets: coco/2017 needs ``caption=''``; imagenet2012 needs ``labels='label',
boxes='', caption=''``.
"""
import numpy as np

from annoprop_jax import errors

ROLES = ('image', 'boxes', 'labels', 'caption')
DEFAULT = (('image', 'image'), ('boxes', 'objects/bbox'), ('labels', 'objects/label'),
           ('caption', 'caption'))
CAPTION_CHOICES = ('first', 'random')


def lookup(record, path, default=None):
  """The value at ``path`` (``a/b`` = record['a']['b']) of a record; ``default`` if absent."""
  if not path:
    return default
  node = record
  for part in path.split('/'):
    if not isinstance(node, dict) or part not in node:
      return default
    node = node[part]
  return node


def feature_paths(features, prefix=''):
  """Paths of the leaf features of a tfds FeaturesDict (sequences are looked through)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  paths = []
  for key, feature in features.items():
    while isinstance(feature, tfds.features.Sequence):
      feature = feature.feature
    if isinstance(feature, tfds.features.FeaturesDict):
      paths.extend(feature_paths(feature, f'{prefix}{key}/'))
    else:
      paths.append(prefix + key)
  return sorted(paths)


def leaf_feature(features, path):
  """The tfds feature at ``path`` (sequences looked through), or None."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  node = features
  for part in path.split('/'):
    while isinstance(node, tfds.features.Sequence):
      node = node.feature
    if not isinstance(node, tfds.features.FeaturesDict) or part not in node:
      return None
    node = node[part]
  while isinstance(node, tfds.features.Sequence):
    node = node.feature
  return node


def record_paths(record, prefix=''):
  """Paths of the leaves of a record dict (for sources without tfds metadata)."""
  paths = []
  for key, value in record.items():
    if isinstance(value, dict):
      paths.extend(record_paths(value, f'{prefix}{key}/'))
    else:
      paths.append(prefix + key)
  return sorted(paths)


def source_paths(source):
  """Feature paths of a data source: from its tfds metadata, else from its first record."""
  info = getattr(source, 'dataset_info', None)
  if info is not None:
    return feature_paths(info.features)
  return record_paths(source[0]) if len(source) else None


def check(mapping, available, dataset):
  """Raises ConfigError (one line naming the dataset's features) for a role mapped to a
  feature that ``dataset`` does not have, or for an unknown role."""
  for role, path in mapping.items():
    if role not in ROLES:
      raise errors.ConfigError(f'features.{role}: unknown field; the fields are '
                               f'{", ".join(ROLES)}')
    if path and available is not None and path not in available:
      raise errors.ConfigError(
          f'features.{role}={path!r}: dataset {dataset!r} has no such feature; its features: '
          f'{", ".join(available)}')


def as_labels(value):
  """Class ids as int64 (n,): a list, an array or a scalar image label; DataError for text."""
  try:
    return np.asarray([] if value is None else value, np.int64).reshape(-1)
  except (TypeError, ValueError):
    raise errors.DataError(
        f'features.labels gives {type(value).__name__} values such as {str(value)[:40]!r}, '
        'not class ids: map labels to an integer (ClassLabel) feature, or to "" for none'
    ) from None


def as_boxes(value):
  return np.asarray([] if value is None else value, np.float32).reshape(-1, 4)


def as_caption(value, choice='first', rng=None):
  """One caption as bytes: the text itself, or the first (or a random) text of a list."""
  if isinstance(value, (list, tuple, np.ndarray)):
    if not len(value):
      return b''
    value = value[int(rng.integers(len(value)))] if choice == 'random' and rng is not None \
        else value[0]
  if value is None:
    return b''
  return value.encode() if isinstance(value, str) else bytes(value)
