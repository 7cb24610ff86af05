"""``sweep``: train ``--config`` over a grid of overrides, one run per folder of ``--workdir``.

  sweep --config=configs/ab_simclr_scenes.py:tiny --sweep='objective.bootstrap.gamma=0,0.5;seed=0,1'
        --workdir=DIR                          the 4 runs here, one after another
  sweep ... --launcher=slurm [--sbatch_args='--nodes=1 --time=4:00:00']
                                               one SLURM job-array task per run
  sweep --workdir=DIR --report                 a table of every run, side by side (and
                                               DIR/report.csv)

Every run's config is checked before the first trains. A finished run is skipped and an
interrupted one resumes, so a rerun of the same command goes on where the sweep stopped; on a
TPU pod every host runs the same command (with the flags that join the processes, which each
run receives). A signal stops the current run as ``train`` does and starts no other (exit 75:
rerun to resume).
Exit 1 when a run failed (the others still run); 2 for an input that cannot work.
"""
import os
import signal
import subprocess
import sys

from absl import flags
from ml_collections import config_flags

from annoprop_jax import configuration
from annoprop_jax import errors
from annoprop_jax import lost_process
from annoprop_jax import storage
from annoprop_jax import sweep
from annoprop_jax.commands import common
from annoprop_jax.commands import experiment

SWEEP = flags.DEFINE_string('sweep', None, "sweep: the grid, 'KEY=V1,V2;KEY=V1,...' (default: "
                            "the config file's get_sweep()).")
LAUNCHER = flags.DEFINE_enum('launcher', 'local', ['local', 'slurm'], 'sweep: run the runs here '
                             'one after another, or submit a SLURM job array (sbatch).')
SBATCH_SCRIPT = flags.DEFINE_string('sbatch_script', 'launch/slurm_gpu.sbatch',
                                    'sweep --launcher=slurm: the batch script of each task.')
SBATCH_ARGS = flags.DEFINE_string('sbatch_args', '', 'sweep --launcher=slurm: more sbatch '
                                  "options, e.g. '--nodes=1 --time=4:00:00'.")
ARRAY_TASK = flags.DEFINE_bool('array_task', False, 'sweep: train the run of '
                               'SLURM_ARRAY_TASK_ID (what each task of the job array runs).')
REPORT = flags.DEFINE_bool('report', False, "sweep: print every run's state, loss and scores "
                           'and write WORKDIR/report.csv.')

# The flags that join a run's processes: each run receives the sweep's.
_PROCESS_FLAGS = ('distributed', 'coordinator_address', 'num_processes', 'process_id',
                  'lost_process_seconds')


def _process_flags():
  return [f'--{name}={flags.FLAGS[name].value}' for name in _PROCESS_FLAGS
          if flags.FLAGS[name].present]


def _train_command(plan, run, sweep_dir):
  return [sys.executable, '-m', 'annoprop_jax.main', 'train',
          *sweep.train_flags(plan, run, sweep_dir), *_process_flags()]


def _new_plan(sweep_dir):
  if experiment.CONFIG.value is None:
    common.fail('sweep needs --config=configs/FILE.py (or --report, --array_task)')
  path = config_flags.get_config_filename(flags.FLAGS['config'])
  file, colon, variant = path.partition(':')
  path = os.path.abspath(file) + colon + variant
  common_overrides = dict(config_flags.get_override_values(flags.FLAGS['config']))
  if SWEEP.value:
    runs = sweep.parse_grid(SWEEP.value)
  else:
    module = configuration.config_module(os.path.abspath(file))
    if not hasattr(module, 'get_sweep'):
      common.fail(f'{file} has no get_sweep(): pass --sweep=KEY=V1,V2;...')
    runs = module.get_sweep()
  plan = sweep.plan(path, common_overrides, runs)
  sweep.write_plan(sweep_dir, plan)
  return plan


def _run_locally(plan, sweep_dir):
  """Each run not yet finished, one after another, as a ``train`` process. A SIGTERM or SIGINT
  stops the sweep: the running run gets SIGTERM (it saves and exits 75), a second signal gets
  it SIGINT (after the first, an abort: the last checkpoint stays), no other run starts, and
  the sweep exits 75 (rerun the same command to resume)."""
  child, failed, signals = None, [], []
  def forward(signum, frame):
    del signum, frame
    signals.append(1)
    if child is not None and child.poll() is None:
      child.send_signal(signal.SIGTERM if len(signals) == 1 else signal.SIGINT)
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, forward)
  def stop_if_asked(name):
    if signals:
      print(f'sweep stopped at run {name}: rerun the same command to resume', file=sys.stderr)
      sys.exit(lost_process.EXIT_RESUME)
  runs = plan['runs']
  for i, run in enumerate(runs):
    workdir = sweep.run_dir(sweep_dir, run)
    if sweep.saved_step(workdir) >= run['total_steps']:
      print(f'[sweep {i + 1}/{len(runs)}] {run["name"]}: done, skipped', flush=True)
      continue
    stop_if_asked(run['name'])
    print(f'[sweep {i + 1}/{len(runs)}] {run["name"]}: training in {workdir}', flush=True)
    # Its own session: a Ctrl-C reaches it through the sweep only, once per signal.
    child = subprocess.Popen(_train_command(plan, run, sweep_dir), start_new_session=True)
    code = child.wait()
    stop_if_asked(run['name'])          # a signal during the run (whatever its exit code)
    if code == lost_process.EXIT_RESUME:
      print(f'sweep stopped in run {run["name"]} (saved): rerun the same command to resume',
            file=sys.stderr)
      sys.exit(lost_process.EXIT_RESUME)
    if code:
      failed.append(f'{run["name"]} (exit {code})')
  if failed:
    print(f'error: {len(failed)} of {len(runs)} runs failed: {", ".join(failed)}',
          file=sys.stderr)
    sys.exit(1)
  print(f'sweep finished: {len(runs)} runs in {sweep_dir}; `sweep --workdir={sweep_dir} '
        '--report` compares them')


def _submit(plan, sweep_dir):
  """One job-array task per run, each ``sweep --array_task`` under the batch script."""
  if not os.path.exists(SBATCH_SCRIPT.value):
    common.fail(f'--sbatch_script {SBATCH_SCRIPT.value} does not exist (run from the '
                'repository, or give its path)')
  command = ['sbatch', f'--array=0-{len(plan["runs"]) - 1}',
             f'--job-name=sweep_{os.path.basename(str(sweep_dir).rstrip("/"))}',
             *SBATCH_ARGS.value.split(), SBATCH_SCRIPT.value, 'sweep',
             f'--workdir={sweep_dir}', '--array_task']
  print('+ ' + ' '.join(command), flush=True)
  try:
    sys.exit(subprocess.call(command))
  except FileNotFoundError:
    common.fail('sbatch is not on PATH: run --launcher=slurm on a SLURM login node')


def _array_task(sweep_dir):
  """Becomes the ``train`` process of run SLURM_ARRAY_TASK_ID (its exit code is the task's)."""
  plan = sweep.read_plan(sweep_dir)
  index = os.environ.get('SLURM_ARRAY_TASK_ID', '')
  if not index.isdigit() or int(index) >= len(plan['runs']):
    common.fail(f'--array_task: SLURM_ARRAY_TASK_ID={index!r} is not a run of the sweep '
                f'(0-{len(plan["runs"]) - 1})')
  run = plan['runs'][int(index)]
  if sweep.saved_step(sweep.run_dir(sweep_dir, run)) >= run['total_steps']:
    print(f'run {run["name"]} is done')
    return
  command = _train_command(plan, run, sweep_dir)
  os.execv(command[0], command)


def main(argv):
  del argv
  sweep_dir = common.workdir('sweep')
  try:
    if REPORT.value:
      columns, rows = sweep.report(sweep_dir)
      print(sweep.as_text(columns, rows))
      path = storage.path(sweep_dir) / 'report.csv'
      storage.write_atomically(path, sweep.as_csv(columns, rows))
      print(f'wrote {path}')
    elif ARRAY_TASK.value:
      _array_task(sweep_dir)
    else:
      plan = _new_plan(sweep_dir)
      (_submit if LAUNCHER.value == 'slurm' else _run_locally)(plan, sweep_dir)
  except (FileNotFoundError, errors.ConfigError) as e:
    common.fail(str(e))
