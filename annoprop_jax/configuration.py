"""The schema every experiment config starts from, its validation and the ``tiny`` variant.

A config file in ``configs/`` calls :func:`base_config` with its method and overrides fields;
every key that exists is listed here, so a misspelt key (in a file or on the command line) is an
error that names the nearest valid keys.
"""
import dataclasses
import difflib
import fnmatch
import json

import ml_collections
from ml_collections import config_dict

from annoprop_jax import errors
from annoprop_jax import objectives
from annoprop_jax.evaluation import evaluator
from annoprop_jax import optimizer
from annoprop_jax import profiling
from annoprop_jax import sharding
from annoprop_jax import target_network
from annoprop_jax.data import pipeline
from annoprop_jax.data import scenes
from annoprop_jax.models import attention

REMAT_POLICIES = ('none', 'full', 'dots')


def stream_config(batch_size, dataset='scenes', split='train', num_views=2, size=32,
                  scale=(0.25, 1.0), colour_jitter=0.0, grayscale=0.0, flip=True):
  """One input stream (annotation or bootstrap)."""
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
      **pipeline.UNDECODABLE_LIMITS,
  )


def scenes_config():
  """Sizes of the embedded scenes dataset and its difficulty knobs (``scenes.SceneSpec``)."""
  return dict(seed=0, num_train=20000, num_validation=2000, num_objects=10000,
              num_objects_validation=2000, **dataclasses.asdict(scenes.SceneSpec()))


def base_config(objective_name):
  """Defaults for an experiment of ``objective_name`` (see ``annoprop_jax.objectives``)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 1000
  config.microbatches = 1             # gradient accumulation: micro-batches per optimizer step
  # Bit-identical reruns and resumes. CPU and TPU are deterministic either way; on GPUs the
  # train step is compiled with XLA's deterministic ops (scatter-adds such as the box tokens'
  # gradient, and cuDNN/cuBLAS algorithms, without atomics), at a cost that
  # benchmarks/accelerator.py measures. False: XLA's fastest, run-to-run noise in the last bits.
  config.deterministic = True
  config.log_every = 50
  config.checkpoint_every = 500
  config.keep_checkpoints = 3         # the last N checkpoints are kept ...
  config.keep_checkpoint_every = 0    # ... plus every M-th step (0: none)
  config.init_from = config_dict.placeholder(str)   # params of another run's checkpoint dir
  config.profile_steps = ''           # 'A,B': a jax.profiler trace of train steps A-B for
                                      # TensorBoard's profile tab ('': none)
  config.model = dict(patch_size=8, width=128, depth=4, num_heads=4, mlp_ratio=4.0,
                      pool='cls', posemb='learned',
                      dtype='float32',     # compute dtype (bfloat16: mixed precision; params,
                                           # optimizer state and losses stay float32)
                      remat='none',        # recompute encoder blocks in the backward pass:
                                           # 'full', 'dots' (keep matmul outputs) or 'none'
                      # attention's implementation in the encoder, the annotation decoder and
                      # the text tower: 'auto' (cuDNN flash attention on NVIDIA GPUs in bf16,
                      # else 'plain'), 'plain' (Flax's), 'xla' (jax.nn.dot_product_attention's
                      # XLA path: scores and softmax in float32) or 'cudnn'; models/attention.py
                      attention='auto')
  config.objective = objectives.default_config(objective_name)
  config.optimizer = optimizer.default_config()
  config.target_network = target_network.default_config()
  config.data = dict(
      data_dir='~/annoprop_data',
      scenes=scenes_config(),
      annotation=stream_config(batch_size=64),
  )
  if objectives.is_bootstrapped(objective_name):
    # The AB recipe (METHOD.md): 4 views of RandomResizedCrop(0.05-1) and nothing else: no
    # colour jitter and no flips (a move encodes the source view's frame, not a mirrored target).
    config.data.bootstrap = stream_config(batch_size=32, num_views=4, scale=(0.05, 1.0),
                                          flip=False)
  config.mesh = sharding.default_config()   # axis sizes (-1: the rest) and partition rules
  config.evaluation = evaluator.default_config()   # probes on the frozen encoder
  return config


def apply_variant(config, variant):
  """``tiny``: a toy-size run for tests and smoke checks (seconds on a CPU)."""
  if not variant:
    return config
  if variant != 'tiny':
    raise ValueError(f'unknown config variant {variant!r}; known: tiny')
  config.model.update(patch_size=8, width=32, depth=1, num_heads=2)
  config.total_steps = 20
  config.log_every = 5
  config.checkpoint_every = 10
  config.optimizer.warmup_steps = 2
  config.data.scenes.update(resolution=32, num_train=256, num_validation=32, num_objects=64,
                            num_objects_validation=32)
  config.data.annotation.batch_size = 16
  for stream in ('annotation', 'bootstrap'):
    if stream in config.data:
      config.data[stream].views.size = 16
      config.data[stream].local_views.size = 8
      config.data[stream].update(num_threads=1, num_workers=0)
  objectives.tiny(config.objective)
  config.evaluation.visualize = False   # no pictures in TensorBoard at every toy evaluation
  if 'bootstrap' in config.data:
    config.data.bootstrap.batch_size = 8
  return config


ConfigError = errors.ConfigError   # the one error class, re-exported for config users

# Keys of earlier versions -> where they are now (a clear error, and old config.json files load).
MOVED_KEYS = {'batch_size': 'data.annotation.batch_size'}


def nearest_keys(config, key):
  """Valid dotted keys of ``config`` closest to the (possibly dotted) ``key``."""
  flat = _flat_keys(config)
  return difflib.get_close_matches(key, flat, n=3, cutoff=0.5) or sorted(
      k for k in flat if k.count('.') == key.count('.'))[:8]


def _flat_keys(config, prefix=''):
  keys = []
  for k, v in config.items():
    keys.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      keys.extend(_flat_keys(v, prefix + k + '.'))
  return keys


def validate(config):
  """Checks values that the schema's types cannot; raises ConfigError with one clear line."""
  def check(ok, message):
    if not ok:
      raise ConfigError(message)
  for old, new in MOVED_KEYS.items():
    check(old not in config, f'config key {old!r} moved to {new!r}')
  for key in ('total_steps', 'log_every', 'checkpoint_every', 'microbatches',
              'keep_checkpoints'):
    check(config[key] > 0, f'{key} must be positive, got {config[key]}')
  check(config.keep_checkpoint_every >= 0,
        f'keep_checkpoint_every must be >= 0 (0: none), got {config.keep_checkpoint_every}')
  check(config.model.width % config.model.num_heads == 0,
        f'model.width {config.model.width} is not divisible by model.num_heads '
        f'{config.model.num_heads}')
  check(config.model.pool in ('cls', 'mean'), f'model.pool must be cls or mean, got {config.model.pool!r}')
  check(config.model.dtype in ('float32', 'bfloat16'),
        f'model.dtype must be float32 or bfloat16, got {config.model.dtype!r}')
  check(config.model.remat in REMAT_POLICIES,
        f'model.remat must be one of {REMAT_POLICIES}, got {config.model.remat!r}')
  check(config.model.attention in attention.IMPLEMENTATIONS,
        f'model.attention must be one of {attention.IMPLEMENTATIONS}, got '
        f'{config.model.attention!r}')
  check(config.model.attention != 'cudnn' or config.model.dtype == 'bfloat16',
        "model.attention='cudnn' needs model.dtype='bfloat16' (cuDNN's flash attention takes "
        "bf16 or fp16 only)")
  profiling.parse_steps(config.profile_steps)
  sharding.validate_rules(config.mesh.rules)
  evaluator.validate(config.evaluation)
  objectives.base_method(config.objective.name)      # a known objective
  check(config.target_network.schedule in ('constant', 'cosine'),
        f'target_network.schedule must be constant or cosine, got {config.target_network.schedule!r}')
  check(0 <= config.target_network.rate <= 1,
        f'target_network.rate must be in [0, 1], got {config.target_network.rate}')
  check(config.target_network.horizon >= 0,
        f'target_network.horizon must be >= 0, got {config.target_network.horizon}')
  for name in ('annotation', 'bootstrap'):
    if name not in config.data:
      continue
    views = config.data[name].views
    for kind in ('views', 'local_views'):
      spec = config.data[name][kind]
      (low, high), (narrow, wide) = spec.scale, spec.ratio
      check(0 < low <= high <= 1, f'data.{name}.{kind}.scale must be 0 < min <= max <= 1 (area '
            f'fractions), got {tuple(spec.scale)}')
      check(0 < narrow <= wide, f'data.{name}.{kind}.ratio must be 0 < min <= max, got '
            f'{tuple(spec.ratio)}')
    check(views.size % config.model.patch_size == 0,
          f'data.{name}.views.size {views.size} is not divisible by model.patch_size '
          f'{config.model.patch_size}')
    stream = config.data[name]
    check(stream.batch_size > 0, f'data.{name}.batch_size must be positive, got '
          f'{stream.batch_size}')
    check(stream.caption_choice in ('first', 'random'),
          f'data.{name}.caption_choice must be first or random, got {stream.caption_choice!r}')
    check(stream.resize >= 0, f'data.{name}.resize must be >= 0, got {stream.resize}')
    check(stream.num_workers >= 0 or stream.num_workers == pipeline.AUTO,
          f'data.{name}.num_workers must be >= 0, or -1 (sized for the host), got '
          f'{stream.num_workers}')
    check(stream.num_threads >= 1 or stream.num_threads == pipeline.AUTO,
          f'data.{name}.num_threads must be >= 1, or -1 (sized for the host), got '
          f'{stream.num_threads}')
  objectives.validate(config)
  return config


# What a run may change between its starts (the rest of the config is what its checkpoints
# were trained with): where data and logs are, how often to log, save and probe, the mesh
# (checkpoints restore onto another one) and the host-side reading of the data.
FREE_TO_CHANGE = ('deterministic', 'log_every', 'checkpoint_every', 'keep_checkpoints', 'keep_checkpoint_every',
                  'init_from', 'profile_steps', 'mesh', 'evaluation', 'data.data_dir', 'data.*.num_threads',
                  'data.*.prefetch', 'data.*.max_undecodable_*', 'model.remat',
                  'model.attention')


def resume_identity(config):
  """{dotted key: value} of every config value a resumed run must share with its checkpoint:
  all keys but ``FREE_TO_CHANGE`` (so a key added later counts, the safe side)."""
  free = lambda key: any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(key, p + '.*')
                         for p in FREE_TO_CHANGE)
  flat = {}
  def walk(node, prefix):
    for key, value in node.items():
      dotted = prefix + key
      if free(dotted):
        continue
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, dotted + '.')
      else:
        flat[dotted] = value
  walk(config, '')
  return json_values(flat)


def json_values(tree):
  """``tree`` as JSON gives it back (tuples -> lists), so saved and live values compare."""
  return json.loads(json.dumps(tree, default=str))


def changed_keys(saved, current):
  """['key: saved -> current', ...] for the keys both know whose values differ (a key that
  only one version of the code has is not a change of this run's config)."""
  return [f'{key}: {saved[key]!r} -> {current[key]!r}'
          for key in sorted(saved.keys() & current.keys()) if saved[key] != current[key]]


def encoder_config(config):
  """Keyword arguments of the ViT encoder, with the training resolution filled in."""
  return dict(**config.model.to_dict(), image_size=config.data.annotation.views.size)


def config_module(file):
  """Imports a config file as a module (config files build on each other's recipes)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  name = '_annoprop_config_' + os.path.splitext(os.path.basename(file))[0]
  spec = importlib.util.spec_from_file_location(name, file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(path):
  """Loads ``configs/FILE.py[:variant]`` the way ``--config`` does (for scripts and tests)."""
  file, _, variant = path.partition(':')
  module = config_module(file)
  config = module.get_config(variant) if variant else module.get_config()
  config.lock()
  return config


def load_run(workdir):
  """The config a run wrote to ``WORKDIR/config.json``, on its method's schema (so tuples stay
  tuples and unknown keys are errors), locked."""
  from annoprop_jax import storage  # pylint: disable=g-import-not-at-top
  path = storage.path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: is {str(workdir)!r} a training workdir?')
  saved = json.loads(path.read_text())
  config = base_config(saved['objective']['name'])
  for old, new in MOVED_KEYS.items():
    if old in saved:
      *parents, last = new.split('.')
      node = saved
      for part in parents:
        node = node.setdefault(part, {})
      node[last] = saved.pop(old)
  _merge(config, saved, '')
  config.lock()
  return config


def _as_tuples(value):
  return tuple(map(_as_tuples, value)) if isinstance(value, list) else value


def _merge(config, saved, prefix):
  for key, value in saved.items():
    if key not in config:
      raise ConfigError(f'config.json has {prefix}{key}, which this version does not know')
    if isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _merge(config[key], value, f'{prefix}{key}.')
    elif isinstance(config[key], tuple) and isinstance(value, list):
      config[key] = _as_tuples(value)
    else:
      config[key] = value


def paper_scale(config, annotation_images, annotation_views, bootstrap_images=1024,
                views_seen=800_000_000):
  """METHOD.md's recipe: ViT-S/16 at 224 px in bf16, 4 bootstrap views of RandomResizedCrop
  0.05-1 without colour jitter, 8192 views per step, AdamW 1e-3 with warm-up and cosine decay;
  the streams' reading sized for the host (worker processes and threads: -1)."""
  from annoprop_jax.models import vit  # pylint: disable=g-import-not-at-top
  config.model.update(**vit.vit_size('S/16'), dtype='bfloat16')
  config.data.annotation.batch_size = annotation_images
  config.data.annotation.views.update(num=annotation_views, size=224)
  config.data.annotation.local_views.size = 96
  config.data.bootstrap.update(batch_size=bootstrap_images)
  config.data.bootstrap.views.update(num=4, size=224, scale=(0.05, 1.0), colour_jitter=0.0,
                                     grayscale=0.0)
  for stream in (config.data.annotation, config.data.bootstrap):   # sized for the host
    stream.update(num_workers=pipeline.AUTO, num_threads=pipeline.AUTO)
  views_per_step = annotation_images * annotation_views + bootstrap_images * 4
  config.total_steps = views_seen // views_per_step
  config.log_every = 100
  config.checkpoint_every = 2000
  config.optimizer.update(learning_rate=1e-3, warmup_steps=5000, min_learning_rate=1e-6)
  config.objective.bootstrap.decoder.update(width=384, depth=4, num_heads=6)
  config.data.data_dir = '~/tensorflow_datasets'
  return config
