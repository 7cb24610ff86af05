"""Preemption, bit-exact resume, another mesh, init_from, damaged checkpoints, NaN and lock
guards (slow)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, assert_same_update, leaves, xla_flags

pytestmark = pytest.mark.slow
EXIT_RESUME = 75
CONFIG = 'configs/simclr_scenes.py:tiny'
# Two streams (two data iterators), DINO's centre and an EMA target: all of it must resume.
AB_DINO = 'configs/ab_dino_scenes.py:tiny'


def _cmd(workdir, data_dir, *extra, config=CONFIG):
  return [sys.executable, '-m', 'annoprop_jax.main', 'train', f'--config={config}',
          f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', '--config.log_every=1',
          *extra]


def _env(devices):
  # Unbuffered: what a killed run printed is still read.
  return dict(os.environ, XLA_FLAGS=xla_flags(devices),
              JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')


def _run(workdir, data_dir, *extra, devices=2, config=CONFIG):
  return subprocess.run(_cmd(workdir, data_dir, *extra, config=config), cwd=REPO,
                        env=_env(devices), capture_output=True, text=True, timeout=600)


def _records(workdir):
  """Metrics by step; a resumed run's records replace the interrupted run's."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return {r['step']: r for r in map(json.loads, f)}


def _params(workdir, step):
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints')) as manager:
    tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return tree['state']


def _assert_same_tree(a, b):
  flat_a, flat_b = leaves(a), leaves(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def _wait_for(predicate, process, timeout=300):
  start = time.time()
  while not predicate():
    assert process.poll() is None, process.communicate()[1][-2000:]
    assert time.time() - start < timeout
    time.sleep(0.05)


FINGERPRINTS = ('annotation_data_fingerprint', 'bootstrap_data_fingerprint')


def _reference_run(tmp_path, data_dir):
  """40 uninterrupted AB_DINO steps, checkpoints every 10."""
  workdir = str(tmp_path / 'reference')
  result = _run(workdir, data_dir, '--config.total_steps=40', '--config.checkpoint_every=10',
                '--config.keep_checkpoints=4', config=AB_DINO)
  assert result.returncode == 0, result.stderr[-3000:]
  # What the resumed runs must reproduce moved after the first checkpoint: parameters, EMA
  # target, both Adam moments and the centre (a resume that lost any of them cannot pass).
  early, final = _params(workdir, 10), _params(workdir, 40)
  for part in ('params', 'target_params', 'opt_state', 'method_state'):
    before, after = leaves(early[part]), leaves(final[part])
    assert any(not np.array_equal(before[k], after[k]) for k in before), part
  return workdir


def _interrupt(workdir, data_dir, sig, when):
  """Starts (or resumes) the 40-step run in ``workdir`` and sends ``sig`` once ``when``."""
  args = ['--config.total_steps=40', '--config.checkpoint_every=10']
  process = subprocess.Popen(_cmd(workdir, data_dir, *args, config=AB_DINO), cwd=REPO,
                             env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  _wait_for(lambda: when(workdir), process)
  process.send_signal(sig)
  out, err = process.communicate(timeout=300)
  if sig == signal.SIGTERM:
    assert process.returncode == EXIT_RESUME, err[-3000:]      # "resume me", not "finished"
    assert 'Stopped at step' in out
  else:
    assert process.returncode == -signal.SIGKILL
  return out


def test_ab_dino_resumes_bit_exactly_after_sigterm_then_sigkill(tmp_path, tiny_data_dir):
  reference = _reference_run(tmp_path, tiny_data_dir)
  workdir = str(tmp_path / 'run')
  # SIGTERM mid-interval: the stop step itself is saved.
  _interrupt(workdir, tiny_data_dir, signal.SIGTERM, lambda w: os.path.exists(
      os.path.join(w, 'metrics.jsonl')) and max(_records(w), default=0) >= 3)
  stopped = max(_records(workdir))
  assert stopped < 20, stopped
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(stopped)))
  # The resumed run is killed (SIGKILL) after its step-20 checkpoint ...
  out = _interrupt(workdir, tiny_data_dir, signal.SIGKILL, lambda w: os.path.isdir(
      os.path.join(w, 'checkpoints', '20')))
  assert f'Resumed from {os.path.join(workdir, "checkpoints")}/{stopped}' in out
  # ... and the next start takes over the dead run's lock and finishes from step 20.
  result = _run(workdir, tiny_data_dir, '--config.total_steps=40',
                '--config.checkpoint_every=10', config=AB_DINO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'taking over the lock' in result.stdout and 'Resumed from' in result.stdout
  # Both streams' batches in the same order, the same losses, and every array of the final
  # state (params, EMA target, Adam moments, centre, step, RNG) bit-identical.
  want, got = _records(reference), _records(workdir)
  for key in (*FINGERPRINTS, 'loss', 'base_loss', 'ab_loss'):
    assert [got[s][key] for s in range(1, 41)] == [want[s][key] for s in range(1, 41)], key
  _assert_same_tree(_params(workdir, 40), _params(reference, 40))


def test_restore_on_another_mesh_and_init_from(tmp_path, tiny_data_dir):
  """Written on 8 devices, resumed on 4: the next steps equal the 8-device run's. And a new
  run initialised from that run's params."""
  reference = str(tmp_path / 'reference')
  # A constant learning rate after warm-up: the steps after the restore update by ~1e-3.
  args = ['--config.total_steps=12', '--config.checkpoint_every=10',
          '--config.optimizer.min_learning_rate=1e-3']
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
    assert got[step]['annotation_data_fingerprint'] == want[step]['annotation_data_fingerprint']
    assert got[step]['loss'] == pytest.approx(want[step]['loss'], rel=1e-5)
  # 8 -> 4 devices changes the reduction order only: the two steps after the restore made the
  # same updates, to 1% of each part's update.
  restored, ours, theirs = (_params(w, s) for w, s in ((reference, 10), (workdir, 12),
                                                       (reference, 12)))
  for part in ('params', 'target_params', 'opt_state'):
    assert_same_update(restored[part], theirs[part], ours[part], 1e-2, part)

  # init_from: a new run starts from the reference's latest params (and target network).
  # With a zero learning rate its one step leaves the params unchanged.
  new_run = str(tmp_path / 'new')
  result = _run(new_run, tiny_data_dir, '--config.total_steps=1',
                f'--config.init_from={reference}', '--config.optimizer.learning_rate=0.0',
                '--config.optimizer.warmup_steps=0', '--config.optimizer.min_learning_rate=0.0')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Initialised params from {reference}' in result.stdout
  new = _params(new_run, 1)
  _assert_same_tree(new['params'], theirs['params'])
  # The target network came along too and took its one EMA step (momentum 0.996) toward them.
  old_target, old_params = leaves(theirs['target_params']), leaves(theirs['params'])
  new_target = leaves(new['target_params'])
  for key, target in old_target.items():
    np.testing.assert_allclose(new_target[key], 0.996 * target + 0.004 * old_params[key],
                               rtol=1e-5, atol=1e-8, err_msg=key)
  assert any(not np.array_equal(old_target[k], old_params[k]) for k in old_target)
  assert int(new['step']) == 1


def test_damaged_latest_checkpoint_falls_back_loudly(tmp_path, tiny_data_dir):
  workdir = str(tmp_path / 'run')
  args = ['--config.total_steps=20', '--config.checkpoint_every=10']
  assert _run(workdir, tiny_data_dir, *args).returncode == 0
  state_dir = os.path.join(workdir, 'checkpoints', '20', 'state')
  files = [os.path.join(d, f) for d, _, fs in os.walk(state_dir) for f in fs]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 3)
  config_json = open(os.path.join(workdir, 'config.json')).read()
  # Extending the run changes its schedule: refused in one line before anything is written ...
  longer = ['--config.total_steps=30', '--config.checkpoint_every=10']
  result = _run(workdir, tiny_data_dir, *longer)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].endswith(
      'was trained with another config: total_steps: 20 -> 30; resume with the same values, '
      'or pass --allow_config_change to continue with the new ones')
  assert open(os.path.join(workdir, 'config.json')).read() == config_json
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '20'))
  # ... and accepted, logged, with --allow_config_change: the damaged step 20 moves aside.
  result = _run(workdir, tiny_data_dir, *longer, '--allow_config_change')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'WARNING: checkpoint' in result.stdout and 'unreadable' in result.stdout
  assert 'with a changed config: total_steps: 20 -> 30' in result.stdout
  assert f'Resumed from {os.path.join(workdir, "checkpoints")}/10' in result.stdout
  assert os.listdir(os.path.join(workdir, 'checkpoints_damaged')) == ['20']
  # Logged once per step: the steps 11-20 of the first run were replaced by the resumed run's.
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps == list(range(1, 31))

  # With every checkpoint damaged the run refuses to start from scratch.
  for step in os.listdir(os.path.join(workdir, 'checkpoints')):
    state = os.path.join(workdir, 'checkpoints', step, 'state')
    for d, _, fs in os.walk(state):
      for f in fs:
        open(os.path.join(d, f), 'wb').close()
  result = _run(workdir, tiny_data_dir, '--config.total_steps=30', '--allow_config_change')
  assert result.returncode == 2 and 'no readable checkpoint' in result.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data_dir):
  workdir = str(tmp_path / 'run')
  # Warm-up from 0: step 1 moves nothing (finite, saved), step 2 overflows the parameters.
  result = _run(workdir, tiny_data_dir, '--config.total_steps=20',
                '--config.checkpoint_every=1', '--config.optimizer.learning_rate=1e30',
                '--config.optimizer.warmup_steps=10')
  assert result.returncode == 2, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert 'non-finite loss, gradient or parameters at step' in line
  bad_step = int(line.split('at step ')[1].split(';')[0])
  saved = [int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit()]
  assert saved and max(saved) < bad_step
  assert not os.path.exists(os.path.join(workdir, 'lock'))


def test_second_run_on_a_locked_workdir_refuses(tmp_path, tiny_data_dir):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  # A live run elsewhere: another host, a fresh heartbeat.
  (workdir / 'lock').write_text(json.dumps({'host': 'other-host', 'pid': os.getpid(),
                                            'heartbeat': time.time(), 'token': 'theirs'}))
  result = _run(str(workdir), tiny_data_dir, '--config.total_steps=5')
  assert result.returncode == 2
  assert f'workdir is in use by pid {os.getpid()} on host other-host' in result.stderr
  assert not (workdir / 'checkpoints').exists()
