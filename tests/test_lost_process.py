"""A lost process: of 2 training processes one is SIGKILLed; the other stops within the bound,
with one line naming it and exit 75, and the rerun resumes bit-identically."""
import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from annoprop_jax import checkpoint
from conftest import finish, two_process_training

pytestmark = pytest.mark.slow
LOST_SECONDS = 5


def _steps(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [(r['step'], r['loss'], r['bootstrap_data_fingerprint'])
            for r in map(json.loads, f) if 'loss' in r]


def _start(workdir, data_dir):
  return two_process_training(workdir, data_dir, 20, f'--lost_process_seconds={LOST_SECONDS}')


def test_the_process_left_stops_with_one_line_and_the_rerun_resumes(
    tmp_path, tiny_data_dir, two_process_reference):
  reference, workdir = two_process_reference, str(tmp_path / 'run')
  processes = _start(workdir, tiny_data_dir)
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

  finish(_start(workdir, tiny_data_dir))          # the rerun
  assert _steps(workdir) == _steps(reference)
  (want_step, want), (got_step, got) = (checkpoint.load_state(w) for w in (reference, workdir))
  assert want_step == got_step == 20
  jax.tree.map(np.testing.assert_array_equal, got, want)
