"""benchmarks/accelerator.py at toy sizes on the CPU: every stage runs and reports figures that
hang together, so that the first accelerator it meets finds it working."""
import collections
import json
import os
import sys

import pytest

from annoprop_jax.data import pipeline
from conftest import REPO
import test_golden_losses  # pylint: disable=g-bad-import-order

sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import accelerator  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.slow


def _records(tmp_path, *args):
  out = tmp_path / 'accelerator.jsonl'
  accelerator.main(['--tiny', f'--out={out}', f'--data_dir={tmp_path}', '--sizes=cpu_tiny/8',
                    '--rounds=1', '--window_s=0.05', '--pipeline_batches=2', *args])
  stages = collections.defaultdict(list)
  for line in out.read_text().splitlines():
    record = json.loads(line)
    stages[record['stage']].append(record)
  return stages


def test_every_stage_measures_on_the_cpu(tmp_path):
  # Fewer compiles than the GPU run: one golden config, the A/Bs whose programs are new code
  # here (xla attention is tests/test_attention.py's, micro-batches tests/test_scale_out.py's).
  stages = _records(tmp_path, '--budget_s=900', '--peak_tflops=0.25',
                    '--golden=configs/paper/ab_dino_coco.py',
                    '--ab_variants=attention_plain,layer_norm,deterministic,wait')
  failed = [r for rs in stages.values() for r in rs if 'failed' in r or 'skipped' in r]
  assert not failed, failed
  (env,) = stages['env']
  assert env['platform'] == 'cpu' and env['peak_tflops'] == 0.25 and env['matmul_tflops'] > 0
  steps = {r['name']: r for r in stages['step']}
  assert sorted(steps) == ['ab_dino cpu_tiny/8', 'dino cpu_tiny/8']
  for name, record in steps.items():
    assert record['views'] == 16 and record['temp_bytes'] > 0
    # XLA's count of the step against the ViT's forward pass per view, counted by hand: the
    # student's (online network's) forward and backward (3 passes) and the teacher's (target
    # network's) forward (1), plus the heads, the loss and the optimizer, and for AB the
    # annotation decoder and its head: 4 to 6 passes, not 2 (half the views) nor 8 (twice).
    high = 5.0 if name.startswith('dino') else 6.0
    assert 4.0 < record['flops_over_encoder_forward'] < high, record
    assert record['mfu'] == pytest.approx(
        record['flops_per_step'] / (record['step_ms'] / 1000) / 0.25e12)
  (ratio,) = stages['ratio']
  assert ratio['ratio'] == pytest.approx(steps['ab_dino cpu_tiny/8']['step_ms']
                                         / steps['dino cpu_tiny/8']['step_ms'], rel=1e-6)
  golden = {(r['config'], r['precision']): r for r in stages['golden']}
  assert sorted(golden) == [('configs/paper/ab_dino_coco.py', 'default'),
                            ('configs/paper/ab_dino_coco.py', 'highest')]
  # The suite's XLA flags are the ones the golden losses were recorded with: bit for bit on
  # the CPU model and jax they were recorded on, else within the stage's own tolerance.
  assert all(r['within'] for r in golden.values()), golden
  with open(test_golden_losses.GOLDEN) as f:
    if json.load(f)['versions'] == test_golden_losses.versions():
      assert all(r['max_relative_deviation'] == 0.0 for r in golden.values()), golden
  (reading,) = stages['pipeline']
  cores = pipeline.host_cores()
  assert reading['host_cores'] == cores and reading['views_per_s'] > 0
  assert reading['cores_one_device_needs'] == pytest.approx(
      reading['demand_views_per_s'] / (reading['views_per_s'] / cores))
  assert {r['name'] for r in stages['ab']} == {
      'attention plain (Flax) vs auto', 'LayerNorm Flax vs ours', 'deterministic off vs on',
      'host waits every 10 steps vs never'}
  assert all(r['variant_over_base'] > 0 for r in stages['ab'])
  assert [(r['name'], r['params_bit_identical']) for r in stages['reproducible']] == [
      ('deterministic on', True), ('deterministic off', True)]      # a CPU is deterministic


def test_stages_that_do_not_fit_the_budget_are_skipped(tmp_path):
  stages = _records(tmp_path, '--budget_s=0')
  assert [name for name in stages if name != 'done'] == [    # one size: no 'large'
      name for name in accelerator.STAGES if name != 'large']
  assert all('skipped' in r for name, rs in stages.items() if name != 'done' for r in rs)


def test_a_step_that_fails_with_fused_attention_is_measured_with_flax_attention(
    tmp_path, monkeypatch):
  real = accelerator.Step

  def cudnn_breaks(config):
    if config.model.attention == 'auto':
      raise RuntimeError('cuDNN: no kernel for this shape\nmore')
    return real(config)

  monkeypatch.setattr(accelerator, 'Step', cudnn_breaks)
  stages = _records(tmp_path, '--budget_s=300', '--stages=step')
  failed = [r for r in stages['step'] if 'failed' in r]
  assert [r['failed'] for r in failed] == ['RuntimeError: cuDNN: no kernel for this shape'] * 2
  measured = [r for r in stages['step'] if 'failed' not in r]
  assert [(r['name'], r['attention']) for r in measured] == [
      ('dino cpu_tiny/8', 'plain'), ('ab_dino cpu_tiny/8', 'plain')]
  assert all(r['step_ms'] > 0 for r in measured) and stages['ratio'][0]['ratio'] > 0
