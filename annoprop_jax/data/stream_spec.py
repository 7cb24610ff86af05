"""An input stream's configuration: the defaults of a ``data.<stream>`` block and the frozen
``StreamSpec`` the pipeline reads, which checks itself on creation (one line naming the field).

Light on purpose (no tfds, grain or OpenCV): the config schema imports it.
"""
import dataclasses

from annoprop_jax.data import scenes

AUTO = -1     # num_workers / num_threads: sized for the host (pipeline.reading_plan)
CAPTION_CHOICES = ('first', 'random')
# A stream stops with a DataError past either limit (per process, or per worker process).
UNDECODABLE_LIMITS = dict(max_undecodable_run=1000,     # undecodable records in a row
                          max_undecodable_fraction=0.1)  # of the records read, after 1000


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How to cut ``num`` views of ``size`` x ``size`` pixels out of one image."""
  num: int = 2
  size: int = 32
  scale: tuple = (0.25, 1.0)        # area of a view as a fraction of the image area
  ratio: tuple = (3 / 4, 4 / 3)     # aspect ratio (width / height) range, sampled log-uniformly
  flip: bool = True                 # random horizontal flips (mirror the view's frame)
  colour_jitter: float = 0.0        # strength of brightness/contrast/saturation jitter, 0 = off
  hue_jitter: float = 0.0           # max hue rotation, a fraction of the colour wheel (0-0.5)
  grayscale: float = 0.0            # probability of converting a view to grey

  def __post_init__(self):
    if self.num < 0 or self.size < 1:
      raise ValueError(f'num must be >= 0 and size >= 1, got num={self.num} size={self.size}')
    (low, high), (narrow, wide) = self.scale, self.ratio
    if not 0 < low <= high <= 1:
      raise ValueError(f'scale must be 0 < min <= max <= 1 (area fractions), got {self.scale}')
    if not 0 < narrow <= wide:
      raise ValueError(f'ratio must be 0 < min <= max, got {self.ratio}')
    if self.colour_jitter < 0 or not 0 <= self.grayscale <= 1:
      raise ValueError('colour_jitter must be >= 0 and grayscale in [0, 1], got '
                       f'{self.colour_jitter} and {self.grayscale}')
    if not 0 <= self.hue_jitter <= 0.5:
      raise ValueError(f'hue_jitter must be in [0, 0.5] (of the colour wheel), got '
                       f'{self.hue_jitter}')


def default_block(batch_size, dataset='scenes', split='train', num_views=2, size=32,
                  scale=(0.25, 1.0), colour_jitter=0.0, grayscale=0.0, flip=True):
  """One stream's config block (annotation or bootstrap), as a dict."""
  return dict(
      batch_size=batch_size,     # images per optimizer step (global, over all processes)
      dataset=dataset,           # 'scenes' (embedded), a prepared tfds name, or a dataset dir
      split=split,
      # The dataset's feature that feeds each field ('a/b': feature b of sequence a; '': none).
      # Defaults fit scenes and `prepare`d datasets; imagenet2012: labels='label', boxes='',
      # caption=''; coco/2017: caption=''. See annoprop_jax/data/feature_map.py.
      features=dict(image='image', boxes='objects/bbox', labels='objects/label',
                    caption='caption'),
      caption_choice='first',    # of several captions: 'first', or 'random' (new one per epoch)
      resize=0,                  # scale decoded images so the shorter side is this (0: off)
      # hue_jitter: max hue rotation as a fraction of the colour wheel (0.5: any hue).
      views=dict(num=num_views, size=size, scale=scale, ratio=(3 / 4, 4 / 3), flip=flip,
                 colour_jitter=colour_jitter, hue_jitter=0.0, grayscale=grayscale),
      local_views=dict(num=0, size=16, scale=(0.05, 0.25), ratio=(3 / 4, 4 / 3), flip=flip,
                       colour_jitter=colour_jitter, hue_jitter=0.0, grayscale=grayscale),
      max_objects=8,             # annotations padded/truncated to this many objects
      max_caption_bytes=scenes.MAX_CAPTION_BYTES,   # longer captions are cut
      num_threads=2,             # grain read threads (per worker process)
      prefetch=8,                # grain prefetch buffer (elements)
      num_workers=0,             # grain worker processes (0: decode in this process); a
                                 # checkpointed data state resumes only with the same count.
                                 # -1 here or in num_threads: sized for this host's cores and
                                 # the streams' work (pipeline.reading_plan; the paper configs
                                 # do so); a resume keeps the count it was saved with
      # The stream stops with one line past either: undecodable records in a row
      # (max_undecodable_run), or their fraction of the records read after 1000
      # (max_undecodable_fraction), counted per process (or worker).
      **UNDECODABLE_LIMITS,
  )


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """A ``data.<stream>`` block, checked (see ``default_block`` for the fields)."""
  batch_size: int
  dataset: str
  split: str
  features: tuple                 # ((field, feature path), ...)
  caption_choice: str
  resize: int
  views: ViewSpec
  local_views: ViewSpec
  max_objects: int
  max_caption_bytes: int
  num_threads: int
  prefetch: int
  num_workers: int
  max_undecodable_run: int
  max_undecodable_fraction: float

  def __post_init__(self):
    if self.batch_size <= 0:
      raise ValueError(f'batch_size must be positive, got {self.batch_size}')
    if self.caption_choice not in CAPTION_CHOICES:
      raise ValueError(f'caption_choice must be one of {CAPTION_CHOICES}, got '
                       f'{self.caption_choice!r}')
    if self.resize < 0:
      raise ValueError(f'resize must be >= 0, got {self.resize}')
    if self.num_workers < 0 and self.num_workers != AUTO:
      raise ValueError(f'num_workers must be >= 0, or -1 (sized for the host), got '
                       f'{self.num_workers}')
    if self.num_threads < 1 and self.num_threads != AUTO:
      raise ValueError(f'num_threads must be >= 1, or -1 (sized for the host), got '
                       f'{self.num_threads}')

  @classmethod
  def from_config(cls, block):
    """The spec of a ``data.<stream>`` block (a ConfigDict or dict); a ValueError names the
    field that is wrong (``views.scale must ...``)."""
    fields = dict(block.items())
    for kind in ('views', 'local_views'):
      try:
        fields[kind] = ViewSpec(**_tuples(dict(fields[kind].items())))
      except ValueError as e:
        raise ValueError(f'{kind}.{e}') from None
    fields['features'] = tuple(dict(fields['features'].items()).items())
    return cls(**_tuples(fields))


def _tuples(fields):
  return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
