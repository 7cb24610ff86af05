"""The training command line, end to end in subprocesses (slow)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from annoprop_jax import configuration
from annoprop_jax import optimizer
from conftest import REPO, xla_flags

pytestmark = pytest.mark.slow


def _run(args, data_dir, devices=2, timeout=600):
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices),
             JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'annoprop_jax.main', *args, f'--config.data.data_dir={data_dir}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_train_writes_metrics_and_checkpoints_loss_goes_down_and_resumes(tmp_path, tiny_data_dir):
  workdir = str(tmp_path / 'run')
  args = ['train', '--config=configs/simclr_scenes.py:tiny', f'--workdir={workdir}',
          '--config.total_steps=50', '--config.log_every=5', '--config.checkpoint_every=25']
  result = _run(args, tiny_data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'ETA' in result.stdout and 'img/s' in result.stdout
  records = _metrics(workdir)
  assert [r['step'] for r in records] == list(range(5, 51, 5))
  for key in ('step', 'loss', 'learning_rate', 'weight_decay', 'images_per_sec'):
    assert all(key in r for r in records)
  # Logged scalars are means over the log window: the learning rate of steps 0-4 (warm-up).
  config = configuration.load_run(workdir)
  schedule = optimizer.learning_rate_schedule(config.optimizer, config.total_steps)
  window = [float(schedule(s)) for s in range(5)]
  assert window[0] != window[-1]
  assert records[0]['learning_rate'] == pytest.approx(np.mean(window), rel=1e-5)
  first = sum(r['loss'] for r in records[:2]) / 2
  last = sum(r['loss'] for r in records[-2:]) / 2
  assert last < first - 0.05, [r['loss'] for r in records]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['25', '50']
  assert set(os.listdir(os.path.join(workdir, 'checkpoints', '50'))) >= {'state',
                                                                          'data_annotation'}
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['total_steps'] == 50

  # A longer horizon changes the schedules: it resumes from step 50 only when allowed, logged.
  result = _run(args[:-3] + ['--config.total_steps=60', '--config.log_every=5',
                             '--config.checkpoint_every=25', '--allow_config_change'],
                tiny_data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stdout
  assert 'with a changed config: total_steps: 50 -> 60' in result.stdout
  assert [r['step'] for r in _metrics(workdir)][-2:] == [55, 60]


def _train_error_lines(override, tmp_path, data_dir):
  """The stderr lines of a tiny DINO train run given one bad ``--config.`` override; it must
  exit 2 without a traceback."""
  result = _run(['train', '--config=configs/dino_scenes.py:tiny', f'--workdir={tmp_path}',
                 override], data_dir)
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  return [l for l in result.stderr.strip().splitlines() if l.strip()]


def test_unknown_config_key_is_one_clear_line(tmp_path, tiny_data_dir):
  lines = _train_error_lines('--config.model.widht=64', tmp_path, tiny_data_dir)
  assert len(lines) == 1 and 'model.widht' in lines[0] and 'model.width' in lines[0], lines


def test_wrong_type_is_one_clear_line(tmp_path, tiny_data_dir):
  lines = _train_error_lines('--config.total_steps=many', tmp_path, tiny_data_dir)
  assert len(lines) == 1 and 'total_steps' in lines[0], lines


def test_invalid_value_is_one_clear_line(tmp_path, tiny_data_dir):
  lines = _train_error_lines('--config.data.annotation.batch_size=15', tmp_path, tiny_data_dir)
  assert any('data.annotation.batch_size=15 is not divisible' in l for l in lines), lines


def test_an_unknown_key_names_the_nearest_ones(tmp_path, tiny_data_dir):
  lines = _train_error_lines('--config.batch_size=16', tmp_path, tiny_data_dir)
  assert len(lines) == 1 and lines[0].startswith(
      "error: config key 'batch_size' does not exist; nearest: "), lines
  assert 'data.annotation.batch_size' in lines[0], lines


def test_class_count_mismatch_is_one_clear_line(tmp_path, tiny_data_dir):
  result = _run(['train', '--config=configs/supervised_objects.py:tiny', f'--workdir={tmp_path}',
                 '--config.objective.num_classes=12'], tiny_data_dir)
  assert result.returncode == 2
  assert 'objective.num_classes=12 but dataset' in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize('command, own_flag, other_flag', [
    ('prepare', '--input', '--config'), ('export', '--workdir', '--input')])
def test_command_help_lists_that_commands_flags(command, own_flag, other_flag):
  result = subprocess.run([sys.executable, '-m', 'annoprop_jax.main', command, '--help'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f'python -m annoprop_jax.main {command} [--flags]: ')
  assert f'  {own_flag}:' in result.stdout and f'  {other_flag}:' not in result.stdout
