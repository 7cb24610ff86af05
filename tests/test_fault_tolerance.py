"""Preemption, bit-exact resume, another mesh, damaged checkpoints, NaN and lock guards (slow)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
CONFIG = '--config=configs/simclr_scenes.py:tiny'


def _cmd(workdir, data_dir, *extra):
  return [sys.executable, '-m', 'annoprop_jax.main', 'train', CONFIG, f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', '--config.log_every=1', *extra]


def _env(devices):
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              JAX_PLATFORMS='cpu')


def _run(workdir, data_dir, *extra, devices=2):
  return subprocess.run(_cmd(workdir, data_dir, *extra), cwd=REPO, env=_env(devices),
                        capture_output=True, text=True, timeout=600)


def _records(workdir):
  """Metrics by step; a resumed run's records replace the interrupted run's."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return {r['step']: r for r in map(json.loads, f)}


def _params(workdir, step):
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints')) as manager:
    tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return tree['state']


def _assert_same_tree(a, b, exact=True):
  flat_a = dict(_leaves(a))
  flat_b = dict(_leaves(b))
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    if exact:
      np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)
    else:
      # Adam turns rounding noise in near-zero gradients into updates of up to ~lr/100.
      np.testing.assert_allclose(flat_a[key], flat_b[key], rtol=1e-3, atol=5e-5, err_msg=key)


def _leaves(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _leaves(v, f'{prefix}/{k}')
  else:
    yield prefix, np.asarray(tree)


def _wait_for(predicate, process, timeout=300):
  start = time.time()
  while not predicate():
    assert process.poll() is None, process.communicate()[1][-2000:]
    assert time.time() - start < timeout
    time.sleep(0.05)


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory, tiny_data_dir):
  """40 uninterrupted steps, checkpoints every 10."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  result = _run(workdir, tiny_data_dir, '--config.total_steps=40',
                '--config.checkpoint_every=10')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _interrupt_and_resume(tmp_path, data_dir, reference, sig, when):
  workdir = str(tmp_path / 'run')
  args = ['--config.total_steps=40', '--config.checkpoint_every=10']
  process = subprocess.Popen(_cmd(workdir, data_dir, *args), cwd=REPO, env=_env(2),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: when(workdir), process)
  process.send_signal(sig)
  out, err = process.communicate(timeout=300)
  if sig == signal.SIGTERM:
    assert process.returncode == 0, err[-3000:]
    assert 'Stopped at step' in out
  else:
    assert process.returncode == -signal.SIGKILL
  stopped = max(_records(workdir))
  assert stopped < 40
  if sig == signal.SIGTERM:     # the stop step itself was saved
    assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(stopped)))
  result = _run(workdir, data_dir, *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stdout
  # Same batches in the same order, and bit-identical parameters at the end.
  want, got = _records(reference), _records(workdir)
  assert [got[s]['data_fingerprint'] for s in range(1, 41)] == [
      want[s]['data_fingerprint'] for s in range(1, 41)]
  assert [got[s]['loss'] for s in range(1, 41)] == [want[s]['loss'] for s in range(1, 41)]
  _assert_same_tree(_params(workdir, 40), _params(reference, 40))
  return stopped, result


def test_sigterm_saves_exits_and_resumes_bit_exactly(tmp_path, tiny_data_dir, reference_run):
  has_step = lambda w: os.path.exists(os.path.join(w, 'metrics.jsonl')) and max(
      _records(w), default=0) >= 3
  _interrupt_and_resume(tmp_path, tiny_data_dir, reference_run, signal.SIGTERM, has_step)


def test_sigkill_after_a_checkpoint_resumes_bit_exactly(tmp_path, tiny_data_dir, reference_run):
  saved = lambda w: os.path.isdir(os.path.join(w, 'checkpoints', '10'))
  _, result = _interrupt_and_resume(tmp_path, tiny_data_dir, reference_run, signal.SIGKILL,
                                    saved)
  assert 'taking over the lock' in result.stdout


def test_restore_on_another_mesh(tmp_path, tiny_data_dir):
  """Written on 8 devices, resumed on 4: the next steps equal the 8-device run's."""
  reference = str(tmp_path / 'reference')
  args = ['--config.total_steps=12', '--config.checkpoint_every=10']
  assert _run(reference, tiny_data_dir, *args, devices=8).returncode == 0
  # The same run as if it had stopped after its step-10 checkpoint.
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '12'))
  os.remove(os.path.join(workdir, 'metrics.jsonl'))
  result = _run(workdir, tiny_data_dir, *args, devices=4)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Resumed from {os.path.join(workdir, "checkpoints")}/10' in result.stdout
  want, got = _records(reference), _records(workdir)
  for step in (11, 12):
    assert got[step]['data_fingerprint'] == want[step]['data_fingerprint']
    assert got[step]['loss'] == pytest.approx(want[step]['loss'], rel=1e-5)
  # 8 -> 4 devices changes the reduction order only: equal up to float rounding.
  _assert_same_tree(_params(workdir, 12), _params(reference, 12), exact=False)


def test_damaged_latest_checkpoint_falls_back_loudly(tmp_path, tiny_data_dir):
  workdir = str(tmp_path / 'run')
  args = ['--config.total_steps=20', '--config.checkpoint_every=10']
  assert _run(workdir, tiny_data_dir, *args).returncode == 0
  state_dir = os.path.join(workdir, 'checkpoints', '20', 'state')
  files = [os.path.join(d, f) for d, _, fs in os.walk(state_dir) for f in fs]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 3)
  result = _run(workdir, tiny_data_dir, '--config.total_steps=30', '--config.checkpoint_every=10')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'WARNING: checkpoint' in result.stdout and 'unreadable' in result.stdout
  assert f'Resumed from {os.path.join(workdir, "checkpoints")}/10' in result.stdout

  # With every checkpoint damaged the run refuses to start from scratch.
  for step in os.listdir(os.path.join(workdir, 'checkpoints')):
    state = os.path.join(workdir, 'checkpoints', step, 'state')
    for d, _, fs in os.walk(state):
      for f in fs:
        open(os.path.join(d, f), 'wb').close()
  result = _run(workdir, tiny_data_dir, '--config.total_steps=40')
  assert result.returncode == 2 and 'no readable checkpoint' in result.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data_dir):
  workdir = str(tmp_path / 'run')
  result = _run(workdir, tiny_data_dir, '--config.total_steps=20',
                '--config.checkpoint_every=1', '--config.optimizer.learning_rate=1e30',
                '--config.optimizer.warmup_steps=0')
  assert result.returncode == 2, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert 'non-finite loss or gradient at step' in line
  bad_step = int(line.split('at step ')[1].split(';')[0])
  saved = [int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit()]
  assert saved and max(saved) < bad_step
  assert not os.path.exists(os.path.join(workdir, 'lock'))


def test_second_run_on_a_locked_workdir_refuses(tmp_path, tiny_data_dir):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'lock').write_text(json.dumps({'host': socket.gethostname(), 'pid': os.getpid()}))
  result = _run(str(workdir), tiny_data_dir, '--config.total_steps=5')
  assert result.returncode == 2
  assert f'workdir is in use by pid {os.getpid()}' in result.stderr
  assert not (workdir / 'checkpoints').exists()


def test_init_from_starts_a_new_run_from_another_runs_params(tmp_path, tiny_data_dir):
  source = str(tmp_path / 'source')
  assert _run(source, tiny_data_dir, '--config.total_steps=10',
              '--config.checkpoint_every=10').returncode == 0
  # With a zero learning rate one step leaves the initialised params unchanged.
  workdir = str(tmp_path / 'new')
  result = _run(workdir, tiny_data_dir, '--config.total_steps=1', f'--config.init_from={source}',
                '--config.optimizer.learning_rate=0.0', '--config.optimizer.warmup_steps=0',
                '--config.optimizer.min_learning_rate=0.0')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Initialised params from {source}' in result.stdout
  new, old = _params(workdir, 1), _params(source, 10)
  _assert_same_tree(new['params'], old['params'])
  assert int(new['step']) == 1
