"""Guards against the faults users meet, at the level of each guard (fast, no training):
damaged, foreign and unreachable checkpoints, failed saves, interrupted saves, metrics written
past the restored step, config changes between starts, signals."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import checkpoint
from annoprop_jax import checkpoint_integrity as integrity
from annoprop_jax import checkpoint_recovery as recovery
from annoprop_jax import configuration
from annoprop_jax import errors
from annoprop_jax import metrics as metrics_lib
from annoprop_jax import stop_request
from annoprop_jax import train

from conftest import REPO, override, tiny_config


def _state(value, size=3):
  return {'w': jnp.full((size,), value, jnp.float32), 'step': jnp.int32(value)}


def _target(size=3):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0, size))


def _checkpointer(workdir, keep=3, keep_every=0, run=None):
  return checkpoint.Checkpointer(str(workdir), every=10, keep=keep, iterators={},
                                 keep_every=keep_every, log=print, run=run)


def _save(workdir, steps, **kwargs):
  saver = _checkpointer(workdir, **kwargs)
  for step in steps:
    saver.save(step, _state(step))
  saver.close()


def _damage(workdir, step):
  """Truncates the biggest file of ``step``'s state (its array data)."""
  state = os.path.join(workdir, 'checkpoints', str(step), 'state')
  files = [os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 3)


def test_damaged_step_is_moved_aside_and_its_number_reused(tmp_path, capsys):
  _save(tmp_path, (10, 20))
  _damage(tmp_path, 20)
  restorer = _checkpointer(tmp_path)
  step, tree, run = recovery.restore_newest_readable(restorer, _target())
  assert step == 10 and int(tree['step']) == 10
  assert run == {'format_version': integrity.FORMAT_VERSION}        # saved with the format
  out = capsys.readouterr().out
  assert 'checkpoints/20 is unreadable' in out and 'moved the damaged checkpoint steps [20]' in out
  # Out of the kept steps, out of evaluate/export's sight, and its step number saves anew.
  assert os.path.isdir(tmp_path / recovery.DAMAGED / '20')
  assert not os.path.exists(tmp_path / 'checkpoints' / '20')
  assert restorer.manager.all_steps() == [10]
  assert restorer.save(20, _state(21))
  restorer.close()
  assert checkpoint.load_state(str(tmp_path))[0] == 20
  assert int(checkpoint.load_state(str(tmp_path))[1]['step']) == 21


def test_arrays_that_decode_but_changed_on_disk_are_damage(tmp_path, capsys):
  _save(tmp_path, (10, 20))
  # Step 20's state replaced by step 10's: every file reads back, only the checksums disagree.
  shutil.rmtree(tmp_path / 'checkpoints' / '20' / 'state')
  shutil.copytree(tmp_path / 'checkpoints' / '10' / 'state',
                  tmp_path / 'checkpoints' / '20' / 'state')
  assert int(checkpoint.load_state(str(tmp_path))[1]['step']) == 10     # it does decode
  assert recovery.restore_newest_readable(_checkpointer(tmp_path), _target())[0] == 10
  assert "checksum mismatch in state['step'], state['w']" in capsys.readouterr().out


def test_a_single_flipped_bit_changes_the_checksum():
  x = jnp.arange(1000, dtype=jnp.float32).reshape(10, 100)
  base = integrity.array_checksums({'x': x})["['x']"]
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  for index, bit in ((0, 0), (517, 13), (999, 31)):
    flipped = bits.reshape(-1).at[index].set(bits.reshape(-1)[index] ^ jnp.uint32(1 << bit))
    changed = jax.lax.bitcast_convert_type(flipped.reshape(10, 100), jnp.float32)
    assert integrity.array_checksums({'x': changed})["['x']"] != base, (index, bit)


def test_every_step_damaged_refuses_to_start_from_scratch(tmp_path):
  _save(tmp_path, (10, 20))
  for step in (10, 20):
    _damage(tmp_path, step)
  for _ in range(2):       # and again on the next start: the damaged steps stay in place
    with pytest.raises(recovery.NoReadableCheckpointError, match=r'steps \[20, 10\]'):
      recovery.restore_newest_readable(_checkpointer(tmp_path), _target())
  assert not os.path.exists(tmp_path / recovery.DAMAGED)


def test_checkpoint_of_another_model_is_a_mismatch_not_damage(tmp_path):
  _save(tmp_path, (10,))
  with pytest.raises(integrity.CheckpointMismatchError, match=r"shapes \['w'\] \(3,\) "
                     r"\(this run: \(4,\)\)"):
    recovery.restore_newest_readable(_checkpointer(tmp_path), _target(size=4))
  assert os.path.isdir(tmp_path / 'checkpoints' / '10')        # left where it is
  assert not os.path.exists(tmp_path / recovery.DAMAGED)


def test_iterator_states_of_another_process_count_are_a_mismatch_not_damage(tmp_path):
  _save(tmp_path, (10,))
  # What grain writes for 2 processes (one state file each); this run is 1 process.
  folder = tmp_path / 'checkpoints' / '10' / 'data_annotation'
  folder.mkdir()
  for i in range(2):
    (folder / f'process_{i}-of-2.json').write_text('{}')
  restorer = checkpoint.Checkpointer(str(tmp_path), every=10, keep=3,
                                     iterators={'annotation': None}, log=print)
  with pytest.raises(integrity.CheckpointMismatchError, match='saved by 2 JAX processes and '
                     'this run has 1; resume with the same process count'):
    recovery.restore_newest_readable(restorer, _target())
  assert os.path.isdir(tmp_path / 'checkpoints' / '10')


def test_transient_read_errors_are_retried_then_raised_never_damage(tmp_path, monkeypatch):
  _save(tmp_path, (10,))
  monkeypatch.setattr(recovery.time, 'sleep', lambda seconds: None)
  restorer = _checkpointer(tmp_path)
  real_restore, calls = restorer.restore, []

  def flaky(target, step=None):
    calls.append(step)        # the whole read is retried: metadata, run record, arrays
    if len(calls) < 3:
      raise ConnectionResetError('Connection reset by peer')
    return real_restore(target, step)

  monkeypatch.setattr(restorer, 'restore', flaky)
  assert recovery.restore_newest_readable(restorer, _target())[0] == 10
  assert calls == [10, 10, 10]

  def down(target, step=None):
    raise ValueError('UNAVAILABLE: the store is down')

  monkeypatch.setattr(restorer, 'restore', down)
  with pytest.raises(ValueError, match='UNAVAILABLE'):
    recovery.restore_newest_readable(restorer, _target())
  assert restorer.manager.all_steps() == [10]                 # not marked damaged
  restorer.close()


@pytest.mark.parametrize('error,kind', [
    (errors.ConfigError('saved with 2 grain worker processes'), 'mismatch'),
    (MemoryError(), 'resources'),
    (ValueError('RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB'), 'resources'),
    (TimeoutError(), 'transient'),
    (ValueError('DEADLINE_EXCEEDED: read of gs://b/x'), 'transient'),
    (ValueError('Error reading "w": corrupted data'), 'damage'),
    (FileNotFoundError('no state metadata'), 'damage'),
])
def test_failure_kind(error, kind):
  assert recovery.classify(error).value == kind
  try:
    raise RuntimeError('while restoring') from error       # seen through the cause chain
  except RuntimeError as wrapped:
    assert recovery.classify(wrapped).value == kind


_FULL_DISK = """
import resource, signal, sys
import jax.numpy as jnp
from annoprop_jax import checkpoint
saver = checkpoint.Checkpointer(sys.argv[1], every=10, keep=3, iterators={}, log=print)
saver.save(10, {'w': jnp.ones(3), 'step': jnp.int32(10)})
saver.manager.wait_until_finished()
# The disk is full from here on: every write fails (EFBIG instead of ENOSPC; pipes are exempt).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
try:
  saver.save(20, {'w': jnp.zeros(3), 'step': jnp.int32(20)})
  saver.close()
except checkpoint.CheckpointSaveError as e:
  print('CheckpointSaveError:', e)
"""


def test_a_failed_save_is_one_error_and_the_previous_checkpoint_stays(tmp_path):
  result = subprocess.run([sys.executable, '-c', _FULL_DISK, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
  last = result.stdout.strip().splitlines()[-1]
  assert last.startswith('CheckpointSaveError: saving a checkpoint in'), result.stderr[-2000:]
  assert 'File too large' in last and 'the previous checkpoints are kept' in last
  # With space again, the next start removes the half-written step and restores step 10.
  recovery.remove_interrupted_saves(str(tmp_path))
  restorer = _checkpointer(tmp_path)
  assert restorer.manager.all_steps() == [10]
  assert recovery.restore_newest_readable(restorer, _target(size=3))[0] == 10
  restorer.close()
  assert os.listdir(tmp_path / 'checkpoints') == ['10']


def test_temporary_folders_of_killed_saves_are_removed(tmp_path):
  _save(tmp_path, (10,))
  leftover = tmp_path / 'checkpoints' / '20.orbax-checkpoint-tmp-1733000000'
  (leftover / 'state').mkdir(parents=True)
  recovery.remove_interrupted_saves(str(tmp_path))
  restorer = _checkpointer(tmp_path)
  assert restorer.manager.all_steps() == [10]
  restorer.close()
  assert not leftover.exists()


def test_keeps_the_last_n_and_every_mth_step(tmp_path):
  _save(tmp_path, range(10, 70, 10), keep=2, keep_every=20)
  assert sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints')) == [20, 40, 50, 60]


def test_the_run_record_is_saved_and_checked_before_the_arrays_are_read(tmp_path):
  run = {'seed': 0, 'total_steps': 40, 'data.annotation.records': 'scenes 1.0.0 train: 256'}
  _save(tmp_path, (10,), run=run)
  seen = []
  restored = recovery.restore_newest_readable(
      _checkpointer(tmp_path), _target(), check_run=lambda step, saved: seen.append((step, saved)))
  saved = {'format_version': integrity.FORMAT_VERSION, **run}
  assert restored[0] == 10 and restored[2] == saved and seen == [(10, saved)]

  def refuse(step, saved):
    raise configuration.ConfigError(f'step {step} was trained with seed {saved["seed"]}')

  _damage(tmp_path, 10)
  with pytest.raises(configuration.ConfigError, match='step 10 was trained with seed 0'):
    recovery.restore_newest_readable(_checkpointer(tmp_path), _target(), check_run=refuse)
  assert os.path.isdir(tmp_path / 'checkpoints' / '10')   # refused before its arrays were read


def test_metrics_past_the_restored_step_are_dropped(tmp_path):
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    for step in range(1, 11):
      f.write(json.dumps({'step': step, 'loss': 1.0}) + '\n')
    f.write('{"step": 11, "lo')                   # torn by a kill mid-write
  logger = metrics_lib.MetricsLogger(str(tmp_path), 20, print_fn=lambda line: None,
                                     every=1, start_step=6)
  logger.write(7, {'loss': 0.5, 'learning_rate': 1e-3, 'images_per_sec': 1.0}, 1.0)
  logger.close()
  assert [r['step'] for r in metrics_lib.read_metrics(str(tmp_path))] == [1, 2, 3, 4, 5, 6, 7]
  # A logger that only appends (evaluate's probe of step 3) keeps everything.
  logger = metrics_lib.MetricsLogger(str(tmp_path), 20, print_fn=lambda line: None)
  logger.write_evaluation(3, {'objects_linear': 0.5})
  logger.close()
  assert [r['step'] for r in metrics_lib.read_metrics(str(tmp_path))] == [1, 2, 3, 4, 5, 6, 7, 3]


def test_logged_train_metrics_are_window_means(tmp_path):
  logger = metrics_lib.MetricsLogger(str(tmp_path), 8, print_fn=lambda line: None, every=4,
                                     start_step=0)
  nan = float('nan')
  for loss, accuracy in ((1.0, 0.5), (2.0, nan), (3.0, 0.7), (6.0, nan)):
    logger.add({'loss': jnp.float32(loss), 'learning_rate': jnp.float32(loss / 10),
                'value_accuracy_iou_0': jnp.float32(accuracy)})
  record = logger.write_step(4, {})
  assert record['loss'] == pytest.approx(3.0)                 # (1 + 2 + 3 + 6) / 4, not 6
  assert record['value_accuracy_iou_0'] == pytest.approx(0.6)  # the steps that had such pairs
  logger.add({'loss': jnp.float32(5.0), 'learning_rate': jnp.float32(0.5),
              'value_accuracy_iou_0': jnp.float32(nan)})
  record = logger.write_step(5, {})                          # a new window
  assert record['loss'] == pytest.approx(5.0) and record['value_accuracy_iou_0'] is None
  logger.close()


def test_resume_identity_holds_what_a_resume_depends_on():
  config = tiny_config('ab_dino_scenes').unlock()
  identity = configuration.resume_identity(config)
  assert {'seed', 'total_steps', 'model.width', 'data.annotation.batch_size',
          'data.bootstrap.views.scale', 'optimizer.learning_rate'} <= identity.keys()
  # What may change between starts: logging, saving, probing, the mesh, where data is read.
  for key, value in (('log_every', 7), ('checkpoint_every', 3), ('keep_checkpoints', 9),
                     ('evaluation.every_steps', 5), ('mesh.data', 2),
                     ('data.data_dir', '/elsewhere'), ('data.bootstrap.num_threads', 4)):
    changed = override(config.copy_and_resolve_references(), **{key: value})
    assert configuration.resume_identity(changed) == identity, key
  config.seed, config.total_steps = 1, 30
  assert configuration.changed_keys(identity, configuration.resume_identity(config)) == [
      'seed: 0 -> 1', 'total_steps: 20 -> 30']


@pytest.mark.parametrize('key,value', [('keep_checkpoints', 0), ('keep_checkpoint_every', -1)])
def test_checkpoint_keeping_is_validated(key, value):
  config = tiny_config('simclr_scenes', **{key: value})
  with pytest.raises(configuration.ConfigError, match=key):
    configuration.validate(config)


def test_stop_request_sets_its_flag_and_prints_nothing(capsys):
  before = signal.getsignal(signal.SIGTERM)
  stop = stop_request.StopRequest()
  assert not stop.agreed()
  os.kill(os.getpid(), signal.SIGTERM)
  os.kill(os.getpid(), signal.SIGTERM)
  assert stop.agreed() and stop.signal == signal.SIGTERM
  with pytest.raises(KeyboardInterrupt):       # a second Ctrl-C aborts at once
    os.kill(os.getpid(), signal.SIGINT)
  assert stop.signal == signal.SIGTERM         # the first signal is kept
  stop.restore()
  assert stop_request.active() is None
  assert signal.getsignal(signal.SIGTERM) is before
  assert capsys.readouterr().out == ''


@pytest.mark.slow
def test_a_signal_stops_after_its_step_with_a_checkpoint_and_without_its_evaluation(
    tmp_path, tiny_data_dir):
  config = tiny_config('supervised_objects', **{
      'data.data_dir': tiny_data_dir, 'total_steps': 6, 'log_every': 3,
      'evaluation.every_steps': 3, 'evaluation.tasks': ('objects',),
      'evaluation.probes': ('linear',)})
  printed, handler = [], signal.getsignal(signal.SIGTERM)
  signal_after = lambda step, state: step == 2 and os.kill(os.getpid(), signal.SIGTERM)
  state = train.train(config, str(tmp_path), print_fn=printed.append, on_step=signal_after)
  # Step 3 was due for a log, a save and a probe: the probe (minutes at full size) is skipped.
  assert int(state.step) == 3
  assert f'Stopped at step 3 (signal {int(signal.SIGTERM)}); rerun the same command to ' \
         'resume.' in printed
  records = metrics_lib.read_metrics(str(tmp_path))
  assert [r['step'] for r in records] == [3] and not any(k.startswith('eval/') for k in records[0])
  assert checkpoint.load_state(str(tmp_path))[0] == 3
  assert signal.getsignal(signal.SIGTERM) is handler
  config.evaluation.every_steps = 0          # free to change between starts
  assert int(train.train(config, str(tmp_path), print_fn=printed.append).step) == 6
  assert [r['step'] for r in metrics_lib.read_metrics(str(tmp_path))] == [3, 6]


def test_a_code_version_with_more_or_fewer_config_keys_is_no_change():
  assert configuration.changed_keys({'seed': 0, 'old_key': 1}, {'seed': 0, 'new_key': 2}) == []
  assert configuration.changed_keys({'seed': 0}, {'seed': 2}) == ['seed: 0 -> 2']


def _undecodable(pattern, count, **limits):
  import grain  # pylint: disable=g-import-not-at-top
  from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  ds = grain.MapDataset.range(count).map(lambda i: None if pattern(i) else {'x': np.int32(i)})
  ds = ds.to_iter_dataset(allow_nones=True)
  return iter(pipeline._SkipUndecodable(ds, 1, 0, limits))   # pylint: disable=protected-access


def test_a_stream_in_which_nothing_decodes_stops_with_one_line():
  it = _undecodable(lambda i: i >= 5, 100, max_undecodable_run=10)
  assert [next(it)['x'] for _ in range(5)] == [0, 1, 2, 3, 4]
  with pytest.raises(errors.DataError, match=r'11 of 16 records did not decode \(11 in a row'):
    next(it)


@pytest.mark.parametrize('fraction,stops', [(0.4, True), (0.6, False)])
def test_a_stream_that_skips_too_large_a_fraction_stops(fraction, stops):
  it = _undecodable(lambda i: i % 2, 4000, max_undecodable_fraction=fraction)   # every other
  taken = []
  try:
    for _ in range(1500):
      taken.append(next(it))
  except errors.DataError as e:
    assert stops and 'did not decode' in str(e)
  assert len(taken) == (500 if stops else 1500)
  assert int(taken[-1]['skipped_records']) == len(taken) - 1


@pytest.mark.parametrize('name,overrides,error,message', [
    ('supervised_objects', {'data.annotation.features.labels': 'caption'}, errors.DataError,
     'features.labels gives bytes values'),
    ('simclr_scenes', {'data.annotation.features.image': 'caption'}, errors.DataError,
     'records did not decode'),
    ('simclr_scenes', {'data.annotation.split': 'tset'}, configuration.ConfigError,
     "has no split 'tset'"),
    ('simclr_scenes', {'data.annotation.views.scale': (0.5, 0.2)}, configuration.ConfigError,
     r'data.annotation.views.scale must be 0 < min <= max <= 1'),
    ('ab_dino_scenes', {'data.bootstrap.local_views.ratio': (2.0, 0.5)},
     configuration.ConfigError, 'data.bootstrap.local_views.ratio must be 0 < min <= max'),
])
def test_bad_inputs_are_one_error_before_anything_is_written(name, overrides, error, message,
                                                             tmp_path, tiny_data_dir):
  config = tiny_config(name, **{'data.data_dir': tiny_data_dir}, **overrides)
  with pytest.raises(error, match=message):
    train.train(config, str(tmp_path / 'run'), print_fn=lambda line: None)
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
  checkpoints = tmp_path / 'run' / 'checkpoints'
  assert not checkpoints.exists() or not os.listdir(checkpoints)


def test_labels_past_an_undeclared_class_count_are_an_error(tmp_path, tiny_data_dir,
                                                            monkeypatch):
  from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(pipeline, 'num_classes', lambda *args, **kwargs: None)   # undeclared
  config = tiny_config('supervised_objects', **{'data.data_dir': tiny_data_dir,
                                                'objective.num_classes': 3})
  with pytest.raises(errors.DataError, match=r'class id \d+ but objective.num_classes=3'):
    train.train(config, str(tmp_path), print_fn=lambda line: None)
  assert not os.path.exists(tmp_path / 'config.json')


def test_init_from_another_model_is_one_error(tmp_path, tiny_data_dir):
  params = {'encoder': {'w': jnp.zeros(3)}}
  other = {'params': params, 'target_params': params, 'step': jnp.int32(1)}
  saver = _checkpointer(tmp_path / 'other')
  saver.save(1, other)
  saver.close()
  config = tiny_config('simclr_scenes', **{'data.data_dir': tiny_data_dir,
                                           'init_from': str(tmp_path / 'other')})
  with pytest.raises(configuration.ConfigError, match='holds the params of another model'):
    train.train(config, str(tmp_path / 'run'), print_fn=lambda line: None)


@pytest.mark.slow
def test_sigterm_while_starting_exits_with_the_resume_code_without_training(tmp_path,
                                                                            tiny_data_dir):
  """The handler is installed before main's imports: a SIGTERM that arrives while the run is
  still importing, opening its data or compiling ends it cleanly, before any step."""
  process = subprocess.Popen(
      [sys.executable, '-m', 'annoprop_jax.main', 'train', '--config=configs/simclr_scenes.py:tiny',
       f'--workdir={tmp_path}', f'--config.data.data_dir={tiny_data_dir}'], cwd=REPO,
      env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1'), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  time.sleep(0.3)                       # inside the imports (they take seconds)
  process.send_signal(signal.SIGTERM)
  out, err = process.communicate(timeout=300)
  assert process.returncode == 75, err[-2000:]
  assert 'Stopped before step 1 (signal 15)' in out
  assert not os.path.exists(tmp_path / 'metrics.jsonl') and not os.path.exists(tmp_path / 'lock')


def test_a_checkpoint_of_an_older_format_is_refused_in_one_line(tmp_path):
  saver = _checkpointer(tmp_path)
  saver.save(10, {'params': jnp.ones(3), 'target_params': jnp.zeros(3)})
  saver.close()
  shutil.rmtree(tmp_path / 'checkpoints' / '10' / 'run')     # as before run records
  target = {'params': jax.ShapeDtypeStruct((3,), jnp.float32),
            'target_params': jax.ShapeDtypeStruct((3,), jnp.float32)}
  with pytest.raises(integrity.CheckpointMismatchError, match='has checkpoint format 1, and '
                     'this annoprop_jax reads format 2: start a new run'):
    recovery.restore_newest_readable(_checkpointer(tmp_path), target)
  assert os.path.isdir(tmp_path / 'checkpoints' / '10')              # not damage: left alone
  with pytest.raises(integrity.CheckpointMismatchError, match='checkpoint format 1'):
    checkpoint.load_state(str(tmp_path))
  # Its parameters are stored as in every format: init_from, evaluate and export read them.
  step, params, target_params = checkpoint.load_params(str(tmp_path))
  assert step == 10 and float(params[0]) == 1.0 and float(target_params[0]) == 0.0
