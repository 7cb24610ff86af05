"""How the streams are read (``pipeline.reading_plan``): worker processes and threads sized for
the host when a config says -1, the explicit values kept, and a resume on a host of another
size reading with the worker count its data iterators were saved with."""
import pytest

from annoprop_jax import configuration
from annoprop_jax import train
from annoprop_jax.data import pipeline
from annoprop_jax.data import stream_spec
from conftest import REPO, tiny_config

AUTO = stream_spec.AUTO


def _paper():
  """The paper's AB_DINO streams with the batches the counts below were made for: 2048
  annotation images x 2 views (no local crops), 1024 bootstrap images x 4."""
  config = configuration.load(f'{REPO}/configs/paper/ab_dino_coco.py').unlock()
  config.data.annotation.update(batch_size=2048)
  config.data.annotation.local_views.num = 0
  config.data.bootstrap.update(batch_size=1024)
  return config


def test_paper_configs_are_sized_for_the_host():
  data = _paper().data
  # Work per step, in plain 224 px views: annotation 2048 images x (1 decode + 2 jittered
  # views x 2) = 10240, bootstrap 1024 x (1 + 4 plain views) = 5120: two thirds and one third
  # of the 14 spare cores of a 16-core host (9.33 and 4.67: the larger remainder rounds up).
  assert pipeline.reading_plan(data, ('annotation', 'bootstrap'), cores=16) == {
      'annotation': (9, 2), 'bootstrap': (5, 2)}
  # 96 cores (a SLURM task's share of a big node): 94 spare -> 62.67 and 31.33.
  assert pipeline.reading_plan(data, ('annotation', 'bootstrap'), cores=96) == {
      'annotation': (63, 2), 'bootstrap': (31, 2)}
  # Small hosts too: at least one worker per stream (2 spare cores: 1.33 and 0.67).
  for cores in (2, 4):
    assert pipeline.reading_plan(data, ('annotation', 'bootstrap'), cores=cores) == {
        'annotation': (1, 2), 'bootstrap': (1, 2)}


def test_explicit_values_stand_and_take_their_cores():
  data = _paper().data
  data.annotation.update(num_workers=3, num_threads=5)
  plan = pipeline.reading_plan(data, ('annotation', 'bootstrap'), cores=16)
  assert plan == {'annotation': (3, 5), 'bootstrap': (11, 2)}      # 16 - 2 - 3
  # Every auto stream gets a worker, even with few spare cores.
  data.annotation.update(num_workers=AUTO, num_threads=AUTO)
  data.bootstrap.batch_size = 1
  assert pipeline.reading_plan(data, ('annotation', 'bootstrap'), cores=5) == {
      'annotation': (2, 2), 'bootstrap': (1, 2)}


def test_saved_counts_decide_auto_streams_only():
  data = _paper().data
  plan = pipeline.reading_plan(data, ('annotation', 'bootstrap'), cores=32,
                               saved_workers={'annotation': 4})
  assert plan == {'annotation': (4, 2), 'bootstrap': (26, 2)}       # 32 - 2 - 4
  data.annotation.num_workers = 6          # explicit: the config's value, whatever was saved
  assert pipeline.reading_plan(data, ('annotation',), cores=32,
                               saved_workers={'annotation': 4})['annotation'][0] == 6


def test_config_accepts_auto_and_refuses_other_negatives():
  config = tiny_config('ab_dino_scenes')
  config.data.bootstrap.update(num_workers=AUTO, num_threads=AUTO)
  configuration.validate(config)
  config.data.bootstrap.num_threads = 0
  with pytest.raises(configuration.ConfigError, match='num_threads must be >= 1, or -1'):
    configuration.validate(config)


@pytest.mark.slow
def test_a_resume_on_a_smaller_host_keeps_the_saved_worker_count(tmp_path, tiny_data_dir,
                                                                 monkeypatch):
  """Started with -1 on a 4-core host (2 worker processes), resumed where -1 would mean 1 (3
  cores): the resume reads with the saved count, so its iterator restores."""
  config = tiny_config('simclr_scenes', **{
      'data.data_dir': tiny_data_dir, 'total_steps': 2, 'checkpoint_every': 2,
      'data.annotation.num_workers': AUTO})
  workdir = str(tmp_path / 'run')
  lines = []
  monkeypatch.setattr(pipeline, 'host_cores', lambda: 4)
  train.train(config, workdir, print_fn=lines.append)
  assert 'reading (4 cores): annotation 2 worker processes x 1 threads' in lines
  monkeypatch.setattr(pipeline, 'host_cores', lambda: 3)
  assert pipeline.reading_plan(config.data, ('annotation',)) == {'annotation': (1, 1)}
  config.unlock().total_steps = 3
  lines.clear()
  state = train.train(config, workdir, print_fn=lines.append, allow_config_change=True)
  assert any(line.startswith('Resumed from') for line in lines), lines
  assert 'reading (3 cores): annotation 2 worker processes x 1 threads' in lines
  assert int(state.step) == 3
