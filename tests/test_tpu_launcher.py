"""launch/tpu_pod.sh run for real against a stand-in gcloud (tests/standins/gcloud) whose slices
are READY, PREEMPTED or absent and whose queued resources wait, then turn ACTIVE or SUSPENDED."""
import json
import os
import subprocess

import pytest

from conftest import REPO

SCRIPT = os.path.join(REPO, 'launch', 'tpu_pod.sh')
STANDINS = os.path.join(REPO, 'tests', 'standins')


def _launch(tmp_path, name, state=None, extra=(), waits=0):
  """Runs the launcher; returns (result, every gcloud call as its list of words)."""
  folder = tmp_path / 'standin'
  folder.mkdir()
  with open(folder / 'gcloud.json', 'w') as f:
    json.dump({'waits': waits, **(state or {})}, f)
  env = {'PATH': f'{STANDINS}:/usr/bin:/bin', 'HOME': str(tmp_path), 'STANDIN_DIR': str(folder),
         'TPU_POLL_SECONDS': '0'}
  try:
    result = subprocess.run(['bash', SCRIPT, f'--tpu={name}', '--zone=us-central2-b', *extra,
                             '--', 'train', '--config=configs/paper/ab_dino_coco.py',
                             '--workdir=gs://bucket/run'], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
  finally:
    if os.path.exists(f'/tmp/annoprop_jax_{name}.tar.gz'):
      os.remove(f'/tmp/annoprop_jax_{name}.tar.gz')
  with open(folder / 'gcloud.log') as f:
    calls = [[w for w in json.loads(line) if not w.startswith('--')] for line in f]
  with open(folder / 'gcloud.json') as f:
    final = json.load(f)
  return result, calls, final


def _verbs(calls):
  """The calls as 'tpu-vm create', 'queued-resources describe', ... in order."""
  return [f'{c[2]} {c[3]}' for c in calls]


def _started(calls):
  return any(c[3] == 'ssh' for c in calls)


def test_a_ready_slice_is_reused(tmp_path):
  result, calls, _ = _launch(tmp_path, 'ready', {'tpus': {'ready': 'READY'}})
  assert result.returncode == 0, result.stderr
  verbs = _verbs(calls)
  assert 'tpu-vm create' not in verbs and 'tpu-vm delete' not in verbs
  assert verbs[-5:] == ['tpu-vm scp'] + ['tpu-vm ssh'] * 4       # copy, stop, install, run, log


def test_a_preempted_slice_is_deleted_and_created_again_before_the_rerun(tmp_path):
  result, calls, final = _launch(tmp_path, 'spot1', {'tpus': {'spot1': 'PREEMPTED'}},
                                 ['--spot'])
  assert result.returncode == 0, result.stderr
  verbs = _verbs(calls)
  assert verbs.index('tpu-vm delete') < verbs.index('tpu-vm create') < verbs.index('tpu-vm scp')
  assert 'deleting it and asking for it again' in result.stderr
  assert final['tpus'] == {'spot1': 'READY'} and _started(calls)


def test_an_absent_slice_is_created(tmp_path):
  result, calls, _ = _launch(tmp_path, 'new1')
  assert result.returncode == 0, result.stderr
  assert 'tpu-vm delete' not in _verbs(calls) and 'tpu-vm create' in _verbs(calls)


def test_a_queued_spot_slice_is_waited_for(tmp_path):
  result, calls, final = _launch(tmp_path, 'queued1', extra=['--queued', '--spot',
                                                              '--accelerator=v5p-64'], waits=2)
  assert result.returncode == 0, result.stderr
  verbs = _verbs(calls)
  create = verbs.index('queued-resources create')
  assert verbs[create + 1:create + 4] == ['queued-resources describe'] * 3   # 2 waits, ACTIVE
  assert verbs[create + 4] == 'tpu-vm scp'
  with open(tmp_path / 'standin' / 'gcloud.log') as f:
    create_call = [json.loads(line) for line in f][create]
  assert {'--node-id=queued1', '--runtime-version=v2-alpha-tpuv5', '--spot',
          '--accelerator-type=v5p-64'} <= set(create_call)
  assert final['queued'] == {'queued1': 'ACTIVE'} and _started(calls)


def test_a_suspended_queued_resource_is_deleted_and_queued_again(tmp_path):
  result, calls, final = _launch(tmp_path, 'queued2', {'queued': {'queued2': 'SUSPENDED'}},
                                 ['--queued', '--spot'])
  assert result.returncode == 0, result.stderr
  verbs = _verbs(calls)
  assert verbs.index('queued-resources delete') < verbs.index('queued-resources create')
  assert final['queued'] == {'queued2': 'ACTIVE'}


@pytest.mark.parametrize('accelerator, version', [
    ('v4-32', 'tpu-ubuntu2204-base'), ('v5litepod-16', 'v2-alpha-tpuv5-lite'),
    ('v5p-64', 'v2-alpha-tpuv5'), ('v6e-8', 'v2-alpha-tpuv6e')])
def test_the_runtime_follows_the_accelerator(tmp_path, accelerator, version):
  result, _, _ = _launch(tmp_path, f'v{accelerator}', extra=[f'--accelerator={accelerator}'])
  assert result.returncode == 0, result.stderr
  with open(tmp_path / 'standin' / 'gcloud.log') as f:
    create = next(c for c in map(json.loads, f) if c[3] == 'create')
  assert f'--version={version}' in create
