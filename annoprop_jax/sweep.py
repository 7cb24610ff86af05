"""A sweep: one config trained over a grid of overrides, each run in a folder of the sweep's.

  --sweep='objective.bootstrap.gamma=0,0.5;seed=0,1,2'      6 runs: gamma-major, seed inner

or, without ``--sweep``, the config file's ``get_sweep()``: a list of {dotted key: value}. A
run's name is its overrides with short keys (the last part of the dotted key, the whole key
where two share it), e.g. ``gamma=0.5,seed=1``; its folder is ``SWEEP_DIR/NAME``.
``SWEEP_DIR/sweep.json`` holds the plan (config, common overrides, each run's name, overrides
and steps): a rerun of the same sweep, the tasks of a SLURM array and ``--report`` read it.
"""
import ast
import csv
import io
import itertools
import json

from annoprop_jax import checkpoint_recovery
from annoprop_jax import configuration
from annoprop_jax import errors
from annoprop_jax import storage

PLAN = 'sweep.json'


def split_values(text):
  """'0,(0.08, 1.0),abc,"a,b"' -> [0, (0.08, 1.0), 'abc', 'a,b']: commas inside brackets or
  quotes stay; each value a Python literal, else a bare string."""
  parts, depth, quote, current = [], 0, '', ''
  for char in text:
    if quote:
      quote = '' if char == quote else quote
    elif char in '\'"':
      quote = char
    else:
      depth += (char in '([{') - (char in ')]}')
    if char == ',' and depth == 0 and not quote:
      parts.append(current)
      current = ''
    else:
      current += char
  parts.append(current)
  return [parse_value(part.strip()) for part in parts]


def parse_value(text):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_grid(text):
  """'a.b=0,1;seed=0,1,2' -> [{'a.b': 0, 'seed': 0}, {'a.b': 0, 'seed': 1}, ...] (the first key
  outermost)."""
  axes = []
  for part in filter(None, (p.strip() for p in text.split(';'))):
    key, sep, values = part.partition('=')
    if not sep or not key.strip() or not values.strip():
      raise errors.ConfigError(f'--sweep wants KEY=V1,V2;KEY=V1,...; got {part!r}')
    axes.append((key.strip(), split_values(values)))
  if not axes:
    raise errors.ConfigError('--sweep is empty')
  keys = [key for key, _ in axes]
  if len(set(keys)) < len(keys):
    raise errors.ConfigError(f'--sweep names a key twice: {", ".join(keys)}')
  return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def run_names(runs):
  """A folder name per run: its overrides as short_key=value, comma-separated."""
  keys = list(dict.fromkeys(key for run in runs for key in run))
  short = {}
  for key in keys:
    leaf = key.rsplit('.', 1)[-1]
    short[key] = leaf if sum(k.rsplit('.', 1)[-1] == leaf for k in keys) == 1 else key
  text = lambda v: ('_'.join(map(text, v)) if isinstance(v, (tuple, list)) else str(v))
  return [','.join(f'{short[k]}={text(v)}'.replace('/', '-').replace(' ', '')
                   for k, v in run.items()) or 'default' for run in runs]


def flag_value(value):
  """A value as ``--config.KEY=`` parses it (tuples as '(a, b)')."""
  return str(tuple(value)) if isinstance(value, (tuple, list)) else str(value)


def plan(config_path, common, runs):
  """The sweep's plan: {'config', 'common', 'runs': [{'name', 'overrides', 'total_steps'}]}.
  Every run's config is built and validated first: a key that does not exist, a bad value or
  two runs with one folder is a ConfigError before anything trains."""
  if not runs:
    raise errors.ConfigError('the sweep has no runs')
  names = run_names(runs)
  if len(set(names)) < len(names):
    twice = sorted({n for n in names if names.count(n) > 1})
    raise errors.ConfigError(f'two runs of the sweep would share the workdir {twice[0]!r}: '
                             'each run needs different values')
  planned = []
  for name, overrides in zip(names, runs):
    config = configuration.load(config_path).unlock()
    configuration.override(config, {**common, **overrides}.items())
    configuration.validate(config)
    planned.append({'name': name, 'overrides': overrides, 'total_steps': config.total_steps})
  return configuration.json_values({'config': config_path, 'common': common, 'runs': planned})


def write_plan(sweep_dir, new):
  """Writes ``new`` as SWEEP_DIR/sweep.json; a folder that holds another sweep is an error (a
  rerun of the same sweep goes on where it stopped)."""
  path = storage.path(sweep_dir) / PLAN
  if path.exists():
    old = json.loads(path.read_text())
    if old != new:
      raise errors.ConfigError(f'{path} holds another sweep (config {old["config"]!r}, '
                               f'{len(old["runs"])} runs): use a new --workdir')
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  storage.write_atomically(path, json.dumps(new, indent=1))


def read_plan(sweep_dir):
  path = storage.path(sweep_dir) / PLAN
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: is {str(sweep_dir)!r} a sweep folder?')
  return json.loads(path.read_text())


def run_dir(sweep_dir, run):
  return f'{str(sweep_dir).rstrip("/")}/{run["name"]}'


def saved_step(workdir):
  """The step of the newest complete checkpoint of ``workdir`` (0: none): a step folder, and
  on a bucket (where Orbax completes a step in place) one with its commit file."""
  directory = storage.path(workdir) / 'checkpoints'
  if not directory.exists():
    return 0
  remote = storage.is_remote(directory)
  return max((int(p.name) for p in directory.iterdir() if p.name.isdigit() and (
      not remote or (p / checkpoint_recovery.COMMIT_FILE).exists())), default=0)


def train_flags(sweep, run, sweep_dir):
  """The ``train`` flags of one run: the config, the common then the run's overrides, its
  folder."""
  overrides = {**sweep['common'], **run['overrides']}
  return [f'--config={sweep["config"]}',
          *(f'--config.{k}={flag_value(v)}' for k, v in overrides.items()),
          f'--workdir={run_dir(sweep_dir, run)}']


def _last_rows(workdir):
  """(last training row, {eval/...: last value}) of a run's metrics.jsonl."""
  path = storage.path(workdir) / 'metrics.jsonl'
  train, scores = {}, {}
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        record = json.loads(line)
      except ValueError:
        continue          # a torn last line
      if 'loss' in record:
        train = record
      scores.update({k: v for k, v in record.items() if k.startswith('eval/')})
  return train, scores


def report(sweep_dir):
  """(columns, rows): per run its overrides, state (done, step N/T, new), the last logged loss
  and the last score of each evaluation, side by side."""
  sweep = read_plan(sweep_dir)
  keys = list(dict.fromkeys(k for run in sweep['runs'] for k in run['overrides']))
  rows, score_keys = [], []
  for run in sweep['runs']:
    workdir = run_dir(sweep_dir, run)
    step, total = saved_step(workdir), run['total_steps']
    train, scores = _last_rows(workdir)
    score_keys += [k for k in scores if k not in score_keys]
    state = 'done' if step >= total else (f'step {step}/{total}' if step else 'new')
    rows.append({'run': run['name'], **run['overrides'], 'state': state,
                 'loss': train.get('loss'), **scores})
  columns = ['run', *keys, 'state', 'loss', *sorted(score_keys)]
  return columns, [[row.get(c) for c in columns] for row in rows]


def as_text(columns, rows):
  """The report as an aligned text table (numbers to 4 decimals)."""
  cell = lambda v: '-' if v is None else (f'{v:.4f}' if isinstance(v, float) else str(v))
  table = [columns] + [[cell(v) for v in row] for row in rows]
  widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
  return '\n'.join('  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table)


def as_csv(columns, rows):
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(columns)
  writer.writerows([['' if v is None else v for v in row] for row in rows])
  return out.getvalue()
