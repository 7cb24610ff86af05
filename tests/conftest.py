"""8 simulated CPU devices for every test, a tiny scenes dataset shared by the session."""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(name='dino_scenes', **overrides):
  from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top
  config = configuration.load(os.path.join(REPO, 'configs', f'{name}.py:tiny'))
  return override(config, **overrides)


def override(node, **overrides):
  """Sets dotted keys ('a.b.c') of a ConfigDict; returns it."""
  for key, value in overrides.items():
    parent = node
    *path, leaf = key.split('.')
    for part in path:
      parent = parent[part]
    parent[leaf] = value
  return node


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """The tiny variant's scenes dataset, written once per test session."""
  from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('data'))
  config = tiny_config(**{'data.data_dir': data_dir})
  pipeline.dataset_directory(config, 'scenes')
  return data_dir
