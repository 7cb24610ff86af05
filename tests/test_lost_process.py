"""A lost process: of 2 training processes one is SIGKILLed; the other stops within the bound,
with one line naming it and exit 75, and the rerun resumes bit-identically."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from annoprop_jax import checkpoint
from conftest import REPO, xla_flags

pytestmark = pytest.mark.slow
LOST_SECONDS = 5


def _start(workdir, data_dir, steps):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu')
  return [subprocess.Popen(
      [sys.executable, '-m', 'annoprop_jax.main', 'train', '--config=configs/ab_dino_scenes.py:tiny',
       f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
       f'--config.total_steps={steps}', '--config.log_every=1', '--config.checkpoint_every=10',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
       f'--lost_process_seconds={LOST_SECONDS}'], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(processes):
  outputs = [p.communicate(timeout=600) for p in processes]
  assert [p.returncode for p in processes] == [0, 0], [e[-3000:] for _, e in outputs]


def _steps(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [(r['step'], r['loss'], r['bootstrap_data_fingerprint'])
            for r in map(json.loads, f) if 'loss' in r]


def test_the_process_left_stops_with_one_line_and_the_rerun_resumes(tmp_path, tiny_data_dir):
  steps, reference, workdir = 20, str(tmp_path / 'reference'), str(tmp_path / 'run')
  _finish(_start(reference, tiny_data_dir, steps))

  processes = _start(workdir, tiny_data_dir, steps)
  metrics, deadline = os.path.join(workdir, 'metrics.jsonl'), time.time() + 300
  while not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 12):
    assert all(p.poll() is None for p in processes) and time.time() < deadline
    time.sleep(0.1)
  processes[1].send_signal(signal.SIGKILL)             # a lost host
  lost_at = time.perf_counter()
  _, err = processes[0].communicate(timeout=300)
  seconds = time.perf_counter() - lost_at
  processes[1].communicate()
  lines = err.strip().splitlines()
  assert processes[0].returncode == 75, err[-3000:]
  assert lines[-1].startswith(f'error: process 1 of 2 stopped answering for {LOST_SECONDS} s'), \
      lines[-3:]
  assert 'Traceback' not in err, err[-3000:]
  assert seconds < LOST_SECONDS + 30, seconds
  assert not os.path.exists(os.path.join(workdir, 'lock'))

  _finish(_start(workdir, tiny_data_dir, steps))          # the rerun
  assert _steps(workdir) == _steps(reference)
  (want_step, want), (got_step, got) = (checkpoint.load_state(w) for w in (reference, workdir))
  assert want_step == got_step == steps
  jax.tree.map(np.testing.assert_array_equal, got, want)
