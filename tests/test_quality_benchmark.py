"""benchmarks/quality.py: equal-views budgets, config overrides, and the table of means and
spreads it writes (the training itself is what test_evaluation covers)."""
import argparse
import importlib.util
import json
import os

import pytest

from annoprop_jax import configuration
from conftest import REPO

_spec = importlib.util.spec_from_file_location(
    'quality', os.path.join(REPO, 'benchmarks', 'quality.py'))
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)


def args(**kwargs):
  defaults = dict(views=192000, set=[], data_dir='/tmp/d', dataset='scenes',
                  probe_dataset='scenes', probe_tasks='objects,presence,count',
                  train_examples=2000, test_examples=1000, all_probes=False, score_on='test',
                  gammas='', grid='')
  return argparse.Namespace(**{**defaults, **kwargs})


# Views per step, counted by hand from the configs: supervised 128 x 1; DINO 64 x 2; AB_DINO
# 32 x 2 + 16 x 4; SimCLR 128 x 2; AB_SimCLR 64 x 2 + 32 x 4; CLIP 128 x 1; AB_CLIP 64 x 1 +
# 16 x 4; random_init has DINO's config (and trains none of it). 192,000 views / that.
EXPECTED_STEPS = {'random_init': 1500, 'supervised': 1500, 'simclr': 750, 'ab_simclr': 750,
                  'dino': 1500, 'ab_dino': 1500, 'clip': 1500, 'ab_clip': 1500}


def test_every_method_gets_the_same_number_of_views():
  assert set(EXPECTED_STEPS) == set(quality.METHODS)
  for method, steps in EXPECTED_STEPS.items():
    config = quality.method_config(method, seed=1, args=args())
    assert (config.total_steps, config.seed) == (steps, 1), method
  assert quality.method_config('dino', 0, args(views=96000)).total_steps == 750


def test_control_arms_change_one_thing_each():
  ab = quality.method_config('ab_simclr', 0, args())
  weight0 = quality.method_config('ab_simclr_weight0', 0, args())
  noaction = quality.method_config('ab_dino_noaction', 0, args())
  assert (ab.objective.bootstrap.weight, weight0.objective.bootstrap.weight) == (1.0, 0.0)
  weight0.objective.bootstrap.weight = 1.0
  assert weight0.to_dict() == ab.to_dict()
  assert noaction.objective.bootstrap.actions is False
  assert quality.method_config('ab_dino', 0, args()).objective.bootstrap.actions is True
  # Equal annotation images, counted by hand: AB_SimCLR 750 steps x 64 = 48,000 images, SimCLR
  # takes 128 a step: 375 steps (96k views). AB_DINO 1,500 x 32 = 48,000, DINO 64 a step: 750.
  # AB_Sup 192,000 / (64 x 1 + 16 x 4) = 1,500 steps x 64 labelled images; supervised 128: 750.
  for arm, steps in (('simclr_equal_images', 375), ('dino_equal_images', 750),
                     ('supervised_equal_images', 750)):
    assert quality.method_config(arm, 0, args()).total_steps == steps, arm


def test_settings_override_every_method_and_unknown_keys_are_errors():
  settings = [quality.parse_setting('data.scenes.texture_strength=0.0'),
              quality.parse_setting('data.scenes.object_size=[0.4, 0.6]')]
  config = quality.method_config('ab_clip', 0, args(set=settings, probe_tasks='classes',
                                                    probe_dataset='/data/folders'))
  assert config.data.scenes.texture_strength == 0.0
  assert config.data.scenes.object_size == (0.4, 0.6)          # a tuple stays a tuple
  assert config.evaluation.tasks == ('classes',)
  assert config.evaluation.dataset == '/data/folders'
  assert quality.parse_setting('evaluation.params=target') == ('evaluation.params', 'target')
  with pytest.raises(configuration.ConfigError, match='texture_strength'):
    quality.method_config('dino', 0, args(set=[('data.scenes.texture_strenght', 0.0)]))
  with pytest.raises(argparse.ArgumentTypeError, match='KEY=VALUE'):
    quality.parse_setting('data.scenes.texture_strength')


def test_means_spreads_and_the_headline_table():
  def record(method, seed, linear, presence):
    scores = quality.with_headline({'objects_linear': linear, 'presence_linear': presence})
    return {'method': method, 'seed': seed, 'steps': 10, 'views': 1280, 'seconds': 5.0,
            'scores': scores}
  runs = {'dino/seed0': record('dino', 0, 0.2, 0.5), 'dino/seed1': record('dino', 1, 0.3, 0.7),
          'dino/seed2': record('dino', 2, 0.7, 0.6), 'random_init/seed0': record(
              'random_init', 0, 0.1, 0.25)}
  assert runs['dino/seed0']['scores']['presence_map'] == 0.5
  assert runs['dino/seed0']['scores']['mean'] == pytest.approx(0.35)   # of the probe scores
  assert quality.with_headline({'boxes_linear': 0.2, 'boxes_linear_small': 0.9})['mean'] == 0.2
  means, table = quality.aggregate(runs)
  assert means['dino']['objects_linear'] == pytest.approx(0.4)
  assert table['dino']['presence_map'] == pytest.approx((0.6, 0.2, 3))   # mean, max - min, n
  lines = quality.markdown(table, runs).splitlines()
  assert lines[0] == ('| method | objects_linear | presence_map | mean | seeds | steps | '
                      'wall-clock s |')
  assert lines[2] == '| random_init | 0.100 | 0.250 | 0.175 | 1 | 10 | 5 |'   # METHODS order
  assert lines[3] == '| dino | 0.400 ±0.250 | 0.600 ±0.100 | 0.500 ±0.150 | 3 | 10 | 5 |'


def test_the_plot_is_drawn_from_the_curves_the_runs_file_keeps(tmp_path, capsys):
  def record(method, curve):
    return {'method': method, 'seed': 0, 'steps': 10, 'views': 1280, 'seconds': 5.0,
            'scores': {'objects_linear': 0.3}, **({'curve': curve} if curve else {})}
  path = str(tmp_path / 'curves.png')
  old = {'dino/seed0': record('dino', None)}           # recorded before curves were kept
  quality.plot(old, args(), path)
  assert not os.path.exists(path) and "['dino']" in capsys.readouterr().out
  runs = {**old, 'simclr/seed0': record('simclr', [[640, 0.2], [1280, 0.3]])}
  quality.plot(runs, args(), path)
  assert os.path.getsize(path) > 1000
  assert "['dino']" in capsys.readouterr().out
  # A method whose seed 0 kept no curve is drawn from its next seed that did.
  runs['dino/seed1'] = {**record('dino', [[640, 0.1], [1280, 0.15]]), 'seed': 1}
  quality.plot(runs, args(), str(tmp_path / 'all.png'))
  assert 'no objects_linear curve' not in capsys.readouterr().out


def test_a_run_stopped_by_a_signal_is_not_recorded(monkeypatch, tmp_path):
  """train.train returns early on SIGTERM; the benchmark must exit, not probe and record it."""
  stopped_at = argparse.Namespace(step=1126)          # the TrainState's step after a SIGTERM
  monkeypatch.setattr(quality.train, 'train', lambda config, workdir: stopped_at)
  probed = []
  monkeypatch.setattr(quality.evaluator_lib, 'evaluate_checkpoint',
                      lambda *a: probed.append(a) or (None, {}))
  with pytest.raises(SystemExit, match='supervised/seed0 stopped at step 1126 of 1500'):
    quality.run('supervised', 0, args(workdir=str(tmp_path)))
  assert not probed


@pytest.mark.parametrize('all_probes', [False, True])
def test_which_probes_run_on_which_tasks(all_probes, monkeypatch, tmp_path):
  monkeypatch.setattr(quality.train, 'train', lambda config, workdir: argparse.Namespace(
      step=config.total_steps))
  monkeypatch.setattr(quality, 'probe_curve', lambda *a: [])
  monkeypatch.setattr(quality, 'last_training_metrics', lambda workdir: {})
  calls = []

  def evaluate_checkpoint(evaluator, *unused):
    ec = evaluator.eval_config
    calls.append((tuple(ec.tasks), tuple(ec.probes)))
    return None, {f'{t}_{p}': 0.5 for t in ec.tasks for p in ec.probes}

  monkeypatch.setattr(quality.evaluator_lib, 'evaluate_checkpoint', evaluate_checkpoint)
  _, record = quality.run('dino', 0, args(workdir=str(tmp_path), all_probes=all_probes,
                                          probe_tasks='objects,boxes,count'))
  every = quality.settings.PROBES
  assert calls == [(('objects',), every), (('boxes', 'count'), every if all_probes
                                           else ('linear',))]
  assert ('boxes_attentive' in record['scores']) == all_probes


def test_the_record_keeps_the_last_training_rows_losses_and_targets(tmp_path):
  rows = [{'step': 5, 'loss': 2.0, 'teacher_entropy': 5.0},
          {'step': 10, 'loss': 1.5, 'teacher_entropy': 4.0, 'target_staleness': 0.02,
           'learning_rate': 1e-3},
          {'step': 10, 'eval/objects_linear': 0.3}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  assert quality.last_training_metrics(str(tmp_path)) == {
      'loss': 1.5, 'teacher_entropy': 4.0, 'target_staleness': 0.02}


def test_score_panels_hold_each_probes_mean_and_half_range(tmp_path):
  table = {'dino': {'objects_linear': (0.4, 0.2, 3), 'boxes_attentive': (0.5, 0.1, 3)},
           'random_init': {'objects_linear': (0.1, 0.0, 1)},
           'ab_dino': {'objects_linear': (0.45, 0.3, 3)}}
  panels = quality.score_panels(table, ['objects', 'boxes', 'count'])
  assert panels == {   # arms in ARMS order; tasks and probes without scores are left out
      'objects': {'linear': [('random_init', 0.1, 0.0), ('dino', 0.4, 0.1),
                             ('ab_dino', 0.45, 0.15)]},
      'boxes': {'attentive': [('dino', 0.5, 0.05)]}}
  quality.plot_scores(table, ['objects', 'boxes'], str(tmp_path / 'scores.png'))
  assert os.path.getsize(tmp_path / 'scores.png') > 1000


def test_a_grid_names_its_rows_as_a_sweep_does_and_sets_each_point():
  points = quality.grid_points(args(grid='target_network.rate=0.01,0.1;data.annotation.'
                                        'batch_size=32'))
  assert [name for name, _ in points] == ['_rate=0.01,batch_size=32', '_rate=0.1,batch_size=32']
  config = quality.method_config('dino', 0, args(), points[1][1])
  assert config.target_network.rate == 0.1 and config.data.annotation.batch_size == 32
  assert config.total_steps == 192000 // (32 * 2)           # the steps follow the point's batch
  # The gamma files keep their row names; an unknown key is an error before anything runs.
  assert quality.grid_points(args(gammas='0,0.5'))[1] == (
      '_gamma0.5', {'objective.bootstrap.gamma': 0.5})
  with pytest.raises(configuration.ConfigError, match="'target_network.rat' does not exist"):
    quality.method_config('dino', 0, args(), {'target_network.rat': 0.1})
  assert quality.method_order('ab_simclr_rate=0.1') > quality.method_order('ab_simclr')
  assert quality.method_order('ab_simclr_weight0') > quality.method_order('ab_simclr_rate=0.1')
