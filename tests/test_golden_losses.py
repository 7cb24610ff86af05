"""Golden losses: every shipped config's ``:tiny`` variant, 5 steps on one CPU device over fixed
synthetic batches, bit for bit against ``tests/golden_losses.json``; and one short probe on the
trained DINO encoder. (Meshes are compared with one device in test_scale_out.py.)

A change that claims to keep behaviour (a refactoring) must leave every number alone: run
``python -m pytest -m golden`` (1.5 minutes on 2 cores; the default run includes it). After an
intended change, or under another jax/jaxlib version or CPU model (elsewhere the numbers are
compared to a relative 1e-4, 1e-2 in bfloat16: another CPU's rounding moves the paper configs'
bfloat16 losses by up to 1.2e-3 in 5 steps), write them anew and say why in the commit:

  python tests/test_golden_losses.py --record
"""
import glob
import json
import os
import platform
import sys

if __name__ == '__main__':      # --record: the suite's 8 CPU devices and XLA flags
  import conftest  # pylint: disable=unused-import

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import objectives  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax.data import boxes  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax.evaluation import encoder  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax.evaluation import probes  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, 'tests', 'golden_losses.json')
CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(
    os.path.join(REPO, 'configs', '**', '*.py'), recursive=True))
STEPS = 5
pytestmark = [pytest.mark.golden, pytest.mark.slow]   # slow: run first


def _random_boxes(rng, shape):
  """Valid (ymin, xmin, ymax, xmax) boxes of sides 0.3-0.5."""
  corner = rng.uniform(0, 0.5, shape + (2,))
  return np.concatenate([corner, corner + rng.uniform(0.3, 0.5, shape + (2,))], -1).astype(
      np.float32)


def synthetic_batch(stream_config, batch_size, num_classes, seed):
  """A batch with the pipeline's keys, shapes and dtypes, and consistent boxes and moves."""
  rng = np.random.default_rng(seed)
  shapes = pipeline.batch_shapes(stream_config, batch_size)
  (b, v, s, _, _), m = shapes['images'][0], stream_config.max_objects
  view_boxes = _random_boxes(rng, (b, v))
  flips = rng.random((b, v)) < 0.5
  labels = np.where(np.arange(m) < rng.integers(1, min(m, 3) + 1, (b, 1)),
                    rng.integers(0, num_classes, (b, m)), -1).astype(np.int32)
  letters = rng.integers(ord('a'), ord('z') + 1, shapes['caption'][0]).astype(np.uint8)
  length = rng.integers(8, shapes['caption'][0][1] + 1, (b, 1))
  batch = {
      'images': rng.integers(0, 256, (b, v, s, s, 3)).astype(np.uint8),
      'boxes': view_boxes, 'flips': flips,
      'moves': np.stack([boxes.moves(view_boxes[i], flips[i]) for i in range(b)]),
      'labels': labels,
      'object_boxes': np.where(labels[..., None] >= 0, _random_boxes(rng, (b, m)), 0).astype(
          np.float32),
      'caption': np.where(np.arange(letters.shape[1]) < length, letters, 0).astype(np.uint8),
  }
  if 'local_images' in shapes:
    (_, n, t, _, _), _ = shapes['local_images']
    batch['local_images'] = rng.integers(0, 256, (b, n, t, t, 3)).astype(np.uint8)
    batch['local_boxes'] = _random_boxes(rng, (b, n))
  assert {k: (x.shape, x.dtype) for k, x in batch.items()} == {
      k: (shape, np.dtype(dtype)) for k, (shape, dtype) in shapes.items()}
  return batch


def run(path):
  """Losses of STEPS steps of ``path``'s tiny variant; for DINO also a short probe."""
  config = configuration.load(os.path.join(REPO, path) + ':tiny').unlock()
  config.mesh.update(data=1, fsdp=1, tensor=1)
  mesh, objective = sharding.make_mesh(config.mesh, jax.devices()[:1]), objectives.build(
      config.objective, configuration.encoder_config(config))
  num_classes = config.objective.get('num_classes', 13)
  example = {name: pipeline.zeros_batch(config.data[name]) for name in objective.streams}
  program = train.build_program(config, mesh, objective, example)
  state = program.init(jax.random.PRNGKey(config.seed))
  losses = []
  for step in range(STEPS):
    batch = {name: synthetic_batch(config.data[name], config.data[name].batch_size,
                                   num_classes, seed=1000 * i + step)
             for i, name in enumerate(objective.streams)}
    state, metrics = program.train_step(state, sharding.global_batch(batch, mesh))
    losses.append(float(metrics['loss']))
  result = {'losses': losses}
  if path == 'configs/dino_scenes.py':
    images = synthetic_batch(config.data.annotation, 96, 4, seed=7)
    pooled, _ = encoder.features(configuration.encoder_config(config),
                                 jax.device_get(state.params['encoder']),
                                 images['images'][:, 0], mesh, batch_size=32)
    probe = probes.linear_probe(
        pooled[:64], images['labels'][:64, 0], pooled[64:], images['labels'][64:, 0],
        kind='class', num_classes=4,
        config=probes.ProbeConfig(learning_rates=(1e-2,), weight_decays=(0.0,), epochs=5))
    result['probe'] = {'score': float(probe['score']),
                       'feature_sum': float(np.abs(pooled).astype(np.float64).sum())}
  return result


def versions():
  """What the numbers depend on beyond the code: jax, jaxlib and the CPU (XLA compiles for the
  host's instruction set, so another CPU rounds differently): its model name, family and model
  number (two 'AMD EPYC' of families 25 and 26 round differently)."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  cpu = platform.machine()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      fields = dict(line.split(':', 1) for line in f.read().split('\n\n')[0].splitlines()
                    if ':' in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    cpu = (f"{fields.get('model name', cpu)} (family {fields.get('cpu family', '?')}, "
           f"model {fields.get('model', '?')})")
  return {'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'cpu': cpu}


@pytest.fixture(scope='module')
def golden():
  with open(GOLDEN) as f:
    return json.load(f)


def test_every_shipped_config_has_golden_losses(golden):
  assert sorted(golden['configs']) == CONFIGS


@pytest.mark.parametrize('path', CONFIGS)
def test_losses_are_bit_for_bit_the_recorded_ones(path, golden):
  got, want = run(path), golden['configs'][path]
  assert got['losses'][-1] != got['losses'][0]     # the steps changed the loss
  if golden['versions'] == versions():
    assert got == want, f'{path}: behaviour changed (or record anew, see the docstring)'
  else:   # another jax or CPU: the same numbers up to another compiler's float rounding
    bfloat16 = configuration.load(os.path.join(REPO, path) + ':tiny').model.dtype == 'bfloat16'
    np.testing.assert_allclose(got['losses'], want['losses'], rtol=1e-2 if bfloat16 else 1e-4,
                               err_msg=path)


def record():
  results = {}
  for path in CONFIGS:
    results[path] = run(path)
    print(path, results[path], flush=True)
  with open(GOLDEN, 'w') as f:
    json.dump({'versions': versions(), 'steps': STEPS, 'configs': results}, f, indent=1,
              sort_keys=True)
    f.write('\n')
  print(f'wrote {GOLDEN}')


if __name__ == '__main__':
  if sys.argv[1:] != ['--record']:
    sys.exit(f'usage: python {sys.argv[0]} --record')
  record()
