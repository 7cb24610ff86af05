"""Several JAX processes on localhost (CPU, jax.distributed with a 127.0.0.1 coordinator)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from annoprop_jax import multihost
from conftest import REPO, assert_same_update, xla_flags

WORKER = os.path.join(REPO, 'tests', 'multiprocess_worker.py')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices):
  return dict(os.environ, XLA_FLAGS=xla_flags(devices),
              JAX_PLATFORMS='cpu')


@pytest.mark.parametrize('env,expected', [
    ({}, None),
    ({'SLURM_NTASKS': '4', 'SLURM_STEP_ID': '0'}, 'slurm'),
    ({'SLURM_NTASKS': '4'}, None),                     # the batch script itself, not an srun step
    ({'SLURM_NTASKS': '1', 'SLURM_STEP_ID': '0'}, None),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, 'openmpi'),
    ({'TPU_WORKER_HOSTNAMES': 'host-0,host-1'}, 'tpu'),
    ({'TPU_WORKER_HOSTNAMES': 'host-0'}, None),
])
def test_detect_cluster(env, expected):
  assert multihost.detect_cluster(env) == expected


def test_single_process_does_not_start_the_distributed_runtime():
  assert multihost.initialize('auto', env={}) is None
  assert multihost.initialize('off', env={'SLURM_NTASKS': '2', 'SLURM_STEP_ID': '0'}) is None
  with pytest.raises(ValueError, match='needs --num_processes'):
    multihost.initialize('auto', coordinator_address='127.0.0.1:1234')


def _trains_as_one_process(tmp_path, data_dir, processes, meshes=None):
  """Runs the worker as PROCESSES processes sharing 4 CPU devices and as 1 process with all 4,
  on each of MESHES in turn (None: the config's mesh), and checks that both read the same global
  batches (every array of both streams, at every step), have the same losses and make the same
  3 updates (to 0.1% of the update). Returns, for each mesh, the two runs' {n: (results, params)}.
  """
  port, extra = _free_port(), [';'.join(meshes)] if meshes else []
  outs = {n: str(tmp_path / f'{n}') for n in (1, processes)}
  workers = [subprocess.Popen([sys.executable, WORKER, str(i), str(processes), str(port),
                               data_dir, outs[processes], *extra], cwd=REPO,
                              env=_env(4 // processes), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for i in range(processes)]
  single = subprocess.run([sys.executable, WORKER, '0', '1', '0', data_dir, outs[1], *extra],
                          cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  for w in workers:
    output = w.communicate(timeout=600)[0]
    assert w.returncode == 0, output[-3000:]
  runs = []
  for index in range(len(meshes or [None])):
    run = {n: (json.load(open(f'{out}.{index}.json')), np.load(f'{out}.{index}.npz'))
           for n, out in outs.items()}
    (one, params_one), (many, params_many) = run[1], run[processes]
    assert (one['process_count'], many['process_count']) == (1, processes)
    assert one['device_count'] == many['device_count'] == 4
    assert many['checksums'] == one['checksums']
    assert len({c['annotation/images'] for c in one['checksums']}) == 3   # new batches each step
    assert many['losses'] == pytest.approx(one['losses'], rel=1e-5)
    split = lambda z, when: {k.split('/', 1)[1]: z[k] for k in z.files if k.startswith(when)}
    assert_same_update(split(params_one, 'before'), split(params_one, 'after'),
                       split(params_many, 'after'), 1e-3, 'params')
    for key, value in split(params_one, 'before').items():
      np.testing.assert_array_equal(split(params_many, 'before')[key], value, err_msg=key)
    runs.append(run)
  return runs


@pytest.mark.slow
def test_two_processes_read_the_same_global_batches_and_make_the_same_updates(
    tmp_path, tiny_data_dir):
  """Each of 2 processes reads only its rows through the pipeline; together they are the
  1-process batches, and the updates are the same."""
  _trains_as_one_process(tmp_path, tiny_data_dir, 2)


@pytest.mark.slow
def test_two_process_training_stops_together_on_sigterm_and_logs_once(tmp_path, tiny_data_dir):
  port, workdir = _free_port(), str(tmp_path / 'run')
  args = ['-m', 'annoprop_jax.main', 'train', '--config=configs/supervised_objects.py:tiny',
          f'--workdir={workdir}', f'--config.data.data_dir={tiny_data_dir}',
          '--config.total_steps=100000', '--config.log_every=2',
          '--config.checkpoint_every=100000', f'--coordinator_address=127.0.0.1:{port}',
          '--num_processes=2']
  procs = [subprocess.Popen([sys.executable, *args, f'--process_id={i}'], cwd=REPO,
                            env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 240
  while not (os.path.exists(metrics) and os.path.getsize(metrics)) and time.time() < deadline:
    assert all(p.poll() is None for p in procs), [p.communicate()[0][-2000:] for p in procs]
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)      # only one process is told
  outputs = [p.communicate(timeout=240)[0] for p in procs]
  assert [p.returncode for p in procs] == [75, 75], [o[-2000:] for o in outputs]   # resume me
  stopped = [line for line in outputs[0].splitlines() if line.startswith('Stopped at step')]
  assert len(stopped) == 1, outputs[0][-2000:]
  step = int(stopped[0].split()[3].rstrip(';'))
  assert 'Stopped at step' not in outputs[1]          # process 1 prints nothing of the loop
  checkpoints = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert str(step) in checkpoints
  with open(metrics) as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps == sorted(set(steps)) and steps[-1] == step    # one writer, up to the stop step


@pytest.mark.slow
def test_compile_joins_the_processes_and_compiles_their_mesh():
  """`compile` on a pod: every process runs it, and the mesh spans all processes' devices."""
  port = _free_port()
  args = ['-m', 'annoprop_jax.main', 'compile', '--config=configs/ab_dino_scenes.py:tiny',
          '--mesh=data=4', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2']
  procs = [subprocess.Popen([sys.executable, *args, f'--process_id={i}'], cwd=REPO,
                            env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
  assert 'mesh data=4 fsdp=1 tensor=1 on 4 cpu devices' in outputs[0][0], outputs[0]
  assert outputs[1][0] == ''                          # one report, from process 0


@pytest.mark.slow
def test_a_tensor_axis_across_processes_trains_as_one_process(tmp_path, tiny_data_dir):
  """4 processes x 1 device: the processes along the tensor axis hold the same batch shard,
  so they must read the same rows; 3 steps equal one process with the 4 devices."""
  _trains_as_one_process(tmp_path, tiny_data_dir, 4, ['data=2,tensor=2', 'fsdp=2,tensor=2'])


@pytest.mark.slow
def test_two_processes_extract_the_features_one_process_does(tmp_path, tiny_data_dir):
  """A streamed split encoded by 2 processes x 2 devices: every process gets the targets and
  features one process with 4 devices gets; each reads the labels of every other record and
  decodes only its rows of each batch of 8 (4 each)."""
  worker, port = os.path.join(REPO, 'tests', 'extraction_worker.py'), _free_port()
  out = str(tmp_path / 'features')
  procs = [subprocess.Popen([sys.executable, worker, str(i), '2', str(port), tiny_data_dir,
                             out + '_two'], cwd=REPO, env=_env(2), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  single = subprocess.run([sys.executable, worker, '0', '1', '0', tiny_data_dir, out + '_one'],
                          cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  for p in procs:
    output = p.communicate(timeout=600)[0]
    assert p.returncode == 0, output[-3000:]
  one = np.load(out + '_one.0.npz')
  two = [np.load(f'{out}_two.{i}.npz') for i in range(2)]
  assert one['pooled'].shape[0] == 21 and one['tokens'].shape[0] == 21
  for part in two:
    np.testing.assert_array_equal(part['targets'], one['targets'])
    np.testing.assert_allclose(part['pooled'], one['pooled'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(part['tokens'], one['tokens'], rtol=1e-5, atol=1e-6)
  # 21 images in batches of 8: process 0 reads rows 0-3, 8-11, 16-19 and process 1 the rest,
  # each record once; one process reads all 21.
  np.testing.assert_array_equal(one['decoded'], np.arange(21))
  # The labels: every other record each, gathered.
  np.testing.assert_array_equal(one['label_reads'], np.arange(21))
  np.testing.assert_array_equal(two[0]['label_reads'], np.arange(0, 21, 2))
  np.testing.assert_array_equal(two[1]['label_reads'], np.arange(1, 21, 2))
  np.testing.assert_array_equal(two[0]['decoded'], [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19])
  np.testing.assert_array_equal(two[1]['decoded'], [4, 5, 6, 7, 12, 13, 14, 15, 20])
  assert all((p['reads'] == 1).all() for p in (one, *two))
