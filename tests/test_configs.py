"""Every shipped config loads, validates and builds its objective; paper configs are paper-size."""
import glob
import json
import os

import pytest

from annoprop_jax import configuration
from annoprop_jax import objectives
from conftest import REPO, tiny_config

CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '**', '*.py'), recursive=True))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
@pytest.mark.parametrize('variant', ['', 'tiny'])
def test_config_validates_and_builds(path, variant):
  config = configuration.load(path + (':' + variant if variant else ''))
  configuration.validate(config)
  objectives.build(config.objective, configuration.encoder_config(config))


@pytest.mark.parametrize('path', [p for p in CONFIGS if '/paper/' in p],
                         ids=lambda p: os.path.basename(p))
def test_paper_configs_are_paper_size(path):
  config = configuration.load(path)
  assert (config.model.width, config.model.depth, config.model.patch_size) == (384, 12, 16)
  assert config.model.dtype == 'bfloat16' and config.data.annotation.views.size == 224
  views = sum(config.data[n].batch_size * (config.data[n].views.num
                                           + config.data[n].local_views.num)
              for n in ('annotation', 'bootstrap') if n in config.data)
  # SLIP and SiLC read their second loss's views for a subset of the images (Table 7: SimCLR
  # 2,048 x 2, DINO 512 x 10 beside CLIP's 4,096; SiLC's CLIP view is DINO's first global view).
  views = {'slip_cc12m.py': 4096 + 2048 * 2, 'silc_cc12m.py': 4096 + 512 * 9}.get(
      os.path.basename(path), views)
  assert config.total_steps == 800_000_000 // views          # 800M views seen


# Table 7 of the preprint (docs/method.md, "Every method's recipe in the paper"), typed from the
# paper. Its AB column: the annotation stream is the base's (half its images, its views and
# augmentations), the bootstrap stream an eighth of its images x 4 views of RandomResizedCrop
# 0.05-1 and nothing else; warm-ups in the base's steps (10 ImageNet epochs of 1,281,167 images;
# CLIP: one CC12M epoch of 12,423,374 pairs).
TABLE_7 = {
    'dino': dict(batch=1024, views=2, local_views=8, scale=(0.4, 1.0), local_scale=(0.05, 0.4),
                 flip=True, colour_jitter=True, warmup_steps=12511, weight_decay=(0.04, 0.4),
                 grad_clip_norm=1.0, ema=(0.004, 'cosine'), b2=0.999),
    'simclr': dict(batch=4096, views=2, local_views=0, scale=(0.08, 1.0), flip=True,
                   colour_jitter=True, warmup_steps=3127, weight_decay=(0.04, 0.4),
                   grad_clip_norm=0.0, ema=(0.004, 'cosine'), b2=0.999),
    'clip': dict(batch=8192, views=1, local_views=0, scale=(0.5, 1.0), flip=False,
                 colour_jitter=False, warmup_steps=1516, weight_decay=(0.1, 0.1),
                 grad_clip_norm=0.0, ema=(0.004, 'constant'), b2=0.98, ab_weight=0.5),
}
PAPER_RECIPES = {'ab_dino_coco': 'dino', 'ab_dino_epic': 'dino', 'ab_simclr_coco': 'simclr',
                 'ab_simclr_epic': 'simclr', 'ab_clip_cc12m': 'clip'}


@pytest.mark.parametrize('name', sorted(PAPER_RECIPES))
def test_paper_configs_follow_table_7(name):
  row = TABLE_7[PAPER_RECIPES[name]]
  config = configuration.load(os.path.join(REPO, 'configs', 'paper', name + '.py'))
  annotation, bootstrap = config.data.annotation, config.data.bootstrap
  assert annotation.batch_size == row['batch'] // 2
  assert (annotation.views.num, annotation.local_views.num) == (row['views'], row['local_views'])
  assert tuple(annotation.views.scale) == row['scale']
  if row['local_views']:
    local = annotation.local_views
    assert tuple(local.scale) == row['local_scale'] and local.size == 96
    assert (local.flip, local.colour_jitter, local.grayscale) == (
        annotation.views.flip, annotation.views.colour_jitter, annotation.views.grayscale)
  assert annotation.views.flip == row['flip']
  assert (annotation.views.colour_jitter > 0) == row['colour_jitter']
  assert bootstrap.batch_size == row['batch'] // 8 and bootstrap.views.num == 4
  assert tuple(bootstrap.views.scale) == (0.05, 1.0) and not bootstrap.views.flip
  assert bootstrap.views.colour_jitter == bootstrap.views.grayscale == 0
  opt = config.optimizer
  assert (opt.learning_rate, opt.warmup_steps, opt.b2) == (1e-3, row['warmup_steps'], row['b2'])
  assert (opt.weight_decay, opt.weight_decay_end) == row['weight_decay']
  assert opt.grad_clip_norm == row['grad_clip_norm']
  assert (config.target_network.rate, config.target_network.schedule) == row['ema']
  # Loss ratio 1.0; CLIP's loss here is the mean of its two directions, Alg. 2's their sum.
  assert config.objective.bootstrap.weight == row.get('ab_weight', 1.0)


def test_the_paper_clip_config_is_table_7s_clip_column():
  row = TABLE_7['clip']
  config = configuration.load(os.path.join(REPO, 'configs', 'paper', 'clip_cc12m.py'))
  annotation = config.data.annotation
  assert config.objective.name == 'clip' and 'bootstrap' not in config.data
  assert (annotation.batch_size, annotation.views.num, annotation.local_views.num) == (
      row['batch'], row['views'], row['local_views'])
  assert tuple(annotation.views.scale) == row['scale'] and annotation.dataset == 'cc12m'
  assert annotation.views.flip == row['flip']
  assert (annotation.views.colour_jitter > 0) == row['colour_jitter']
  opt = config.optimizer
  assert (opt.learning_rate, opt.warmup_steps, opt.b2) == (1e-3, row['warmup_steps'], row['b2'])
  assert (opt.weight_decay, opt.weight_decay_end) == row['weight_decay']
  assert opt.grad_clip_norm == row['grad_clip_norm']


# The baselines' columns of Table 7 (no AB variant: the whole batch is the annotation stream).
BASELINES = {
    'mae_coco': dict(batch=8192, scale=(0.2, 1.0), flip=True, warmup_steps=10_000,
                     learning_rate=2.4e-3, weight_decay=(0.05, 0.05), b2=0.95, ema=None),
    'ijepa_coco': dict(batch=4096, scale=(0.3, 1.0), flip=False, warmup_steps=12511,
                       learning_rate=1e-3, weight_decay=(0.04, 0.4), b2=0.999,
                       ema=(0.004, 'cosine')),
}


# SLIP's and SiLC's: CLIP's column (4,096 images x 1 view of 0.5-1; SiLC's CLIP view is DINO's
# first global view, 0.4-1) beside SimCLR on half the images or DINO on an eighth.
CAPTION_BASELINES = {
    'slip_cc12m': dict(views=1, subset=('simclr_images', 2048), local=(2, 224, (0.08, 1.0)),
                       scale=(0.5, 1.0), ema=None),
    'silc_cc12m': dict(views=2, subset=('distillation_images', 512), local=(8, 96, (0.05, 0.4)),
                       scale=(0.4, 1.0), ema=(0.004, 'constant')),
}


@pytest.mark.parametrize('name', sorted(CAPTION_BASELINES))
def test_paper_caption_baseline_configs_follow_table_7(name):
  row = CAPTION_BASELINES[name]
  config = configuration.load(os.path.join(REPO, 'configs', 'paper', name + '.py'))
  annotation, local = config.data.annotation, config.data.annotation.local_views
  assert 'bootstrap' not in config.data and annotation.dataset == 'cc12m'
  assert (annotation.batch_size, annotation.views.num) == (4096, row['views'])
  assert tuple(annotation.views.scale) == row['scale'] and not annotation.views.flip
  assert annotation.views.colour_jitter == annotation.views.grayscale == 0
  key, images = row['subset']
  assert config.objective[key] == images
  assert (local.num, local.size, tuple(local.scale)) == row['local']
  assert local.flip and local.colour_jitter > 0 and local.grayscale > 0
  opt = config.optimizer
  assert (opt.learning_rate, opt.warmup_steps, opt.b2, opt.grad_clip_norm) == (1e-3, 1516, 0.98,
                                                                               0.0)
  assert (opt.weight_decay, opt.weight_decay_end) == (0.1, 0.1)
  if row['ema']:
    assert (config.target_network.rate, config.target_network.schedule) == row['ema']


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_paper_baseline_configs_follow_table_7(name):
  row = BASELINES[name]
  config = configuration.load(os.path.join(REPO, 'configs', 'paper', name + '.py'))
  annotation = config.data.annotation
  assert 'bootstrap' not in config.data
  assert (annotation.batch_size, annotation.views.num, annotation.local_views.num) == (
      row['batch'], 1, 0)
  assert tuple(annotation.views.scale) == row['scale'] and annotation.views.flip == row['flip']
  assert annotation.views.colour_jitter == annotation.views.grayscale == 0
  opt = config.optimizer
  assert (opt.learning_rate, opt.warmup_steps, opt.b2, opt.grad_clip_norm) == (
      row['learning_rate'], row['warmup_steps'], row['b2'], 0.0)
  assert (opt.weight_decay, opt.weight_decay_end) == row['weight_decay']
  if row['ema']:
    assert (config.target_network.rate, config.target_network.schedule) == row['ema']


def test_unknown_key_in_a_config_is_an_error():
  config = configuration.load(os.path.join(REPO, 'configs', 'ab_dino_scenes.py'))
  with pytest.raises(AttributeError):
    config.objective.bootstrap.gama = 0.5


@pytest.mark.parametrize('base,ab', [('simclr_scenes', 'ab_simclr_scenes'),
                                     ('dino_scenes', 'ab_dino_scenes'),
                                     ('clip_scenes', 'ab_clip_scenes')])
def test_ab_configs_keep_the_base_augmentations_and_none_on_bootstrap_views(base, ab):
  """docs/method.md: annotation data uses the base method's augmentations, bootstrap views none."""
  base_config = configuration.load(os.path.join(REPO, 'configs', base + '.py'))
  ab_config = configuration.load(os.path.join(REPO, 'configs', ab + '.py'))
  assert ab_config.data.annotation.views == base_config.data.annotation.views
  bootstrap = ab_config.data.bootstrap.views
  assert (bootstrap.colour_jitter, bootstrap.hue_jitter, bootstrap.grayscale) == (0, 0, 0)
  assert not bootstrap.flip       # a move encodes the source frame, not a mirrored target


def test_a_key_the_schema_lacks_is_an_error_naming_the_nearest(tmp_path):
  config = configuration.base_config('ab_dino')
  configuration.validate(config)
  config.batch_size = 48          # a config file assigns a key the schema does not have
  with pytest.raises(configuration.ConfigError, match=r"config key 'batch_size' does not exist; "
                     r"nearest: .*data\.annotation\.batch_size"):
    configuration.validate(config)
  config.data.bootstrap.views.colour = 0.4
  del config['batch_size']
  with pytest.raises(configuration.ConfigError, match="'data.bootstrap.views.colour' does not "
                     "exist; nearest: data.bootstrap.views.colour_jitter"):
    configuration.validate(config)
  # A run's config.json with a key this version does not know is refused in one line.
  del config.data.bootstrap.views['colour']
  saved = json.loads(config.to_json())
  saved['batch_size'] = 48
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  with pytest.raises(configuration.ConfigError, match='config.json has batch_size, which this '
                     'version does not know'):
    configuration.load_run(str(tmp_path))


@pytest.mark.parametrize('value', ['5', '4,2', '0,3', 'a,b', '1,2,3'])
def test_profile_steps_must_be_two_ordered_steps(value):
  config = tiny_config('dino_scenes').unlock()
  config.profile_steps = '3,5'
  configuration.validate(config)
  config.profile_steps = value
  with pytest.raises(configuration.ConfigError, match='profile_steps must be "A,B"'):
    configuration.validate(config)


def test_a_variant_string_is_the_same_config_as_its_overrides():
  path = os.path.join(REPO, 'configs', 'ab_dino_scenes.py')
  got = configuration.load(path + ':model=B/16,res=64,views=3,local=2,batch=128,steps=7,seed=3')
  want = configuration.load(path).unlock()
  want.model.update(width=768, depth=12, num_heads=12, mlp_ratio=4.0, patch_size=16)
  want.data.annotation.views.update(size=64, num=3)
  want.data.bootstrap.views.size = 64
  want.data.annotation.local_views.num = 2
  want.data.annotation.batch_size = 128            # 32 -> 128, and the bootstrap stream's 16
  want.data.bootstrap.batch_size = 64              # keeps its ratio: 64
  want.update(total_steps=7, seed=3)
  assert got.to_dict() == want.to_dict()
  configuration.validate(got)
  # 'tiny' composes with the others, in the order written; giant's MLP is 6144 wide.
  tiny = configuration.load(path + ':tiny,model=g/14,res=28')
  assert (tiny.model.width, tiny.model.depth, tiny.model.patch_size) == (1408, 40, 14)
  assert int(tiny.model.width * tiny.model.mlp_ratio) == 6144
  assert tiny.total_steps == configuration.load(path + ':tiny').total_steps == 20


@pytest.mark.parametrize('variant, message', [
    ('huge', "unknown config variant 'huge'; accepted (KEY=VALUE, comma-separated): tiny, "),
    ('tiny=1', "unknown config variant 'tiny=1'"),
    ('res', "unknown config variant 'res'"),
    ('model=X/16', 'config variant model=X/16: unknown ViT size'),
    ('model=S/0', 'config variant model=S/0: unknown ViT size'),
    ('batch=0', "config variant batch='0': batch wants an integer >= 1"),
    ('local=two', "config variant local='two': local wants an integer >= 0"),
    ('control=weight0', 'config variant control=weight0: dino is not an annotation-'),
])
def test_a_bad_variant_is_one_line_naming_what_is_accepted(variant, message):
  with pytest.raises(configuration.ConfigError) as e:
    configuration.load(os.path.join(REPO, 'configs', 'dino_scenes.py') + ':' + variant)
  assert str(e.value).startswith(message) and '\n' not in str(e.value)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_each_config_lists_the_variants_it_accepts(path):
  doc = configuration.config_module(path).__doc__
  ab = objectives.is_bootstrapped(configuration.load(path).objective.name)
  accepted = [k for k in configuration.VARIANTS if k != 'control' or ab]
  line = doc[doc.index('Variants'):].split('.\n')[0]
  assert [k for k in configuration.VARIANTS if k in line] == accepted, line
