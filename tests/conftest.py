"""8 simulated CPU devices for every test, a tiny scenes dataset shared by the session, one
compilation cache for the session, and the update comparison the state tests use."""
import atexit
import os
import shutil
import tempfile

# The tests compile far more than they run: XLA's backend at -O0 compiles ~30% faster (an
# AB_DINO tiny run 27 s -> 19 s); every comparison in the suite is between runs under the same
# flags. Subprocesses get them with `xla_flags(devices)`.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'


def xla_flags(devices):
  return f'{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}'


os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + xla_flags(8)).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One persistent compilation cache per test session, made by the first process that loads this
# file and inherited by the xdist workers and every subprocess the tests start: the CLI tests
# compile the same tiny programs many times (an AB_DINO run: 18 s cold, 7 s warm, same losses).
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='annoprop_test_jax_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(items):
  """Slow tests first (stable otherwise): xdist hands them out early, and the many short tests
  fill the end, instead of one worker finishing a 2-minute test alone."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)


def tiny_config(name='dino_scenes', **overrides):
  from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top
  config = configuration.load(os.path.join(REPO, 'configs', f'{name}.py:tiny'))
  return override(config, **overrides)


def short_run_losses(name, data_dir, workdir, steps=30):
  """``name``'s tiny config trained ``steps`` steps in ``workdir``: (config, the loss printed
  every 5 steps)."""
  from annoprop_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config(name, **{'data.data_dir': data_dir, 'total_steps': steps,
                                'log_every': 5, 'checkpoint_every': steps})
  lines = []
  train.train(config, str(workdir), print_fn=lines.append)
  return config, [float(l.split('loss ')[1].split()[0]) for l in lines if l.startswith('step ')]


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
  pipeline.dataset_directory(config.data, 'scenes')
  return data_dir


def two_process_training(workdir, data_dir, steps, *args):
  """2 processes x 1 CPU device training AB_DINO :tiny for STEPS steps (logged every step, a
  checkpoint every 10) on a free port of 127.0.0.1; returns the two Popen objects."""
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu')
  return [subprocess.Popen(
      [sys.executable, '-m', 'annoprop_jax.main', 'train', '--config=configs/ab_dino_scenes.py:tiny',
       f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
       f'--config.total_steps={steps}', '--config.log_every=1', '--config.checkpoint_every=10',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
       *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def finish(processes):
  """Waits for PROCESSES; each must exit 0."""
  outputs = [p.communicate(timeout=600) for p in processes]
  assert [p.returncode for p in processes] == [0, 0], [e[-3000:] for _, e in outputs]


@pytest.fixture(scope='session')
def two_process_reference(tmp_path_factory, worker_id, tiny_data_dir):
  """The workdir of an uninterrupted `two_process_training` of 20 steps, made once for all
  test workers of the session (the tests that stop and resume a 2-process run compare with it).
  """
  import fcntl  # pylint: disable=g-import-not-at-top
  # xdist's workers share the parent of their base folders, one per session.
  root = tmp_path_factory.getbasetemp()
  root = root if worker_id == 'master' else root.parent
  workdir = root / 'two_process_reference'
  with open(root / 'two_process_reference.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (root / 'two_process_reference.done').exists():
      finish(two_process_training(str(workdir), tiny_data_dir, 20))
      (root / 'two_process_reference.done').touch()
  return str(workdir)


def first_batches(config, streams):
  """The first batch of each of ``streams`` as training builds them (device part, numpy)."""
  from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  datasets = pipeline.build_streams(config.data, streams, config.seed)
  return {name: pipeline.device_part(next(iter(ds))) for name, ds in datasets.items()}


def random_loss_inputs(config, batch_size=6):
  """(the objective of ``config``, LossInputs of one step of it on a batch of ``batch_size``
  random annotation images: params from a fresh init, the target network the online one)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from annoprop_jax import configuration, objectives  # pylint: disable=g-import-not-at-top
  from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  batch = {'annotation': pipeline.zeros_batch(config.data.annotation, batch_size=batch_size)}
  rng = np.random.default_rng(0)
  batch = jax.tree.map(lambda a: rng.integers(0, 200, a.shape).astype(a.dtype), batch)
  params, state = objective.init(jax.random.PRNGKey(0), batch)
  return objective, objectives.LossInputs(params=params, target_params=params,
                                          method_state=state, batch=batch, step=jnp.int32(0),
                                          rng=jax.random.PRNGKey(1))


def write_catalogue_like(data_dir, name, version, features, examples):
  """A tfds dataset shaped like a catalogue one, at DATA_DIR/NAME/VERSION: ``examples`` a list
  (the train split) or {split: list}, one shard a split."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import example_serializer  # pylint: disable=g-import-not-at-top
  directory = os.path.join(data_dir, *name.split('/'), version)
  os.makedirs(directory)
  file_name = name.split('/')[0]
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  splits = examples if isinstance(examples, dict) else {'train': examples}
  infos = []
  for split, rows in splits.items():
    path = os.path.join(directory, f'{file_name}-{split}.array_record-00000-of-00001')
    writer = array_record_module.ArrayRecordWriter(path, 'group_size:1')
    for example in rows:
      writer.write(serializer.serialize_example(features.encode_example(example)))
    writer.close()
    infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[len(rows)], num_bytes=os.path.getsize(path),
        filename_template=tfds.core.ShardedFileTemplate(
            data_dir=directory, dataset_name=file_name, split=split,
            filetype_suffix='array_record')))
  info = tfds.core.DatasetInfo(
      builder=tfds.core.dataset_info.DatasetIdentity(
          name=file_name, version=tfds.core.Version(version), data_dir=directory,
          module_name='tests'), features=features)
  info.set_file_format('array_record')
  info.set_splits(tfds.core.SplitDict(infos))
  info.write_to_directory(directory)


def fresh_evaluator(config):
  """(the Evaluator of ``config``, the encoder params of a fresh init of its objective)."""
  import jax  # pylint: disable=g-import-not-at-top
  from annoprop_jax import configuration, objectives, sharding  # pylint: disable=g-import-not-at-top
  from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from annoprop_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  example = {name: pipeline.zeros_batch(config.data[name]) for name in objective.streams}
  params, _ = objective.init(jax.random.PRNGKey(0), example)
  return evaluator.Evaluator(config.evaluation, config.data, configuration.encoder_config(config),
                             sharding.make_mesh(config.mesh), lambda line: None,
                             objective_config=config.objective), params['encoder']


def leaves(tree):
  """{'a/b/0': numpy array} of a pytree."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from annoprop_jax import sharding  # pylint: disable=g-import-not-at-top
  return {sharding.path_string(path): np.asarray(x)
          for path, x in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def assert_same_update(before, want, got, rtol=1e-3, name='state'):
  """``got`` made the update ``want`` made from ``before``, up to ``rtol`` of that update.

  The tree must have moved (its largest |want - before| above 1e-6), and the difference
  ||got - want|| over the whole tree must be at most ``rtol`` x the update ||want - before||
  (2-norms over all leaves). Whole-tree norms, not per-element tolerances: a leaf whose true
  gradient is zero (an attention key bias) gets Adam updates made of rounding noise, which
  differ between two correct runs by as much as they are large. Returns the update's norm.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  before, want, got = leaves(before), leaves(want), leaves(got)
  assert before.keys() == want.keys() == got.keys(), name
  diff = lambda a, b, k: a[k].astype(np.float64) - b[k]
  largest = max(float(np.max(np.abs(diff(want, before, k)), initial=0)) for k in want)
  assert largest > 1e-6, f'{name}: nothing moved (largest update {largest:.2e})'
  update = np.sqrt(sum(np.sum(diff(want, before, k) ** 2) for k in want))
  errors = {k: np.sum(diff(got, want, k) ** 2) for k in want}
  error, worst = np.sqrt(sum(errors.values())), max(errors, key=errors.get)
  assert error <= rtol * update, (f'{name}: differs by {error:.3g}, more than {rtol:g} of its '
                                  f'update {update:.3g} (most in {worst})')
  return update


def loss_inputs(params, target_params, method_state, batch, step=0, rng=None):
  """An objective's ``LossInputs`` (step as int32, a fixed key unless given)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from annoprop_jax import objectives  # pylint: disable=g-import-not-at-top
  return objectives.LossInputs(
      params=params, target_params=target_params, method_state=method_state, batch=batch,
      step=jnp.asarray(step, jnp.int32), rng=jax.random.PRNGKey(0) if rng is None else rng)
