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
  views = (config.data.annotation.batch_size * config.data.annotation.views.num
           + config.data.bootstrap.batch_size * config.data.bootstrap.views.num)
  assert views == 8192
  assert config.data.bootstrap.views.num == 4 and config.data.bootstrap.views.colour_jitter == 0
  assert tuple(config.data.bootstrap.views.scale) == (0.05, 1.0)
  assert config.data.annotation.views.size == 224


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
