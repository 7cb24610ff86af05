"""Fault-injection campaign on the tiny AB_DINO run (two streams, DINO's centre, an EMA target).

  python benchmarks/faults.py                                   # the campaign (~30 min here)
  python benchmarks/faults.py --kill_trials=2 --worker_trials=1 --race_trials=3   # a short one
  python benchmarks/faults.py --only=lost_process --out=/tmp/lost.json     # one kind of fault

Every trial is compared with an uninterrupted run of the same config (40 steps, a checkpoint
every 10, a metrics record every step). A trial survives bit-exact when its final state (every
array: params, EMA target, Adam moments, centre, step, RNG) equals the reference's, both
streams' data fingerprints and the losses equal the reference's at every step, metrics.jsonl
holds each step once in order, and no lock or temporary checkpoint folder is left. Lost data
counts the steps whose metrics or final arrays differ or are missing.

  kills      1-3 kills (SIGKILL or SIGTERM, at random times) and a resume after each; every
             SIGTERM must exit 75 (the resume code) or 0 if the run had just finished
  targeted   a kill during start-up, during compilation, during a restore, while a temporary
             checkpoint folder exists, during an evaluation, just after a metrics write
  workers    the kill trials with 2 grain worker processes per stream (their own reference)
  corrupt    each item of the newest checkpoint (state, each stream's iterator) truncated,
             zeroed, deleted, or one bit flipped: a warning and a bit-exact resume from the
             previous checkpoint
  2 processes  (--two_processes) a finished 2-process run whose newest step is damaged in process 1's files only:
             both fall back to the same step and end bit-identical to the undamaged run
  lost process (--two_processes) one of 2 or of 4 training processes SIGKILLed at a random
             step: each process left must exit 75 with one line within --lost_process_seconds
             + 30 s (when process 0 is lost JAX ends them: reported); the rerun ends
             bit-identical to an uninterrupted run of as many processes
  full disk  a resumed run can write no file over 4 KB (RLIMIT_FSIZE, EFBIG): one line, a
             non-zero exit, the checkpoints and config.json intact; then a bit-exact resume
  race       2-4 runs started together on one workdir: exactly one trains, the others refuse
  inputs     a config change on resume, NaN at a step that is not a log step, bad inputs:
             the line each produced (one line, exit 2, nothing written)

Writes benchmarks/results/faults.json and prints the Markdown table of RESULTS.md.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/ab_dino_scenes.py:tiny'
STEPS, EVERY = 40, 10
RUN_ARGS = [f'--config.total_steps={STEPS}', f'--config.checkpoint_every={EVERY}',
            '--config.log_every=1', '--config.keep_checkpoints=4']
EXIT_RESUME = 75
LOST_PROCESS_SECONDS = 10
LOST_PROCESS_CASES = ((2, 1), (2, 0), (4, 2), (4, 0))     # (processes, the one killed)
FINGERPRINTS = ('annotation_data_fingerprint', 'bootstrap_data_fingerprint')


class Campaign:
  """Starts runs in fresh workdirs under ``root`` and compares them with references."""

  def __init__(self, root, data_dir, seed):
    self.root, self.data_dir = root, data_dir
    self.rng = random.Random(seed)
    self.env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
                    XLA_FLAGS='--xla_force_host_platform_device_count=2',
                    JAX_COMPILATION_CACHE_DIR=os.path.join(root, 'jax_cache'),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
    self.references = {}
    self.rows = {}
    self.notes = {}   # a kind's line per trial, printed under the table
    self._since = time.perf_counter()  # the seconds of a kind: from the previous record to its own

  def workdir(self, name):
    path = os.path.join(self.root, name)
    shutil.rmtree(path, ignore_errors=True)
    return path

  def command(self, workdir, *extra):
    return [sys.executable, '-m', 'annoprop_jax.main', 'train', f'--config={CONFIG}',
            f'--workdir={workdir}', f'--config.data.data_dir={self.data_dir}', *RUN_ARGS, *extra]

  def start(self, workdir, *extra, preexec=None):
    return subprocess.Popen(self.command(workdir, *extra), cwd=REPO, env=self.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec)

  def run(self, workdir, *extra):
    process = self.start(workdir, *extra)
    out, err = process.communicate(timeout=900)
    return process.returncode, out, err

  def reference(self, extra=()):
    """The uninterrupted run of ``extra`` (cached): (workdir, seconds)."""
    key = tuple(extra)
    if key not in self.references:
      workdir = self.workdir('reference' + ''.join(e.split('=')[-1] for e in extra))
      start = time.perf_counter()
      code, _, err = self.run(workdir, *extra)
      if code != 0:
        raise SystemExit(f'the reference run failed:\n{err[-3000:]}')
      self.references[key] = (workdir, time.perf_counter() - start)
    return self.references[key]

  # ------------------------------------------------------------------------------ checks

  def compare(self, workdir, extra=(), reference=None):
    """(bit-exact, lost steps, detail) of ``workdir`` against ``reference`` (default: the
    uninterrupted run of ``extra``)."""
    reference = reference or self.reference(extra)[0]
    problems, lost = [], set()
    records = _records(workdir)
    want = {r['step']: r for r in _records(reference) if 'loss' in r}
    steps = [r['step'] for r in records if 'loss' in r]
    if steps != list(range(1, STEPS + 1)):
      problems.append(f'metrics steps {_ranges(steps)}')
    got = {r['step']: r for r in records if 'loss' in r}
    for step, record in want.items():
      if step not in got or any(got[step].get(k) != record.get(k)
                                for k in (*FINGERPRINTS, 'loss', 'base_loss', 'ab_loss')):
        lost.add(step)
    if lost:
      problems.append(f'steps differing from the reference {_ranges(sorted(lost))}')
    try:
      final, expected = _state(workdir, STEPS), _state(reference, STEPS)
      differing = [k for k in expected if not np.array_equal(final.get(k), expected[k])]
      if differing:
        problems.append(f'final arrays differ: {differing[:3]}')
        lost.add(STEPS)
    except Exception as e:  # pylint: disable=broad-except  # a missing final checkpoint
      problems.append(f'no final checkpoint ({type(e).__name__})')
      lost.add(STEPS)
    leftovers = [n for n in os.listdir(os.path.join(workdir, 'checkpoints'))
                 if '.orbax-checkpoint-tmp' in n] if os.path.isdir(
                     os.path.join(workdir, 'checkpoints')) else []
    if leftovers:
      problems.append(f'temporary folders left: {leftovers}')
    if os.path.exists(os.path.join(workdir, 'lock')):
      problems.append('lock left')
    return not problems, len(lost), '; '.join(problems)

  def finish(self, workdir, extra=()):
    """Runs ``workdir`` to the end (resuming); returns the exit code of that last run."""
    code, _, err = self.run(workdir, *extra)
    if code != 0:
      print(f'    finishing run exited {code}: {err.strip().splitlines()[-1:]}', flush=True)
    return code

  def record(self, kind, survived, lost, detail=''):
    row = self.rows.setdefault(kind, {'trials': 0, 'survived': 0, 'lost': 0, 'seconds': 0.0,
                                      'failures': []})
    now = time.perf_counter()
    row['seconds'] += now - self._since
    self._since = now
    row['trials'] += 1
    row['survived'] += int(survived)
    row['lost'] += lost
    if not survived:
      row['failures'].append(detail)
    print(f'  {kind}: {"ok" if survived else "FAILED " + detail}', flush=True)

  # ------------------------------------------------------------------------------ trials

  def kill_trial(self, kind, extra=()):
    """1-3 kills at random times, each followed by a resume; then a run to the end."""
    _, seconds = self.reference(extra)
    workdir = self.workdir(f'{kind}{self.rng.randrange(10**6)}')
    problems = []
    for _ in range(self.rng.randint(1, 3)):
      sig = self.rng.choice((signal.SIGKILL, signal.SIGTERM))
      process = self.start(workdir, *extra)
      time.sleep(self.rng.uniform(0.2, seconds))
      process.send_signal(sig)
      _, err = process.communicate(timeout=900)
      problems += _exit_problems(sig, process.returncode, err)
    code = self.finish(workdir, extra)
    ok, lost, detail = self.compare(workdir, extra)
    problems += [detail] if detail else []
    problems += [] if code == 0 else [f'final run exited {code}']
    self.record(kind, ok and not problems, lost, '; '.join(problems))

  def targeted_trial(self, point):
    """One kill at a chosen point of a run (SIGKILL, or SIGTERM where the point says)."""
    workdir = self.workdir(f'targeted_{point}')
    problems, extra = [], ()
    if point == 'restore':          # a first run stopped at step 20 leaves a checkpoint
      process = self.start(workdir)
      _wait(lambda: _has_step(workdir, 20), process)
      process.send_signal(signal.SIGTERM)
      process.communicate(timeout=900)
    if point == 'evaluation':
      extra = ('--config.evaluation.every_steps=20', "--config.evaluation.tasks=('objects',)",
               "--config.evaluation.probes=('linear',)")
    process = self.start(workdir, *extra)
    sig = signal.SIGKILL
    if point == 'start-up':
      time.sleep(0.3)
      sig = signal.SIGTERM
    elif point == 'compilation':    # the first step is compiled after the data opened
      time.sleep(self.reference()[1] * 0.3)
    elif point == 'restore':        # after the imports, before the first step
      time.sleep(self.rng.uniform(2.0, 5.0))
    elif point == 'temporary folder':
      _wait(lambda: any('.orbax-checkpoint-tmp' in n for n in _listdir(workdir, 'checkpoints')),
            process, poll=0.001)
    elif point == 'evaluation':
      _wait(lambda: _records_at_least(workdir, 20), process)
      time.sleep(0.5)
    elif point == 'metrics write':
      size = lambda: os.path.getsize(os.path.join(workdir, 'metrics.jsonl')) if os.path.exists(
          os.path.join(workdir, 'metrics.jsonl')) else 0
      _wait(lambda: size() > 0, process)
      before = size()
      _wait(lambda: size() > before, process, poll=0.001)
    process.send_signal(sig)
    _, err = process.communicate(timeout=900)
    problems += _exit_problems(sig, process.returncode, err)
    code = self.finish(workdir, extra)
    # The evaluation records are extra lines in metrics.jsonl: compare the training steps.
    ok, lost, detail = self.compare(workdir)
    problems += ([detail] if detail else []) + ([] if code == 0 else [f'final exit {code}'])
    self.record(f'targeted: {point}', ok and not problems, lost, '; '.join(problems))

  def corrupt_trial(self, item, mode):
    """Damages ``item`` of the step-20 checkpoint of a run stopped there, then resumes."""
    workdir = self.workdir(f'corrupt_{item}_{mode}')
    process = self.start(workdir)
    _wait(lambda: _has_step(workdir, 20), process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=900)
    steps = sorted(int(s) for s in _listdir(workdir, 'checkpoints') if s.isdigit())
    newest = steps[-1]
    target = os.path.join(workdir, 'checkpoints', str(newest), item)
    # The biggest file the item is read from (not Orbax's commit marker).
    files = sorted((os.path.join(d, f) for d, _, fs in os.walk(target) for f in fs
                    if f != 'commit_success.txt'), key=os.path.getsize)
    victim = files[-1]
    if mode == 'truncate':
      with open(victim, 'r+b') as f:
        f.truncate(os.path.getsize(victim) // 2)
    elif mode == 'zero':
      with open(victim, 'r+b') as f:
        f.write(b'\0' * os.path.getsize(victim))
    elif mode == 'delete':
      os.remove(victim)
    else:                           # one bit, in the middle of the biggest file
      with open(victim, 'r+b') as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 1 << self.rng.randrange(8)
        f.seek(0)
        f.write(data)
    code, out, err = self.run(workdir)
    problems = [] if code == 0 else [f'resume exited {code}: {err.strip().splitlines()[-1:]}']
    older = steps[-2] if len(steps) > 1 else None
    if f'Resumed from {os.path.join(workdir, "checkpoints")}/{older}' not in out:
      problems.append(f'did not fall back from step {newest} to {older}')
    if 'WARNING' not in out:
      problems.append('no warning')
    ok, lost, detail = self.compare(workdir)
    problems += [detail] if detail else []
    self.record(f'corrupt: {item} {mode}', ok and not problems, lost, '; '.join(problems))

  def full_disk_trial(self):
    """The disk fills after the first checkpoint: one line, a non-zero exit, then a resume."""
    workdir = self.workdir('full_disk')
    first = self.start(workdir)
    _wait(lambda: _has_step(workdir, 10), first)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=900)
    config_json = open(os.path.join(workdir, 'config.json')).read()
    saved = sorted(int(s) for s in _listdir(workdir, 'checkpoints') if s.isdigit())

    def full_disk():
      import resource  # pylint: disable=g-import-not-at-top
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      # Room for small files only: the first bigger write (config.json) fails.
      resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

    process = self.start(workdir, preexec=full_disk)
    out, err = process.communicate(timeout=900)
    problems = []
    last = err.strip().splitlines()[-1] if err.strip() else ''
    if process.returncode != 2 or not last.startswith('error: '):
      problems.append(f'exit {process.returncode}, last line {last[:120]!r}')
    if open(os.path.join(workdir, 'config.json')).read() != config_json:
      problems.append('config.json changed')
    if not set(saved) <= set(int(s) for s in _listdir(workdir, 'checkpoints') if s.isdigit()):
      problems.append('a previous checkpoint is gone')
    code = self.finish(workdir)         # space again
    ok, lost, detail = self.compare(workdir)
    problems += ([detail] if detail else []) + ([] if code == 0 else [f'final exit {code}'])
    self.record('full disk', ok and not problems, lost, '; '.join(problems))
    return last

  def start_processes(self, workdir, count, *extra):
    """The run of ``workdir`` as ``count`` processes (each with the campaign's 2 devices)."""
    import socket  # pylint: disable=g-import-not-at-top
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
    return [subprocess.Popen(
        self.command(workdir, f'--coordinator_address=127.0.0.1:{port}',
                     f'--num_processes={count}', f'--process_id={i}', *extra), cwd=REPO,
        env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(count)]

  def run_processes(self, workdir, count, *extra):
    """[(output, exit code or 'hung')] of each process of a ``count``-process run."""
    processes, results = self.start_processes(workdir, count, *extra), []
    for p in processes:
      try:
        results.append((p.communicate(timeout=300)[0], p.returncode))
      except subprocess.TimeoutExpired:     # a hang: the processes disagree somewhere
        for q in processes:
          q.kill()
        results.append((p.communicate()[0], 'hung'))
    return results

  def processes_reference(self, count):
    """The uninterrupted ``count``-process run (cached): its workdir."""
    if ('processes', count) not in self.references:
      workdir, start = self.workdir(f'reference_{count}_processes'), time.perf_counter()
      codes = [code for _, code in self.run_processes(workdir, count)]
      if codes != [0] * count:
        raise SystemExit(f'the {count}-process reference run exited {codes}')
      self.references[('processes', count)] = (workdir, time.perf_counter() - start)
    return self.references[('processes', count)][0]

  def two_process_trial(self):
    """A finished 2-process run whose newest step is damaged in process 1's files only: both
    processes fall back to the same older step and end bit-identical to the undamaged run."""
    workdir = self.workdir('two_processes')
    both = lambda: self.run_processes(workdir, 2)
    problems = [f'first run exited {code}' for _, code in both() if code != 0]
    if problems:
      self.record('2 processes, newest step damaged in one process\'s files', False, 0,
                  '; '.join(problems))
      return
    undamaged = _state(workdir, STEPS)
    state = os.path.join(workdir, 'checkpoints', str(STEPS), 'state')
    files = [os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs
             if 'process_1' in d]
    if not files:
      problems.append('no files of process 1 in the checkpoint')
    else:
      victim = max(files, key=os.path.getsize)
      with open(victim, 'r+b') as f:
        f.truncate(os.path.getsize(victim) // 2)
    (out0, code0), (_, code1) = both()
    problems += [f'resume exited {code0}, {code1}'] if (code0, code1) != (0, 0) else []
    older = STEPS - EVERY
    if f'Resumed from {os.path.join(workdir, "checkpoints")}/{older}' not in out0:
      problems.append(f'process 0 did not resume from step {older}')
    try:
      final = _state(workdir, STEPS)
    except FileNotFoundError:
      final = {}
    differing = [k for k in undamaged if not np.array_equal(final.get(k), undamaged[k])]
    if differing:
      problems.append(f'final arrays differ: {differing[:3]}')
    self.record('2 processes, newest step damaged in one process\'s files', not problems,
                int(bool(differing)), '; '.join(problems))

  def lost_process_trial(self, count, victim):
    """Of ``count`` training processes, ``victim`` is SIGKILLed at a random step (a lost host).
    Each process left must exit 75 with one line naming the lost process within
    --lost_process_seconds + 30 s; a lost process 0 takes JAX's coordination service with it and
    JAX ends the others (reported, not required). Then the rerun of all must end bit-identical
    to an uninterrupted run of as many processes."""
    kind = f'a lost process: process {victim} of {count} killed'
    reference = self.processes_reference(count)
    workdir = self.workdir(f'lost{victim}of{count}_{self.rng.randrange(10**6)}')
    processes = self.start_processes(workdir, count,
                                     f'--lost_process_seconds={LOST_PROCESS_SECONDS}')
    problems, at = [], self.rng.randint(2, STEPS - 2)
    if not _wait(lambda: _records_at_least(workdir, at), processes[0]):
      problems.append('the run ended before the kill')
    processes[victim].kill()
    killed = time.perf_counter()
    for index, process in enumerate(processes):
      try:
        output = process.communicate(timeout=LOST_PROCESS_SECONDS + 120)[0]
      except subprocess.TimeoutExpired:
        process.kill()
        output = process.communicate()[0]
      if index == victim:
        continue
      code = 'hung' if process.returncode == -signal.SIGKILL else process.returncode
      seconds = time.perf_counter() - killed      # an upper bound for the later processes
      with open(os.path.join(workdir, f'process_{index}.log'), 'w') as f:
        f.write(output)
      lines = output.strip().splitlines() or ['']
      # Where JAX ends the process, its fatal log line (absl's 'F' + date) says why.
      last = next((l for l in lines if l[:1] == 'F' and l[1:5].isdigit()), lines[-1])
      self.notes.setdefault(kind, []).append(
          f'process {index}: exit {code} after {seconds:.0f} s: {last[:200]}')
      if victim != 0 and not (code == EXIT_RESUME and last.startswith(
          f'error: process {victim} of {count} stopped answering for {LOST_PROCESS_SECONDS} s')):
        problems.append(f'process {index} exited {code}: {last[:200]}')
      if seconds > LOST_PROCESS_SECONDS + 30:
        problems.append(f'process {index} took {seconds:.0f} s to stop')
    codes = [code for _, code in self.run_processes(workdir, count)]
    problems += [] if codes == [0] * count else [f'the rerun exited {codes}']
    _, lost, detail = self.compare(workdir, reference=reference)
    problems += [detail] if detail else []
    self.record(kind, not problems, lost, '; '.join(problems))

  def race_trial(self, steps=5):
    """2-4 runs of ``steps`` steps on one workdir at once: exactly one trains, the others
    refuse in one line, and the winner logs every step once and leaves no lock."""
    workdir = self.workdir(f'race{self.rng.randrange(10**6)}')
    n = self.rng.randint(2, 4)
    processes = [self.start(workdir, f'--config.total_steps={steps}') for _ in range(n)]
    results = [(p.communicate(timeout=900), p.returncode) for p in processes]
    trained = [code for (_, _), code in results if code == 0]
    refused = [err for (_, err), code in results if code == 2 and 'workdir is in use' in err]
    problems = [] if len(trained) == 1 and len(refused) == n - 1 else [
        f'{len(trained)} trained, {len(refused)} refused of {n}: exits '
        f'{[code for _, code in results]}']
    steps_logged = [r['step'] for r in _records(workdir) if 'loss' in r]
    if steps_logged != list(range(1, steps + 1)):
      problems.append(f'metrics steps {steps_logged}')
    if os.path.exists(os.path.join(workdir, 'lock')):
      problems.append('lock left')
    self.record('race: 2-4 runs started together', not problems, 0, '; '.join(problems))

  def input_trials(self):
    """Config changes, NaN, bad inputs: each must give one line, exit 2, nothing written."""
    lines = {}
    workdir = self.workdir('config_change')
    process = self.start(workdir)
    _wait(lambda: _has_step(workdir, 10), process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=900)
    for name, override in (('seed', '--config.seed=1'), ('total_steps', '--config.total_steps=50'),
                           ('views', '--config.data.bootstrap.views.num=2')):
      code, _, err = self.run(workdir, override)
      lines[f'resume with another {name}'] = _one_line(code, err)
    workdir = self.workdir('nan')
    code, out, err = self.run(workdir, '--config.optimizer.learning_rate=1e30',
                              '--config.optimizer.warmup_steps=13', '--config.log_every=4',
                              '--config.checkpoint_every=4')
    line = _one_line(code, err)
    records = _records(workdir)
    bad = int(line.split('at step ')[1].split(';')[0]) if 'at step ' in line else None
    logged = max((r['step'] for r in records), default=0)
    saved = max((int(s) for s in _listdir(workdir, 'checkpoints') if s.isdigit()), default=0)
    nan_ok = bad is not None and bad % 4 and logged < bad and saved < bad
    lines[f'NaN at step {bad} (logs and saves every 4: last logged {logged}, saved {saved})'] = line
    self.record('NaN between log steps', nan_ok, 0, line)
    for name, overrides in (
        ('image feature that is not an image', ['--config.data.annotation.features.image=caption']),
        ('text labels', ['--config.data.annotation.features.labels=caption']),
        ('missing split', ['--config.data.bootstrap.split=tset']),
        ('view scale above 1', ['--config.data.bootstrap.views.scale=(0.5,1.5)']),
        ('keep_checkpoints=0', ['--config.keep_checkpoints=0']),
        ('unknown key', ['--config.data.bootstrap.veiws.num=2']),
        ('init_from of another model', [f'--config.init_from={self.reference()[0]}',
                                        '--config.model.width=64'])):
      workdir = self.workdir('bad_input')
      code, _, err = self.run(workdir, *overrides)
      written = [n for n in _listdir(workdir, '') if n not in ('lock', 'checkpoints')]
      written += _listdir(workdir, 'checkpoints')
      line = _one_line(code, err)
      lines[name] = line + (f'  [but wrote {written}]' if written else '')
      self.record('bad inputs', line.startswith('error: ') and not written, 0, lines[name])
    return lines


def _exit_problems(sig, code, err):
  if sig == signal.SIGKILL:
    return [] if code in (-signal.SIGKILL, 0) else [f'SIGKILL: exit {code}']
  if code in (EXIT_RESUME, 0):
    return []
  return [f'SIGTERM: exit {code} ({err.strip().splitlines()[-1:] if err.strip() else ""})']


def _one_line(code, err):
  lines = [l for l in err.strip().splitlines() if l.startswith('error: ')]
  if code != 2 or not lines or 'Traceback' in err:
    return f'exit {code}: {(err.strip().splitlines() or [""])[-1][:160]}'
  return lines[-1]


def _listdir(workdir, sub):
  path = os.path.join(workdir, sub)
  return os.listdir(path) if os.path.isdir(path) else []


def _has_step(workdir, step):
  return str(step) in _listdir(workdir, 'checkpoints')


def _records(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _records_at_least(workdir, step):
  try:
    return any(r['step'] >= step for r in _records(workdir))
  except ValueError:           # a line being written
    return False


def _state(workdir, step):
  from annoprop_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  _, tree = checkpoint.load_state(workdir, step)
  return {'/'.join(map(str, k)): np.asarray(v)
          for k, v in traverse_util.flatten_dict(tree).items()}


def _wait(predicate, process, timeout=600, poll=0.02):
  start = time.time()
  while not predicate():
    if process.poll() is not None or time.time() - start > timeout:
      return False
    time.sleep(poll)
  return True


def _ranges(steps):
  return f'{steps[:3]}...{steps[-3:]} ({len(steps)})' if len(steps) > 6 else str(steps)


def markdown(rows, lines, notes=None):
  out = ['| fault | trials | survived bit-exact | lost steps | seconds |', '|---|---|---|---|---|']
  for kind, row in rows.items():
    out.append(f'| {kind} | {row["trials"]} | {row["survived"]} | {row["lost"]} '
               f'| {row["seconds"]:.0f} |')
  for kind, kind_notes in (notes or {}).items():
    out += ['', f'{kind}, the processes left:'] + [f'- {note}' for note in kind_notes]
  if lines:
    out += ['', '| bad input | the line it produced |', '|---|---|']
    out += [f'| {name} | `{line}` |' for name, line in lines.items()]
  return '\n'.join(out)


KINDS = ('kills', 'targeted', 'workers', 'corrupt', 'full_disk', 'two_processes', 'lost_process',
         'race', 'inputs')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--kill_trials', type=int, default=20)
  parser.add_argument('--worker_trials', type=int, default=5)
  parser.add_argument('--race_trials', type=int, default=50)
  parser.add_argument('--lost_process_trials', type=int, default=4,
                      help='trials that kill process 1 of 2, 0 of 2, 2 of 4, 0 of 4, in turn')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--two_processes', action='store_true',
                      help='also the 2-process kinds (damage in one process\'s files, a lost '
                      'process)')
  parser.add_argument('--only', default=None,
                      help=f'a comma-separated subset of the kinds: {",".join(KINDS)}')
  parser.add_argument('--root', default=None, help='scratch folder (default: a new temp dir)')
  parser.add_argument('--out', default=os.path.join(REPO, 'benchmarks', 'results', 'faults.json'))
  args = parser.parse_args()
  kinds = set(args.only.split(',')) if args.only else set(KINDS) - (
      set() if args.two_processes else {'two_processes', 'lost_process'})
  if kinds - set(KINDS):
    parser.error(f'unknown kinds {sorted(kinds - set(KINDS))}; the kinds: {", ".join(KINDS)}')
  root = args.root or tempfile.mkdtemp(prefix='annoprop_faults_')
  campaign = Campaign(root, os.path.join(root, 'data'), args.seed)
  start = time.perf_counter()
  if kinds - {'two_processes', 'lost_process'}:
    print(f'reference run in {root} ...', flush=True)
    print(f'  {campaign.reference()[1]:.0f} s', flush=True)
  trials = {
      'kills': lambda: [campaign.kill_trial('kills') for _ in range(args.kill_trials)],
      'targeted': lambda: [campaign.targeted_trial(point) for point in (
          'start-up', 'compilation', 'restore', 'temporary folder', 'evaluation',
          'metrics write')],
      'workers': lambda: [campaign.kill_trial('kills, 2 grain workers per stream', tuple(
          f'--config.data.{s}.num_workers=2' for s in ('annotation', 'bootstrap')))
                          for _ in range(args.worker_trials)],
      'corrupt': lambda: [campaign.corrupt_trial(item, mode)
                          for item in ('state', 'data_annotation', 'data_bootstrap')
                          for mode in ('truncate', 'zero', 'delete', 'flip a bit')],
      'full_disk': lambda: lines.update({
          'full disk after the first checkpoint': campaign.full_disk_trial()}),
      'two_processes': campaign.two_process_trial,
      'lost_process': lambda: [campaign.lost_process_trial(*LOST_PROCESS_CASES[trial % 4])
                               for trial in range(args.lost_process_trials)],
      'race': lambda: [campaign.race_trial() for _ in range(args.race_trials)],
      'inputs': lambda: lines.update(campaign.input_trials()),
  }
  lines = {}
  for kind in KINDS:
    if kind in kinds:
      trials[kind]()
  table = markdown(campaign.rows, lines, campaign.notes)
  result = {'rows': campaign.rows, 'lines': lines, 'notes': campaign.notes,
            'seconds': round(time.perf_counter() - start), 'args': vars(args)}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  print(table)
  print(f'{result["seconds"]} s; wrote {args.out}')
  if args.root is None:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()
