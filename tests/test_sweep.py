"""sweep: the grid and its run names, bad input before any run, and a 2 x 2 sweep of tiny runs
driven as a user would: submitted as a SLURM job array (stand-in sbatch), one array task run
through launch/slurm_gpu.sbatch (stand-in srun), the rest locally, a rerun that skips them all,
and the report."""
import csv
import json
import os
import subprocess
import sys

import pytest

from annoprop_jax import configuration
from annoprop_jax import sweep
from conftest import REPO
from test_slurm_launcher import SCRIPT, _job_env, _venv

AB_TINY = os.path.join(REPO, 'configs', 'ab_simclr_scenes.py') + ':tiny,steps=3'
SUPERVISED_TINY = os.path.join(REPO, 'configs', 'supervised_objects.py') + ':tiny,steps=3'


def test_grid_is_the_product_with_the_first_key_outermost():
  runs = sweep.parse_grid("objective.bootstrap.gamma=0,0.5; seed=0,1,2")
  assert runs == [{'objective.bootstrap.gamma': g, 'seed': s} for g in (0, 0.5) for s in (0, 1, 2)]
  assert sweep.run_names(runs)[:2] == ['gamma=0,seed=0', 'gamma=0,seed=1']
  # Commas inside brackets stay with their value; a value that is no literal is a string.
  runs = sweep.parse_grid('data.annotation.views.scale=(0.08, 1.0),(0.2,1.0);evaluation.params='
                          'target')
  assert [r['data.annotation.views.scale'] for r in runs] == [(0.08, 1.0), (0.2, 1.0)]
  assert runs[0]['evaluation.params'] == 'target'
  assert sweep.run_names(runs) == ['scale=0.08_1.0,params=target', 'scale=0.2_1.0,params=target']
  # Quotes keep their commas too.
  assert sweep.split_values('"a,b",\'c\',d') == ['a,b', 'c', 'd']
  # Two keys with one last part keep their whole names.
  assert sweep.run_names([{'data.annotation.batch_size': 8, 'data.bootstrap.batch_size': 4}]) == [
      'data.annotation.batch_size=8,data.bootstrap.batch_size=4']


@pytest.mark.parametrize('grid, message', [
    ('seed', "--sweep wants KEY=V1,V2;KEY=V1,...; got 'seed'"),
    ('seed=0;seed=1', '--sweep names a key twice: seed, seed'),
    (';', '--sweep is empty'),
])
def test_a_grid_that_does_not_parse_is_one_line(grid, message):
  with pytest.raises(configuration.ConfigError, match='^' + message.replace('.', r'\.')
                     .replace('(', r'\(').replace(')', r'\)').replace('+', r'\+')):
    sweep.parse_grid(grid)


@pytest.mark.parametrize('runs, message', [
    ([{'objective.bootstrap.gama': 0.5}],
     "config key 'objective.bootstrap.gama' does not exist; nearest: objective.bootstrap.gamma"),
    ([{'seed': 0}, {'seed': 0}], "two runs of the sweep would share the workdir 'seed=0'"),
    ([{'total_steps': 0}], 'total_steps must be positive, got 0'),
    ([{'model': 3}], "config key 'model' is a block; set one of its keys"),
    ([{'total_steps': 'many'}], "config key 'total_steps' cannot be 'many'"),
    ([{'data.annotation.views.scale': 'abc'}], "config key 'data.annotation.views.scale' wants a "
                                               "tuple, got 'abc'"),
])
def test_every_run_is_checked_before_any_trains(runs, message):
  with pytest.raises(configuration.ConfigError) as e:
    sweep.plan(AB_TINY, {}, runs)
  assert str(e.value).startswith(message)


def test_a_folder_holds_one_sweep(tmp_path):
  first = sweep.plan(AB_TINY, {}, [{'seed': 0}, {'seed': 1}])
  sweep.write_plan(tmp_path, first)
  sweep.write_plan(tmp_path, first)                 # the same sweep again: goes on
  with pytest.raises(configuration.ConfigError, match='holds another sweep'):
    sweep.write_plan(tmp_path, sweep.plan(AB_TINY, {}, [{'seed': 2}]))


def _sweep(*flags, env=None, cwd=REPO):
  return subprocess.run([sys.executable, '-m', 'annoprop_jax.main', 'sweep', *flags], cwd=cwd,
                        capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_a_two_by_two_sweep_as_an_array_then_locally_then_reported(tmp_path, tiny_data_dir):
  sweep_dir = tmp_path / 'sweep'
  grid = '--sweep=optimizer.learning_rate=0.001,0.002;seed=0,1'
  flags = [f'--config={SUPERVISED_TINY}', f'--config.data.data_dir={tiny_data_dir}', grid,
           f'--workdir={sweep_dir}']
  # Submitted as a job array: one sbatch with a task per run, each `sweep --array_task`.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'sbatch').write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/sbatch_args\n')
  (bin_dir / 'sbatch').chmod(0o755)
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')
  result = _sweep(*flags, '--launcher=slurm', env=env)
  assert result.returncode == 0, result.stderr
  args = (tmp_path / 'sbatch_args').read_text().split()
  assert args[0] == '--array=0-3' and args[-4:] == [
      'launch/slurm_gpu.sbatch', 'sweep', f'--workdir={sweep_dir}', '--array_task']
  names = [run['name'] for run in sweep.read_plan(sweep_dir)['runs']]
  assert names == ['learning_rate=0.001,seed=0', 'learning_rate=0.001,seed=1',
                   'learning_rate=0.002,seed=0', 'learning_rate=0.002,seed=1']
  assert not any((sweep_dir / n).exists() for n in names)          # nothing trained yet

  # Array task 2 under the batch script (stand-in srun, one task): trains run 2 alone, with
  # its overrides and the flags that join its processes.
  job = _job_env(tmp_path, _venv(str(tmp_path)), 1, 777, SLURM_ARRAY_TASK_ID='2',
                 XLA_FLAGS='--xla_force_host_platform_device_count=1')
  task = subprocess.run(['bash', SCRIPT, *args[-3:]], cwd=REPO, env=job, capture_output=True,
                        text=True, timeout=600)
  assert task.returncode == 0, task.stderr[-2000:]
  assert [n for n in names if (sweep_dir / n).exists()] == [names[2]]
  saved = json.loads((sweep_dir / names[2] / 'config.json').read_text())
  assert saved['optimizer']['learning_rate'] == 0.002 and saved['seed'] == 0
  assert sweep.saved_step(sweep_dir / names[2]) == 3

  # Locally: the three others train, the finished one is skipped; a rerun skips all four.
  result = _sweep(*flags)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [l for l in result.stdout.splitlines() if l.startswith('[sweep')]
  assert lines[2] == '[sweep 3/4] learning_rate=0.002,seed=0: done, skipped'
  assert sum('training in' in l for l in lines) == 3
  for name in names:
    saved = json.loads((sweep_dir / name / 'config.json').read_text())
    assert f"learning_rate={saved['optimizer']['learning_rate']},seed={saved['seed']}" == name
  again = _sweep(*flags)
  assert again.returncode == 0 and again.stdout.count('done, skipped') == 4, again.stdout

  # The report: one row per run, side by side, also as CSV; losses differ between runs.
  report = _sweep(f'--workdir={sweep_dir}', '--report')
  assert report.returncode == 0, report.stderr
  table = report.stdout.splitlines()
  assert table[0].split() == ['run', 'optimizer.learning_rate', 'seed', 'state', 'loss']
  assert [row.split()[0] for row in table[1:5]] == names
  assert all(row.split()[3] == 'done' for row in table[1:5])
  rows = list(csv.DictReader((sweep_dir / 'report.csv').open()))
  losses = [float(r['loss']) for r in rows]
  assert [r['run'] for r in rows] == names and len(set(losses)) == 4
  for row in rows:
    last = [json.loads(l) for l in (sweep_dir / row['run'] / 'metrics.jsonl').open()][-1]
    assert float(row['loss']) == pytest.approx(last['loss'])


@pytest.mark.slow
def test_a_signal_stops_the_sweep_with_the_run_saved_and_starts_no_other(tmp_path, tiny_data_dir):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  sweep_dir = tmp_path / 'sweep'
  config = os.path.join(REPO, 'configs', 'supervised_objects.py') + ':tiny,steps=100000'
  process = subprocess.Popen(
      [sys.executable, '-m', 'annoprop_jax.main', 'sweep', f'--config={config}',
       f'--config.data.data_dir={tiny_data_dir}', '--config.log_every=1',
       '--sweep=seed=0,1', f'--workdir={sweep_dir}'], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  metrics = sweep_dir / 'seed=0' / 'metrics.jsonl'
  deadline = time.time() + 300
  while not (metrics.exists() and metrics.read_text().count('\n') >= 3):   # run 0 is training
    assert time.time() < deadline and process.poll() is None, process.communicate()
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  out, err = process.communicate(timeout=300)
  assert process.returncode == 75, err[-2000:]
  assert 'rerun the same command to resume' in err
  assert 0 < sweep.saved_step(sweep_dir / 'seed=0') < 100000      # saved where it stopped
  assert not (sweep_dir / 'seed=1').exists() and 'seed=1' not in out
