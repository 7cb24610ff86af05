"""The schema every experiment config starts from, its validation and its variants.

A config file in ``configs/`` calls :func:`base_config` with its method and overrides fields;
every key that exists is listed here, so a misspelt key (in a file or on the command line) is an
error that names the nearest valid keys. Each block's defaults and checks live with what owns
them (the model: ``vit.EncoderConfig``; a stream: ``stream_spec``; the method: its module; the
evaluation: ``evaluation.settings``); this module puts them together and checks what spans
blocks.
"""
import contextlib
import dataclasses
import difflib
import fnmatch
import importlib.util
import json
import os

import ml_collections
from ml_collections import config_dict

from annoprop_jax import errors
from annoprop_jax import objectives
from annoprop_jax import optimizer
from annoprop_jax import profiling
from annoprop_jax import sharding
from annoprop_jax import storage
from annoprop_jax import target_network
from annoprop_jax import wandb_mirror
from annoprop_jax.data import scenes
from annoprop_jax.data import stream_spec
from annoprop_jax.evaluation import settings as evaluation_settings
from annoprop_jax.models import vit

ConfigError = errors.ConfigError   # the one error class, re-exported for config users


def scenes_config():
  """Sizes of the embedded scenes dataset and its difficulty knobs (``scenes.SceneSpec``)."""
  return dict(seed=0, num_train=20000, num_validation=2000, num_objects=10000,
              num_objects_validation=2000, **dataclasses.asdict(scenes.SceneSpec()))


def model_config(**fields):
  """The ``model`` block: ``vit.EncoderConfig``'s fields (documented there) but the resolution,
  which the annotation stream's views set."""
  return {k: v for k, v in dataclasses.asdict(vit.EncoderConfig(**fields)).items()
          if k != 'image_size'}


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
  config.model = model_config(patch_size=8, width=128, depth=4, num_heads=4)   # the demo ViT
  config.objective = objectives.default_config(objective_name)
  config.optimizer = optimizer.default_config()
  config.target_network = target_network.default_config()
  config.data = dict(data_dir='~/annoprop_data', scenes=scenes_config(),
                     annotation=stream_spec.default_block(batch_size=64))
  if 'bootstrap' in objectives.streams(objective_name):
    # The AB recipe: 4 views of RandomResizedCrop(0.05-1) and nothing else: no colour jitter
    # and no flips (a move encodes the source view's frame, not a mirrored target).
    config.data.bootstrap = stream_spec.default_block(batch_size=32, num_views=4,
                                                      scale=(0.05, 1.0), flip=False)
  config.mesh = sharding.default_config()   # axis sizes (-1: the rest) and partition rules
  config.evaluation = evaluation_settings.default_config()   # probes on the frozen encoder
  config.wandb = wandb_mirror.default_config()   # Weights & Biases (off: project '')
  return config


def streams(config):
  """The ``data`` blocks the config's objective reads."""
  return {name: config.data[name] for name in objectives.streams(config.objective.name)}


def views_per_step(config):
  """The views of every stream one step of ``config`` reads, each counted once (the paper's
  accounting: ``total_steps`` = views seen / this)."""
  views = objectives.base_method(config.objective.name).annotation_views(config)
  for name, stream in streams(config).items():
    if name != 'annotation':
      views += stream.batch_size * (stream.views.num + stream.local_views.num)
  return views


def _tiny(config):
  """A toy-size run for tests and smoke checks (seconds on a CPU)."""
  grid = objectives.base_method(config.objective.name).tiny_grid   # patches per side of a view
  config.model.update(patch_size=16 // grid, width=32, depth=1, num_heads=2)
  config.update(total_steps=20, log_every=5, checkpoint_every=10)
  config.optimizer.warmup_steps = 2
  config.data.scenes.update(resolution=32, num_train=256, num_validation=32, num_objects=64,
                            num_objects_validation=32)
  for name, stream in streams(config).items():
    stream.update(batch_size=16 if name == 'annotation' else 8, num_threads=1, num_workers=0)
    stream.views.size = 16
    stream.local_views.size = 8
  objectives.tiny(config.objective)
  config.evaluation.visualize = False   # no pictures in TensorBoard at every toy evaluation
  return config



def _count(key, text, minimum=1):
  """``text`` as an integer of at least ``minimum``, or a ConfigError naming the variant."""
  try:
    value = int(text)
  except ValueError:
    value = None
  if value is None or value < minimum:
    raise ConfigError(f'config variant {key}={text!r}: {key} wants an integer >= {minimum}')
  return value


def _scaled_batches(config, batch):
  """The annotation stream's batch ``batch``; every other stream keeps its ratio to it."""
  ratio = batch / config.data.annotation.batch_size
  for name, stream in streams(config).items():
    scaled = max(1, round(stream.batch_size * ratio))
    stream.batch_size = batch if name == 'annotation' else scaled


def _model(config, name):
  try:
    config.model.update(**vit.vit_size(name))
  except ValueError as e:
    raise ConfigError(f'config variant model={name}: {e}') from None


# The controls of an AB run: the same run without the AB loss, or with a decoder that never
# sees the box (one constant move).
CONTROLS = {'weight0': ('weight', 0.0), 'noaction': ('actions', False)}


def _control(config, name):
  if not objectives.is_bootstrapped(config.objective.name):
    raise ConfigError(f'config variant control={name}: {config.objective.name} is not an '
                      'annotation-bootstrapping method')
  if name not in CONTROLS:
    raise ConfigError(f'config variant control={name}: use one of {", ".join(CONTROLS)}')
  key, value = CONTROLS[name]
  config.objective.bootstrap[key] = value


# Every config's variants: configs/FILE.py:KEY=VALUE,KEY=VALUE,... ('tiny' takes no value);
# applied in the order written. {key: (how to apply it, what it means)}.
VARIANTS = {
    'tiny': (lambda config, _: _tiny(config), 'toy size for tests and smoke runs'),
    'model': (_model, 'ViT size by name, SIZE/PATCH (SIZE in ' + ', '.join(vit.VIT_SIZES) + ')'),
    'res': (lambda c, v: [s.views.update(size=_count('res', v))
                          for s in streams(c).values()],
            "every stream's view resolution in pixels"),
    'local': (lambda c, v: c.data.annotation.local_views.update(num=_count('local', v, 0)),
              "local views (multi-crop) of the annotation stream's images"),
    'views': (lambda c, v: c.data.annotation.views.update(num=_count('views', v)),
              "the annotation stream's (global) views per image"),
    'batch': (lambda c, v: _scaled_batches(c, _count('batch', v)),
              'annotation images per step; the other streams keep their ratio to it'),
    'steps': (lambda c, v: c.update(total_steps=_count('steps', v)),
              'total optimizer steps'),
    'seed': (lambda c, v: c.update(seed=_count('seed', v, 0)), 'the run seed'),
    'control': (_control, 'AB configs: weight0 (no AB loss) or noaction (the decoder never '
                'sees the box)'),
}


def variant_help():
  """The accepted variants, one per line (config docstrings and errors point here)."""
  return '\n'.join(f'  {key + ("" if key == "tiny" else "=VALUE"):<14}{doc}'
                    for key, (_, doc) in VARIANTS.items())


def apply_variant(config, variant):
  """``config`` changed by the variant string ``variant`` (``configs/FILE.py:VARIANT``): comma-
  separated ``KEY=VALUE`` items of ``VARIANTS`` (and ``tiny``), e.g.
  ``model=S/16,res=224,batch=256``; an unknown key or a bad value is a ConfigError naming what
  is accepted."""
  for item in filter(None, variant.split(',')):
    key, sep, value = item.partition('=')
    if key not in VARIANTS or (key == 'tiny') == bool(sep):
      raise ConfigError(f'unknown config variant {item!r}; accepted (KEY=VALUE, comma-separated):'
                        f' {", ".join(k if k == "tiny" else k + "=" for k in VARIANTS)}')
    VARIANTS[key][0](config, value)
  return config


def unknown_key(config, key):
  """The ConfigError for a dotted ``key`` that ``config`` does not have, naming the three
  nearest keys it has (by the last part of the name first: 'batch_size' ->
  'data.annotation.batch_size')."""
  similar = lambda a, b: difflib.SequenceMatcher(None, a, b).ratio()
  leaf = lambda k: k.rsplit('.', 1)[-1]
  nearest = sorted(_flat_keys(config), key=lambda k: (-similar(leaf(key), leaf(k)),
                                                      -similar(key, k), k))
  return ConfigError(f'config key {key!r} does not exist; nearest: {", ".join(nearest[:3])}')


def override(config, settings):
  """Sets each (dotted key, value) of ``settings`` on the unlocked ``config`` (a tuple field
  keeps its type); a key the config does not have is a ConfigError naming the nearest."""
  for key, value in settings:
    node, (*path, leaf) = config, key.split('.')
    try:
      for part in path:
        node = node[part]
      if leaf not in node:
        raise KeyError(leaf)
    except (KeyError, TypeError):
      raise unknown_key(config, key) from None
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise ConfigError(f'config key {key!r} is a block; set one of its keys')
    if isinstance(node[leaf], tuple) and not isinstance(value, (tuple, list)):
      raise ConfigError(f'config key {key!r} wants a tuple, got {value!r}')
    try:
      node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], tuple) else value
    except (TypeError, ValueError) as e:
      raise ConfigError(f'config key {key!r} cannot be {value!r}: {e}') from None
  return config


def _flat_keys(config, prefix=''):
  keys = []
  for k, v in config.items():
    keys.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      keys.extend(_flat_keys(v, prefix + k + '.'))
  return keys


@contextlib.contextmanager
def _block(prefix):
  """A ValueError of a block's own checks, as a ConfigError naming its keys."""
  try:
    yield
  except ValueError as e:
    raise ConfigError(f'{prefix}{e}') from None


def _check_keys(config):
  """ConfigError for a key that the schema of the config's objective does not have (a config
  file can add one to the open ConfigDict)."""
  schema = base_config(config.objective.name)
  known = set(_flat_keys(schema))
  for key in _flat_keys(config):
    if key not in known:
      raise unknown_key(schema, key)


def validate(config):
  """Checks the keys against the schema and the values that the schema's types cannot; raises
  ConfigError with one clear line."""
  objectives.base_method(config.objective.name)      # a known objective
  _check_keys(config)
  for key in ('total_steps', 'log_every', 'checkpoint_every', 'microbatches',
              'keep_checkpoints'):
    if config[key] <= 0:
      raise ConfigError(f'{key} must be positive, got {config[key]}')
  if config.keep_checkpoint_every < 0:
    raise ConfigError(f'keep_checkpoint_every must be >= 0 (0: none), got '
                      f'{config.keep_checkpoint_every}')
  profiling.parse_steps(config.profile_steps)
  sharding.validate_rules(config.mesh.rules)
  evaluation_settings.validate(config.evaluation)
  if (evaluation_settings.ZERO_SHOT in config.evaluation.probes
      and not hasattr(objectives.base_method(config.objective.name), 'embed_captions')):
    raise ConfigError(f'evaluation.probes: zero_shot needs a caption method (clip, ab_clip, '
                      f'slip, silc), not {config.objective.name}')
  target_network.validate(config.target_network)
  optimizer.validate(config.optimizer)
  wandb_mirror.validate(config.wandb)
  with _block('model.'):
    encoder = encoder_config(config)
  for name, block in streams(config).items():
    with _block(f'data.{name}.'):
      spec = stream_spec.StreamSpec.from_config(block)
    if spec.views.size % encoder.patch_size:
      raise ConfigError(f'data.{name}.views.size {spec.views.size} is not divisible by '
                        f'model.patch_size {encoder.patch_size}')
  objectives.validate(config)
  return config


# What a run may change between its starts (the rest of the config is what its checkpoints
# were trained with): where data and logs are, how often to log, save and probe, the mesh
# (checkpoints restore onto another one) and the host-side reading of the data.
FREE_TO_CHANGE = ('deterministic', 'log_every', 'checkpoint_every', 'keep_checkpoints',
                  'keep_checkpoint_every', 'init_from', 'profile_steps', 'mesh', 'evaluation',
                  'wandb',
                  'data.data_dir', 'data.*.num_threads', 'data.*.prefetch',
                  'data.*.max_undecodable_*', 'model.remat', 'model.attention')


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
  """The ViT's ``EncoderConfig``: the ``model`` block at the annotation views' resolution."""
  return vit.EncoderConfig(**config.model.to_dict(), image_size=config.data.annotation.views.size)


def config_module(file):
  """Imports a config file as a module (config files build on each other's recipes)."""
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
  path = storage.path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: is {str(workdir)!r} a training workdir?')
  saved = json.loads(path.read_text())
  config = base_config(saved['objective']['name'])
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


# One ImageNet epoch, the unit of Table 7's warm-ups.
IMAGENET_TRAIN_IMAGES = 1_281_167


def paper_scale(config, annotation_images, annotation_views, warmup_steps, bootstrap_images=0,
                local_views=0, views_seen=800_000_000):
  """The paper's recipe around a method (docs/method.md, Table 7): ViT-S/16 at 224 px in bf16,
  ``local_views`` of 96 px beside the annotation views (with their augmentations), in an AB
  config 4 bootstrap views of RandomResizedCrop 0.05-1 without colour jitter or flips, AdamW 1e-3
  with ``warmup_steps`` and cosine decay over ``views_seen`` views (all views of both streams);
  the streams' reading sized for the host (worker processes and threads: -1)."""
  config.model.update(**vit.vit_size('S/16'), dtype='bfloat16')
  annotation = config.data.annotation
  annotation.batch_size = annotation_images
  annotation.views.update(num=annotation_views, size=224)
  annotation.local_views.update(num=local_views, size=96)
  if 'bootstrap' in config.data:
    config.data.bootstrap.update(batch_size=bootstrap_images)
    config.data.bootstrap.views.update(num=4, size=224, scale=(0.05, 1.0), colour_jitter=0.0,
                                       grayscale=0.0, flip=False)
    config.objective.bootstrap.decoder.update(width=384, depth=4, num_heads=6)
  for stream in streams(config).values():
    stream.update(num_workers=stream_spec.AUTO, num_threads=stream_spec.AUTO)
  config.total_steps = views_seen // views_per_step(config)
  config.log_every = 100
  config.checkpoint_every = 2000
  config.optimizer.update(learning_rate=1e-3, warmup_steps=warmup_steps, min_learning_rate=1e-6)
  config.data.data_dir = '~/tensorflow_datasets'
  return config
