"""Weights & Biases, offline (nothing leaves the machine): a run's scalars reach its W&B run, a
resumed run writes under the same W&B run id, and W&B that cannot start is a warning."""
import json

import pytest

from annoprop_jax import configuration
from annoprop_jax import train
from conftest import tiny_config

pytest.importorskip('wandb')


def _records(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_an_offline_run_logs_its_scalars_and_a_resume_appends_to_it(tmp_path, tiny_data_dir,
                                                                    monkeypatch):
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  config = tiny_config('supervised_objects', **{
      'data.data_dir': tiny_data_dir, 'total_steps': 10, 'checkpoint_every': 10,
      'wandb.project': 'annoprop_test'})
  train.train(config, str(tmp_path), print_fn=lambda line: None)
  run_id = (tmp_path / 'wandb_id').read_text()
  first = list((tmp_path / 'wandb').glob(f'offline-run-*-{run_id}/run-{run_id}.wandb'))
  assert len(first) == 1
  logged = first[0].read_bytes()
  losses = {r['step']: r['loss'] for r in _records(tmp_path / 'metrics.jsonl') if 'loss' in r}
  assert sorted(losses) == [5, 10]
  assert b'train/loss' in logged
  for loss in losses.values():                     # each logged value, as W&B stores it
    assert json.dumps(loss).encode() in logged

  # The resume (to 20 steps) appends to the same W&B run: a second offline record of one id.
  config.unlock().total_steps = 20
  train.train(config, str(tmp_path), print_fn=lambda line: None, allow_config_change=True)
  assert (tmp_path / 'wandb_id').read_text() == run_id
  files = sorted((tmp_path / 'wandb').glob('offline-run-*/run-*.wandb'))
  assert len(files) == 2 and all(f.name == f'run-{run_id}.wandb' for f in files)
  second = (set(files) - set(first)).pop().read_bytes()
  losses = {r['step']: r['loss'] for r in _records(tmp_path / 'metrics.jsonl') if 'loss' in r}
  assert sorted(losses) == [5, 10, 15, 20]
  assert json.dumps(losses[20]).encode() in second
  assert json.dumps(losses[5]).encode() not in second


def test_wandb_block_is_checked():
  config = tiny_config('dino_scenes', **{'wandb.mode': 'online-ish'})
  with pytest.raises(configuration.ConfigError, match="wandb.mode must be one of online, offline"):
    configuration.validate(config)


def test_wandb_that_cannot_start_is_one_warning(monkeypatch, tmp_path):
  import wandb  # pylint: disable=g-import-not-at-top
  from annoprop_jax import wandb_mirror  # pylint: disable=g-import-not-at-top
  def refuse(**kwargs):
    raise wandb.errors.CommError('Network error (ConnectionError)\nretrying gave up')
  monkeypatch.setattr(wandb, 'init', refuse)
  lines = []
  config = tiny_config('supervised_objects', **{'wandb.project': 'annoprop_test'})
  assert wandb_mirror.open_mirror(config, str(tmp_path), True, lines.append) is None
  assert lines == ['warning: Weights & Biases did not start (CommError: retrying gave up); '
                   'training without it']
