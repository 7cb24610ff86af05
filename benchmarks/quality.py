"""Learning quality of every method at an equal budget: train on scenes, probe the frozen encoder.

  nice -n 10 python benchmarks/quality.py --views=192000 --seeds=3 \
      --set data.scenes.texture_strength=0.0                # RESULTS.md's table
  nice -n 10 python benchmarks/quality.py --views=192000 --seeds=1 --methods=ab_simclr \
      --gammas=0,0.25,0.5,0.75 --set data.scenes.texture_strength=0.0 \
      --out=benchmarks/results/gamma.json                  # the gamma sweep
  nice -n 10 python benchmarks/quality.py --seeds=1 --methods=ab_simclr \
      --grid='target_network.rate=0.01,0.03,0.1' ...       # any keys: ab_simclr_rate=0.03, ...
  python benchmarks/quality.py --dataset=~/data/coco --probe_dataset=~/data/imagenette \
      --probe_tasks=classes --methods=simclr,ab_simclr     # prepared datasets (see `prepare`)

Every arm (`--methods`) trains the same demo ViT for the same number of training views (the
paper's accounting: every view of both streams counts, so steps = views / views per step) from
its CPU config in configs/, with `--seed` 0..seeds-1; `random_init` is the untrained encoder.
Besides the methods, the controls of each AB variant X (ab_simclr, ab_dino, ab_clip):
  X_weight0            the AB config with AB loss weight 0 (same data, views and schedule)
  X_noaction           the decoder sees one constant move, never the box
  BASE_equal_images    the base method at X's annotation images (its own full schedule)
  ab_sup, supervised_equal_images   decoupled AB_Sup, and supervised at its labelled images
--grid runs every arm at each point of a grid of config keys (rows ARM_KEY=VALUE). During
training the `objects` task is probed (linear, kNN) at 4 points for the curve; at the end every
probe runs on the first task (objects) and the linear probe on the others (`--all_probes`: every
probe on every task, e.g. with `--probe_tasks=objects,boxes,presence,count`), on the encoder
`evaluation.params` picks (the EMA teacher for the DINO family). Results are appended per run to
OUT's `runs` file, so an interrupted benchmark resumes where it stopped (a run stopped by
SIGTERM resumes from the checkpoint it saved). Runs go seed-major: every method's seed 0 first.
The arms of `--one_seed` (default random_init and supervised, the references) run seed 0 only.
Writes:

  OUT                    {method: {task_probe: mean over seeds}}, plus the headline aliases
                         presence_map (presence_linear) and count_acc (count_linear)
  OUT_runs.json          every run: scores, steps, views, wall-clock seconds, and the curve of
                         <first task>_linear against training views
  OUT_curves.png         those curves, a line per method (its lowest seed with a curve)
  OUT_scores.png         a panel per task: every arm's mean score per probe, error bars of
                         half the range over seeds
and prints a Markdown table (mean +- spread over seeds) for benchmarks/RESULTS.md.
"""
import argparse
import dataclasses
import json
import os
import time

import jax
import numpy as np

from annoprop_jax import configuration
from annoprop_jax import metrics as metrics_lib
from annoprop_jax import objectives
from annoprop_jax import sharding
from annoprop_jax import sweep
from annoprop_jax import train
from annoprop_jax.data import pipeline
from annoprop_jax.evaluation import evaluator as evaluator_lib
from annoprop_jax.evaluation import settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



@dataclasses.dataclass(frozen=True)
class Arm:
  """One row of the benchmark: a config of configs/ with its variant ('ab_dino_scenes:control=
  weight0', as --config takes it), overrides, and its budget: --views, or the annotation images
  that arm ``match`` sees in --views (its own full schedule)."""
  config: str
  overrides: tuple = ()          # (dotted key, value) pairs
  match: str = ''


def _arms():
  arms = {'random_init': Arm('dino_scenes'), 'supervised': Arm('supervised_objects')}
  for base, ab in (('simclr', 'ab_simclr'), ('dino', 'ab_dino'), ('clip', 'ab_clip')):
    arms[base] = Arm(f'{base}_scenes')
    arms[ab] = Arm(f'{ab}_scenes')
    # Controls: the AB run without its loss (same data, views and schedule), the AB run whose
    # decoder never sees the box, and the base at the AB run's annotation images (half the views).
    arms[f'{ab}_weight0'] = Arm(f'{ab}_scenes:control=weight0')
    arms[f'{ab}_noaction'] = Arm(f'{ab}_scenes:control=noaction')
    arms[f'{base}_equal_images'] = Arm(f'{base}_scenes', match=ab)
  # Decoupled AB_Sup (labels of `objects`, bootstrapping on scenes) and supervised at its labelled
  # images (supervised at equal views is `supervised`).
  arms['ab_sup'] = Arm('ab_sup_scenes')
  arms['supervised_equal_images'] = Arm('supervised_objects', match='ab_sup')
  arms['mae'] = Arm('mae_scenes')             # the paper's baselines without an AB variant
  arms['ijepa'] = Arm('ijepa_scenes')
  arms['slip'] = Arm('slip_scenes')
  arms['silc'] = Arm('silc_scenes')
  return arms


ARMS = _arms()
# The rows of the last matrix (the default --methods).
METHODS = ('random_init', 'supervised', 'simclr', 'ab_simclr', 'dino', 'ab_dino', 'clip',
           'ab_clip')


def parse_setting(text):
  """'data.scenes.texture_strength=0.0' -> ('data.scenes.texture_strength', 0.0)."""
  key, sep, value = text.partition('=')
  if not sep:
    raise argparse.ArgumentTypeError(f'--set wants KEY=VALUE, got {text!r}')
  return key, sweep.parse_value(value)         # a Python literal, else a bare string


def apply_settings(config, settings):
  """Sets each dotted key of ``settings``; a key the config does not have is a ConfigError."""
  return configuration.override(config, settings)


def _load(arm, args, point=None):
  """The arm's config with --set, then the arm's overrides, then the grid ``point``'s."""
  name, colon, variant = arm.config.partition(':')
  config = configuration.load(os.path.join(REPO, 'configs', name + '.py') + colon
                              + variant).unlock()
  apply_settings(config, args.set)
  apply_settings(config, arm.overrides)
  return apply_settings(config, (point or {}).items())


def training_steps(method, args, point=None):
  """Optimizer steps of ``method``: --views of its own, or ``match``'s annotation images."""
  arm = ARMS[method]
  if not arm.match:
    return max(1, args.views // configuration.views_per_step(_load(arm, args, point)))
  other = _load(ARMS[arm.match], args, point)
  images = args.views // configuration.views_per_step(other) * other.data.annotation.batch_size
  return max(1, images // _load(arm, args, point).data.annotation.batch_size)


def grid_points(args):
  """[(name suffix, {dotted key: value})]: the points of --grid, expanded and named as a
  ``sweep`` names its runs ('_rate=0.03'); --gammas keeps its files' names ('_gamma0.25'); one
  unnamed point without either."""
  if args.gammas and args.grid:
    raise configuration.ConfigError('--gammas and --grid: give the gammas in --grid instead')
  if args.gammas:
    return [(f'_gamma{float(g):g}', {'objective.bootstrap.gamma': float(g)})
            for g in args.gammas.split(',')]
  if not args.grid:
    return [('', {})]
  points = sweep.parse_grid(args.grid)
  return [('_' + name, point) for name, point in zip(sweep.run_names(points), points)]


def method_config(method, seed, args, point=None):
  config = _load(ARMS[method], args, point)
  config.seed = seed
  config.data.data_dir = args.data_dir
  if args.dataset != 'scenes':
    for name in ('annotation', 'bootstrap'):
      if name in config.data and config.data[name].split == 'train':
        config.data[name].dataset = args.dataset
  steps = training_steps(method, args, point)
  config.update(total_steps=steps, log_every=max(1, steps // 20), checkpoint_every=steps)
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, steps // 10)
  config.evaluation.update(train_examples=args.train_examples, test_examples=args.test_examples,
                           dataset=args.probe_dataset, tasks=tuple(args.probe_tasks.split(',')),
                           score_on=args.score_on,
                           visualize=False)   # scores only: no pictures at each evaluation
  return config


def run(method, seed, args, point=('', None)):
  """Trains (unless random_init) and probes one (method, seed) at one grid ``point`` (its name
  suffix, its overrides); returns its record."""
  config = method_config(method, seed, args, point[1])
  name = method + point[0]
  workdir = os.path.join(args.workdir, name, f'seed{seed}')
  start = time.perf_counter()
  tasks = config.evaluation.tasks
  new_evaluator = lambda: evaluator_lib.Evaluator(config.evaluation, config.data,
                                                  configuration.encoder_config(config),
                                                  sharding.make_mesh(config.mesh))
  if method == 'random_init':
    objective = objectives.build(config.objective, configuration.encoder_config(config))
    example = {n: pipeline.zeros_batch(config.data[n]) for n in objective.streams}
    params, _ = objective.init(jax.random.PRNGKey(seed), example)
    steps = 0
    evaluate = lambda: new_evaluator()(params['encoder'])
  else:
    config.evaluation.update(every_steps=max(1, config.total_steps // 4), tasks=tasks[:1],
                             probes=('linear', 'knn'))
    steps = int(train.train(config, workdir).step)
    if steps < config.total_steps:    # stopped by a signal: record nothing, resume next time
      raise SystemExit(f'{name}/seed{seed} stopped at step {steps} of {config.total_steps}; '
                       'rerun the same command to resume it from its checkpoint')
    which = objectives.probe_params(config.objective, config.evaluation.params)
    evaluate = lambda: evaluator_lib.evaluate_checkpoint(new_evaluator(), workdir, which,
                                                         config.total_steps)[1]
  per_step = configuration.views_per_step(config)
  curve = probe_curve(workdir, f'{tasks[0]}_linear', per_step) if steps else []
  # The first task with every probe, the others (presence, count) with the linear probe only.
  results = {}
  others = settings.PROBES if args.all_probes else ('linear',)
  for names, probes in ((tasks[:1], settings.PROBES), (tasks[1:], others)):
    if names:
      config.evaluation.update(tasks=names, probes=probes)
      results.update(evaluate())
  return name, {'method': name, 'seed': seed, 'steps': steps,
                'views': steps * per_step, 'score_on': args.score_on,
                'seconds': round(time.perf_counter() - start, 1), 'scores': with_headline(results),
                'curve': curve, 'training': last_training_metrics(workdir) if steps else {}}


# What a run's last logged training step says about its losses and targets (RESULTS.md reads
# the teacher's entropy against log K, and how far the AB target lags).
TRAINING_METRICS = ('loss', 'dino_loss', 'base_loss', 'ab_loss', 'teacher_entropy',
                    'target_entropy', 'target_staleness', 'grad_norm')


def last_training_metrics(workdir):
  """{name: value} of TRAINING_METRICS in the last training row of metrics.jsonl."""
  rows = [r for r in metrics_lib.read_metrics(workdir) if 'loss' in r]
  return {k: rows[-1][k] for k in TRAINING_METRICS if k in rows[-1]}


def probe_curve(workdir, task_probe, per_step):
  """[[training views, score], ...] of the probe runs during training (metrics.jsonl)."""
  return [[r['step'] * per_step, r[f'eval/{task_probe}']]
          for r in metrics_lib.read_metrics(workdir) if f'eval/{task_probe}' in r]


# The headline numbers (the Markdown table's columns): object class by each probe, presence mAP
# and count accuracy by the linear probe. quality.json keeps every task_probe besides.
HEADLINE = {'objects_linear': 'objects_linear', 'objects_attentive': 'objects_attentive',
            'objects_decoder': 'objects_decoder', 'objects_knn': 'objects_knn',
            'presence_map': 'presence_linear', 'count_acc': 'count_linear'}


def with_headline(scores):
  """``scores`` plus the headline aliases (presence_map, count_acc) of the probes it has, and
  ``mean``: the mean of every task's probe scores (not the scores by box size), the one number
  a selection run is chosen by."""
  probe_scores = [v for k, v in scores.items() if k.rsplit('_', 1)[-1] in settings.PROBES]
  mean = {'mean': float(np.mean(probe_scores))} if probe_scores else {}
  return {**scores, **{alias: scores[key] for alias, key in HEADLINE.items() if key in scores},
          **mean}


def aggregate(runs):
  """{method: {task_probe: mean}}, {method: {task_probe: (mean, spread, n)}}."""
  by_method = {}
  for record in runs.values():
    by_method.setdefault(record['method'], []).append(record['scores'])
  means, table = {}, {}
  for method, scores in by_method.items():
    keys = sorted(scores[0])
    values = {k: np.array([s[k] for s in scores]) for k in keys}
    means[method] = {k: float(v.mean()) for k, v in values.items()}
    table[method] = {k: (float(v.mean()), float(v.max() - v.min()), len(v))
                     for k, v in values.items()}
  return means, table


def method_order(name):
  """Sort key: ARMS order, an arm's grid points after it."""
  arm = max((a for a in ARMS if name == a or name.startswith(a + '_')), key=len)
  return list(ARMS).index(arm), name


def markdown(table, runs):
  present = {k for scores in table.values() for k in scores}
  keys = [k for k in (*HEADLINE, 'mean') if k in present] or sorted(present)
  lines = ['| method | ' + ' | '.join(keys) + ' | seeds | steps | wall-clock s |',
           '|---|' + '---|' * (len(keys) + 3)]
  for method in sorted(table, key=method_order):
    scores = table[method]
    record = next(r for r in runs.values() if r['method'] == method)
    cells = [f'{m:.3f}' + (f' ±{s / 2:.3f}' if n > 1 else '') for m, s, n in
             (scores[k] for k in keys)]
    lines.append(f'| {method} | ' + ' | '.join(cells) + f' | {scores[keys[0]][2]} '
                 f'| {record["steps"]} | {record["seconds"]:.0f} |')
  return '\n'.join(lines)


def plot(runs, args, path):
  """<first task>_linear against training views, a line per method (its lowest seed that kept
  a curve), from the curves the runs file keeps; leaves an existing plot alone when no run has
  a curve."""
  curve = args.probe_tasks.split(',')[0] + '_linear'
  lines = {}                                       # method -> (seed, curve)
  for r in sorted(runs.values(), key=lambda r: -r['seed']):
    if r['steps'] and r.get('curve'):
      lines[r['method']] = (r['seed'], r['curve'])
  missing = sorted({r['method'] for r in runs.values() if r['steps']} - set(lines))
  if missing:        # runs recorded before the runs file kept curves
    print(f'no {curve} curve kept for {missing}: they are not in {path}')
  if not lines:
    return
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('matplotlib is not installed: no plot (pip install matplotlib)')
    return
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for method in sorted(lines, key=method_order):
    seed, points = lines[method]
    views, scores = zip(*points)
    ax.plot(views, scores, marker='o', label=method + (f' (seed {seed})' if seed else ''))
  random = [r for r in runs.values() if r['method'] == 'random_init']
  if random:
    ax.axhline(random[0]['scores'][curve], color='grey', ls='--', label='random_init')
  ax.set_xlabel('training views')
  ax.set_ylabel(f'{curve} (probe score)')
  if missing:
    ax.set_title(f'no curve kept for: {", ".join(missing)}', fontsize=8)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def score_panels(table, tasks):
  """{task: {probe: [(arm, mean, half of the seed range), ...]}} of the aggregated ``table``
  ({arm: {task_probe: (mean, range, n)}}), arms in ARMS order, for the tasks and probes run."""
  panels = {}
  for task in tasks:
    for probe in settings.PROBES:
      key = f'{task}_{probe}'
      rows = [(arm, table[arm][key][0], table[arm][key][1] / 2)
              for arm in sorted(table, key=method_order) if key in table[arm]]
      if rows:
        panels.setdefault(task, {})[probe] = rows
  return panels


def plot_scores(table, tasks, path):
  """A panel per task: each arm's mean score per probe, with error bars of half the range over
  seeds (the spread a claim must beat)."""
  panels = score_panels(table, tasks)
  if not panels:
    return
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
  for ax, (task, probes) in zip(axes[0], panels.items()):
    arms = sorted({arm for rows in probes.values() for arm, _, _ in rows}, key=method_order)
    width = 0.8 / len(probes)
    for k, (probe, rows) in enumerate(probes.items()):
      at = {arm: (mean, half) for arm, mean, half in rows}
      x = [i + (k - (len(probes) - 1) / 2) * width for i, arm in enumerate(arms) if arm in at]
      ax.bar(x, [at[a][0] for a in arms if a in at], width, yerr=[at[a][1] for a in arms
                                                                 if a in at],
             capsize=2, label=probe, color=f'C{settings.PROBES.index(probe)}')
    ax.set_xticks(range(len(arms)), arms, rotation=60, ha='right', fontsize=7)
    ax.set_title(task)
    ax.grid(axis='y', alpha=0.3)
  axes[0][0].set_ylabel('score (mean over seeds, bars: half range)')
  most = max(range(len(panels)), key=lambda i: len(list(panels.values())[i]))
  axes[0][most].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--views', type=int, default=1_000_000, help='training views per method')
  parser.add_argument('--seeds', type=int, default=3, help='seeds for the AB and base rows')
  parser.add_argument('--methods', default=','.join(METHODS),
                      help=f'comma-separated arms of {list(ARMS)}')
  parser.add_argument('--gammas', default='', help='e.g. 0,0.25,0.5,0.75 (AB methods only)')
  parser.add_argument('--grid', default='', help="every arm at each point of a grid, as "
                      "`sweep --sweep` takes it: 'target_network.rate=0.01,0.03;...' (rows "
                      'named ARM_rate=0.01)')
  parser.add_argument('--out', default=os.path.join(REPO, 'benchmarks', 'results',
                                                    'quality.json'))
  parser.add_argument('--workdir', default=os.path.expanduser('~/annoprop_quality'))
  parser.add_argument('--data_dir', default='~/annoprop_data')
  parser.add_argument('--dataset', default='scenes',
                      help='pretraining data of the scene streams (a prepared dataset)')
  parser.add_argument('--set', type=parse_setting, action='append', default=[],
                      metavar='KEY=VALUE', help='a config override for every method, e.g. '
                      'data.scenes.texture_strength=0.0 (repeatable)')
  parser.add_argument('--probe_dataset', default='scenes',
                      help='the prepared dataset the probes read (evaluation.dataset); with an '
                      'ImageFolder dataset use --probe_tasks=classes')
  parser.add_argument('--all_probes', action='store_true',
                      help='every probe on every task (default: all on the first task, the '
                      'linear probe on the others)')
  parser.add_argument('--probe_tasks', default='objects,presence,count',
                      help='evaluation.tasks at the end of training (see evaluation/tasks.py)')
  parser.add_argument('--report_only', action='store_true',
                      help='train nothing: write OUT, the plot and the table from the runs file')
  parser.add_argument('--one_seed', default='random_init,supervised',
                      help='arms that run seed 0 only (references)')
  parser.add_argument('--score_on', choices=settings.SCORE_ON, default='test',
                      help="'validation': score the probes on a part carved out of each task's "
                      'train split (choosing a recipe); test: on the test splits (reporting it)')
  parser.add_argument('--train_examples', type=int, default=2000)
  parser.add_argument('--test_examples', type=int, default=1000)
  args = parser.parse_args()
  methods = args.methods.split(',')
  unknown = [m for m in methods if m not in ARMS]
  if unknown:
    parser.error(f'unknown methods {unknown}; known: {list(ARMS)}')
  try:
    points = grid_points(args)
    for method in methods:                 # every grid key exists in every arm's config
      for _, point in points:
        method_config(method, 0, args, point)
  except configuration.ConfigError as e:
    parser.error(str(e))
  base = os.path.splitext(args.out)[0]
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  runs = {}
  if os.path.exists(base + '_runs.json'):
    with open(base + '_runs.json') as f:
      runs = json.load(f)
  mixed = sorted(k for k, r in runs.items() if r.get('score_on', 'test') != args.score_on)
  if mixed:
    parser.error(f'{base}_runs.json holds runs scored on another split than --score_on='
                 f'{args.score_on} ({mixed[0]}, ...): use another --out')
  # Seed-major: every method's seed 0 first, so a cut benchmark still compares every method.
  plan = [(m, s, p) for s in range(args.seeds) for m in methods for p in points
          if s == 0 or m not in args.one_seed.split(',')]
  for i, (method, seed, point) in enumerate(plan):
    key = f'{method}{point[0]}/seed{seed}'
    if key in runs or args.report_only:
      print(f'[{i + 1}/{len(plan)}] {key}: ' + ('done already' if key in runs else 'not run'))
      continue
    print(f'[{i + 1}/{len(plan)}] {key}: training', flush=True)
    _, record = run(method, seed, args, point)
    runs[key] = record
    with open(base + '_runs.json', 'w') as f:
      json.dump(runs, f, indent=1, sort_keys=True)
    print(f'[{i + 1}/{len(plan)}] {key}: {record["scores"]} in {record["seconds"]:.0f} s',
          flush=True)
  means, table = aggregate(runs)
  with open(args.out, 'w') as f:
    json.dump(means, f, indent=1, sort_keys=True)
  plot(runs, args, base + '_curves.png')
  plot_scores(table, args.probe_tasks.split(','), base + '_scores.png')
  print(markdown(table, runs))


if __name__ == '__main__':
  main()
