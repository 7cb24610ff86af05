"""launch/slurm_gpu.sbatch run for real against stand-ins for srun and scontrol
(tests/standins/) that behave as SLURM does: tasks in their own process groups with a job
step's variables, a SIGTERM to every process of the step, --kill-on-bad-exit, and (Slurm 22.05
and later) --cpus-per-task not inherited from sbatch."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from unittest import mock

import jax
import numpy as np
import pytest

from annoprop_jax import checkpoint
from annoprop_jax import multihost
from conftest import REPO, xla_flags

SCRIPT = os.path.join(REPO, 'launch', 'slurm_gpu.sbatch')
STANDINS = os.path.join(REPO, 'tests', 'standins')
GPUS_PER_NODE = 8


def _venv(root, python_body=None):
  """A folder with bin/activate, as the script sources: it puts bin/ first on PATH, where
  ``python`` is this interpreter, or a script with ``python_body`` when given."""
  bin_dir = os.path.join(root, 'venv', 'bin')
  os.makedirs(bin_dir)
  with open(os.path.join(bin_dir, 'activate'), 'w') as f:
    f.write(f'export PATH="{bin_dir}:$PATH"\n')
  python = os.path.join(bin_dir, 'python')
  with open(python, 'w') as f:
    f.write(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n' if python_body is None
            else f'#!{sys.executable}\n{python_body}')
  os.chmod(python, os.stat(python).st_mode | stat.S_IEXEC)
  return os.path.dirname(bin_dir)


def _job_env(tmp_path, venv, ntasks, job_id, **extra):
  standin_dir = tmp_path / 'standin'
  standin_dir.mkdir(exist_ok=True)
  return {'PATH': f'{STANDINS}:/usr/bin:/bin', 'HOME': os.environ.get('HOME', '/tmp'),
          'SLURM_JOB_NODELIST': '127.0.0.1', 'SLURM_NTASKS': str(ntasks),
          'SLURM_JOB_ID': str(job_id), 'SLURM_SUBMIT_DIR': REPO, 'VENV': venv,
          'STANDIN_DIR': str(standin_dir), **extra}


# A python that records what each task was started with, instead of training.
RECORD_TASK = '''import json, os, sys
with open(os.path.join(os.environ['STANDIN_DIR'], f"task{os.environ['SLURM_PROCID']}.json"),
          'w') as f:
  json.dump({'env': dict(os.environ), 'argv': sys.argv[1:]}, f)
'''


def _recorded_tasks(tmp_path, ntasks, **extra):
  venv = _venv(str(tmp_path), RECORD_TASK)
  env = _job_env(tmp_path, venv, ntasks, 4242, **extra)
  result = subprocess.run(['bash', SCRIPT, 'train', '--config=configs/ab_dino_scenes.py:tiny',
                           '--workdir=/tmp/unused'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  tasks = []
  for rank in range(ntasks):
    with open(tmp_path / 'standin' / f'task{rank}.json') as f:
      tasks.append(json.load(f))
  with open(tmp_path / 'standin' / 'srun.json') as f:
    return tasks, json.load(f)


def _arg(argv, name):
  return next(a.split('=', 1)[1] for a in argv if a.startswith(f'--{name}='))


@pytest.mark.parametrize('bind_gpus', ['0', '1'])
def test_each_task_drives_its_own_existing_gpu(tmp_path, bind_gpus):
  """What jax.distributed would pick for each task (its own SLURM detection, given the devices
  annoprop_jax passes) exists among the GPUs the task sees, and no two tasks share one: with
  every GPU visible, and with the site binding one GPU per task."""
  from jax._src import clusters  # pylint: disable=g-import-not-at-top  # JAX's own detection
  tasks, _ = _recorded_tasks(tmp_path, 4, STANDIN_BIND_GPUS=bind_gpus)
  physical = []
  for task in tasks:
    env, argv = task['env'], task['argv']
    with mock.patch.dict(os.environ, env, clear=True):
      _, _, _, chosen = clusters.ClusterEnv.auto_detect_unset_distributed_params(
          _arg(argv, 'coordinator_address'), int(_arg(argv, 'num_processes')),
          int(_arg(argv, 'process_id')), multihost.local_device_ids(env), None, None)
    visible = (env['CUDA_VISIBLE_DEVICES'].split(',') if 'CUDA_VISIBLE_DEVICES' in env
               else [str(i) for i in range(GPUS_PER_NODE)])
    chosen = range(len(visible)) if chosen is None else chosen
    assert chosen and all(0 <= d < len(visible) for d in chosen), (env['SLURM_LOCALID'], visible,
                                                                 chosen)
    physical.append({visible[d] for d in chosen})
  assert all(not a & b for i, a in enumerate(physical) for b in physical[i + 1:]), physical
  assert [int(_arg(t['argv'], 'process_id')) for t in tasks] == [0, 1, 2, 3]


def test_tasks_get_the_jobs_cpus(tmp_path):
  tasks, srun = _recorded_tasks(tmp_path, 2, SLURM_CPUS_PER_TASK='2')
  assert srun['options'].get('cpus-per-task') == '2'
  assert [t['env'].get('SLURM_CPUS_PER_TASK') for t in tasks] == ['2', '2']


def _launch(tmp_path, venv, workdir, job_id, data_dir, steps):
  env = _job_env(tmp_path, venv, 2, job_id, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags(1),
                 JAX_COMPILATION_CACHE_DIR=os.environ.get('JAX_COMPILATION_CACHE_DIR', ''),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  # The coordinator port is 20000 + job id % 10000: a job id that makes it a free port.
  return subprocess.Popen(
      ['bash', SCRIPT, 'train', '--config=configs/ab_dino_scenes.py:tiny', f'--workdir={workdir}',
       f'--config.data.data_dir={data_dir}', f'--config.total_steps={steps}',
       '--config.log_every=1', '--config.checkpoint_every=10'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _job_id():
  """A job id whose coordinator port (20000 + id % 10000, the script's choice) is free now."""
  rng = np.random.default_rng()
  while True:
    job_id = int(rng.integers(10_000, 100_000))
    with socket.socket() as s:
      try:
        s.bind(('127.0.0.1', 20000 + job_id % 10000))
      except OSError:
        continue
    return job_id


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [(r['step'], r['loss'], r['annotation_data_fingerprint'])
            for r in map(json.loads, f) if 'loss' in r]


@pytest.mark.slow
def test_a_preempted_job_saves_requeues_and_resumes_bit_exactly(
    tmp_path, tiny_data_dir, two_process_reference):
  """SLURM's SIGTERM reaches every process of both tasks: they save the same step, the job
  asks to be requeued, and the requeued job ends bit-identical to an uninterrupted run of the
  same 2 processes."""
  venv, steps, reference = _venv(str(tmp_path)), 20, two_process_reference
  workdir, job_id = str(tmp_path / 'preempted'), _job_id()
  job = _launch(tmp_path, venv, workdir, job_id, tiny_data_dir, steps)
  metrics, deadline = os.path.join(workdir, 'metrics.jsonl'), time.time() + 300
  while not (os.path.exists(metrics) and os.path.getsize(metrics)):
    assert job.poll() is None and time.time() < deadline, job.communicate()[0][-3000:]
    time.sleep(0.2)
  with open(tmp_path / 'standin' / 'srun.json') as f:
    os.kill(json.load(f)['pid'], signal.SIGTERM)       # slurmstepd signals the whole step
  output = job.communicate(timeout=300)[0]
  assert job.returncode == 0, output[-3000:]
  assert f'requeueing job {job_id}' in output, output[-3000:]
  with open(tmp_path / 'standin' / 'requeued') as f:
    assert f.read().split() == [str(job_id)]
  saved = [int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints')) if n.isdigit()]
  assert saved and 0 < max(saved) < steps, saved

  job = _launch(tmp_path, venv, workdir, job_id, tiny_data_dir, steps)     # the requeued job
  output = job.communicate(timeout=600)[0]
  assert job.returncode == 0 and 'requeueing' not in output, output[-3000:]
  assert _losses(workdir) == _losses(reference)
  (want_step, want), (got_step, got) = (checkpoint.load_state(w) for w in (reference, workdir))
  assert want_step == got_step == steps
  jax.tree.map(np.testing.assert_array_equal, got, want)
