"""Evaluation: task targets, frozen features, export/load, probes during training (metrics and
TensorBoard) and the `evaluate` command on a checkpoint."""
import glob
import os
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest

from annoprop_jax import checkpoint
from annoprop_jax import configuration
from annoprop_jax import metrics as metrics_lib
from annoprop_jax import sharding
from annoprop_jax import train
from annoprop_jax.evaluation import encoder as encoder_lib
from annoprop_jax.evaluation import tasks
from annoprop_jax.evaluation import task_data
from annoprop_jax.evaluation import timm_format
from annoprop_jax.models import vit
from conftest import REPO, fresh_evaluator, tiny_config, xla_flags


def test_task_targets_from_padded_labels():
  labels = np.array([[3, -1, -1], [0, 0, 2], [1, 2, -1]])
  np.testing.assert_array_equal(
      tasks.targets(tasks.TASKS['objects'], labels, num_labels=4, max_objects=3), [3, 0, 1])
  np.testing.assert_array_equal(
      tasks.targets(tasks.TASKS['count'], labels, num_labels=4, max_objects=3), [1, 3, 2])
  np.testing.assert_array_equal(
      tasks.targets(tasks.TASKS['presence'], labels, num_labels=4, max_objects=3),
      [[0, 0, 0, 1], [1, 0, 1, 0], [0, 1, 1, 0]])
  assert tasks.num_targets(tasks.TASKS['count'], num_labels=13, max_objects=8) == 9
  # Balanced subsets: round-robin over the classes, each in a seeded random order.
  labels = np.array([0] * 10 + [1] * 3 + [2] * 5)
  picked = task_data.balanced_indices(labels, 9)
  assert np.bincount(labels[picked]).tolist() == [3, 3, 3] and len(set(picked)) == 9
  assert np.bincount(labels[task_data.balanced_indices(labels, 13)]).tolist() == [5, 3, 5]
  assert (task_data.balanced_indices(labels, 9) == picked).all()
  with pytest.raises(ValueError, match='no object label'):
    tasks.targets(tasks.TASKS['objects'], np.array([[-1, -1]]), 4, 2)


def test_a_validation_part_is_carved_out_of_the_train_split():
  objects, classes = tasks.TASKS['objects'], tasks.TASKS['classes']
  take = lambda *args, **kw: task_data.record_indices(20, *args, **kw).tolist()
  assert take(objects, 5, held_out=4) == [0, 1, 2, 3, 4]
  assert take(objects, 0, held_out=4) == list(range(16))
  assert take(objects, 5, held_out=4, part='held_out') == [16, 17, 18, 19]
  assert take(objects, 0) == list(range(20))
  with pytest.raises(ValueError, match='leaves none'):
    take(objects, 5, held_out=20)
  # A balanced task (class-sorted records): both parts balanced, and disjoint.
  labels = np.repeat([0, 1, 2, 3], 5)
  held = take(classes, 6, held_out=8, part='held_out', first_labels=labels)
  fit = take(classes, 8, held_out=8, first_labels=labels)
  assert np.bincount(labels[held]).tolist() == [2, 2, 2, 2]
  assert np.bincount(labels[fit]).tolist() == [2, 2, 2, 2] and not set(held) & set(fit)


def test_probes_scored_on_validation_never_read_the_test_split(tiny_data_dir):
  overrides = {'data.data_dir': tiny_data_dir, 'evaluation.tasks': ('objects',),
               'evaluation.train_examples': 16, 'evaluation.test_examples': 8}
  config = tiny_config('dino_scenes', **overrides)
  whole = task_data.load(config.data, 'scenes', tasks.TASKS['objects'], 'objects', 16, 0)
  test = task_data.load(config.data, 'scenes', tasks.TASKS['objects'], 'objects_validation',
                        16, 8)
  evaluator, _ = fresh_evaluator(config)
  fit, scored = evaluator._task_data('objects')     # pylint: disable=protected-access
  np.testing.assert_array_equal(scored.images, test.images)
  evaluator, _ = fresh_evaluator(tiny_config('dino_scenes', **overrides,
                                             **{'evaluation.score_on': 'validation'}))
  fit, scored = evaluator._task_data('objects')     # pylint: disable=protected-access
  np.testing.assert_array_equal(fit.images, whole.images[:16])
  np.testing.assert_array_equal(scored.images, whole.images[-8:])
  np.testing.assert_array_equal(scored.targets, whole.targets[-8:])


def _tiny_encoder():
  """(config, model, 10 random 16 px images, its fresh params, a 2-device data mesh)."""
  config = vit.EncoderConfig(patch_size=8, width=32, depth=1, num_heads=2, image_size=16)
  model = vit.ViT(config)
  images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
  params = model.init(jax.random.PRNGKey(0), images[:1])['params']
  mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:2])
  return config, model, images, params, mesh


def test_features_of_a_padded_sharded_batch_equal_direct_apply():
  config, model, images, params, mesh = _tiny_encoder()
  pooled, tokens = encoder_lib.features(config, params, images, mesh, batch_size=4)
  direct_pooled, direct_tokens = model.apply({'params': params}, images)
  assert pooled.shape == (10, 32) and tokens.shape == (10, 4, 32)
  np.testing.assert_allclose(pooled, direct_pooled, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(tokens, direct_tokens, rtol=1e-4, atol=1e-5)


def _event_values(directory):
  """(step, summary value) of every summary in the TensorBoard event files in ``directory``
  (TFRecord framing: length, its CRC, the Event proto, its CRC)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  for path in glob.glob(os.path.join(directory, 'events.out.tfevents.*')):
    with open(path, 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        yield event.step, value


def _event_tags(directory):
  """{tag: [(step, scalar value)]}."""
  tags = {}
  for step, value in _event_values(directory):
    tags.setdefault(value.tag, []).append((step, value.simple_value))
  return tags


def _event_kinds(directory):
  """{tag: [(step, 'image' | the plugin's name)]} of the non-scalar summaries."""
  kinds = {}
  for step, value in _event_values(directory):
    kind = 'image' if value.HasField('image') else value.metadata.plugin_data.plugin_name
    if kind:
      kinds.setdefault(value.tag, []).append((step, kind))
  return kinds


@pytest.mark.slow
def test_probes_during_training_then_evaluate_and_export(tmp_path, tiny_data_dir):
  workdir = str(tmp_path / 'run')
  config = tiny_config('ab_dino_scenes', **{
      'data.data_dir': tiny_data_dir, 'total_steps': 8, 'log_every': 4, 'checkpoint_every': 4,
      'evaluation.every_steps': 4, 'evaluation.train_examples': 48,
      'evaluation.test_examples': 24, 'evaluation.probes': ('knn', 'linear'),
      'evaluation.tasks': ('objects', 'presence'), 'evaluation.epochs': 2,
      'evaluation.visualize': True, 'profile_steps': '2,3'})
  lines = []
  train.train(config, workdir, print_fn=lines.append)
  evals = [r for r in metrics_lib.read_metrics(workdir) if 'eval/objects_knn' in r]
  assert [r['step'] for r in evals] == [4, 8]
  for record in evals:
    assert set(record) == {'step', 'eval/objects_knn', 'eval/objects_linear',
                           'eval/presence_knn', 'eval/presence_linear'}
    assert all(0.0 <= v <= 1.0 for k, v in record.items() if k != 'step')
  assert any(line.startswith('evaluation at step 8') for line in lines)
  assert any('ETA' in line and 'eval 4/4' in line for line in lines)
  # TensorBoard shows the training curves and the probe curves.
  tags = _event_tags(os.path.join(workdir, 'tensorboard'))
  assert [step for step, _ in tags['train/loss']] == [4, 8]
  assert tags['eval/objects_knn'] == [(4, pytest.approx(evals[0]['eval/objects_knn'])),
                                      (8, pytest.approx(evals[1]['eval/objects_knn']))]
  assert 'train/annotation_data_fingerprint' not in tags
  # ... the config (text and hparams), the first batch's views, the pictures of each
  # evaluation, and a profile of steps 2-3 for the profile tab.
  kinds = _event_kinds(os.path.join(workdir, 'tensorboard'))
  assert kinds['config/text_summary'] == [(0, 'text')]
  assert kinds['_hparams_/experiment'] == [(0, 'hparams')]
  for tag in ('views/annotation_images', 'views/bootstrap_images'):
    assert kinds[tag] == [(0, 'image')]
  for tag in ('pictures/value_map', 'pictures/attention', 'pictures/views'):
    assert kinds[tag] == [(4, 'image'), (8, 'image')]
  assert glob.glob(os.path.join(workdir, 'tensorboard', 'plugins', 'profile', '*',
                                '*.xplane.pb'))
  assert any('wrote a profile of steps 2-3' in line for line in lines)
  assert os.path.getsize(os.path.join(workdir, 'parameters.txt')) > 1000

  # The run's config.json reads back as the config it trained with.
  assert configuration.load_run(workdir).to_dict() == config.to_dict()

  # `evaluate` on the step-4 checkpoint (the run's own config) prints a table, appends metrics.
  env = dict(os.environ, XLA_FLAGS=xla_flags(2),
             JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-m', 'annoprop_jax.main', 'evaluate',
                           f'--workdir={workdir}', '--step=4'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'evaluation at step 4' in result.stdout
  table = {line.split()[0]: float(line.split()[1]) for line in result.stdout.splitlines()
           if line.startswith('  ') and len(line.split()) == 2}
  assert set(table) == {'objects_knn', 'objects_linear', 'presence_knn', 'presence_linear'}
  # kNN is deterministic: the same checkpoint gives the same score as during training.
  assert table['objects_knn'] == pytest.approx(evals[0]['eval/objects_knn'], abs=1e-4)
  assert metrics_lib.read_metrics(workdir)[-1]['step'] == 4

  # `export` -> load_encoder gives the EMA encoder (DINO's probed one) of the last checkpoint.
  result = subprocess.run([sys.executable, '-m', 'annoprop_jax.main', 'export',
                           f'--workdir={workdir}', f'--output={tmp_path / "encoder"}'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'exported the target encoder of step 8' in result.stdout
  _, _, target_params = checkpoint.load_params(workdir)
  encoder_config, params = encoder_lib.load_encoder(str(tmp_path / 'encoder'))
  assert encoder_config == configuration.encoder_config(config)
  jax.tree.map(np.testing.assert_array_equal, params, target_params['encoder'])
  with pytest.raises(FileNotFoundError, match='not an exported encoder'):
    encoder_lib.load_encoder(str(tmp_path))
  # `export --format=safetensors` writes the same (target) encoder in timm's names
  # (test_timm_export checks that timm computes the same features from them).
  result = subprocess.run([sys.executable, '-m', 'annoprop_jax.main', 'export',
                           f'--workdir={workdir}', f'--output={tmp_path / "timm"}',
                           '--format=safetensors'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'exported the target encoder of step 8' in result.stdout
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  weights = safetensors.numpy.load_file(str(tmp_path / 'timm' / timm_format.WEIGHTS))
  np.testing.assert_array_equal(weights['blocks.0.mlp.fc1.weight'],
                                np.asarray(target_params['encoder']['block0']['MlpBlock_0']
                                           ['Dense_0']['kernel']).T)
  # Every parameter of timm's VisionTransformer, and nothing else.
  per_block = [f'{layer}.{kind}' for layer in ('norm1', 'attn.qkv', 'attn.proj', 'norm2',
                                               'mlp.fc1', 'mlp.fc2') for kind in ('weight', 'bias')]
  assert set(weights) == {
      'patch_embed.proj.weight', 'patch_embed.proj.bias', 'pos_embed', 'norm.weight',
      'norm.bias', *(['cls_token'] if encoder_config.pool == 'cls' else []),
      *(f'blocks.{i}.{name}' for i in range(encoder_config.depth) for name in per_block)}


def test_token_probes_get_their_own_sweep_and_epochs(monkeypatch, tiny_data_dir):
  from annoprop_jax.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  seen = []

  def attentive_probe(train_x, train_y, test_x, test_y, *, config, sweep, **kwargs):
    seen.append((config.learning_rates, config.epochs, sweep))
    return {'predictions': np.zeros((len(test_y), kwargs['num_classes']))}

  monkeypatch.setattr(evaluator_lib.probes, 'attentive_probe', attentive_probe)
  overrides = {'data.data_dir': tiny_data_dir, 'evaluation.tasks': ('objects',),
               'evaluation.probes': ('attentive',), 'evaluation.train_examples': 16,
               'evaluation.test_examples': 8, 'evaluation.epochs': 3}
  evaluator, params = fresh_evaluator(tiny_config('dino_scenes', **overrides))
  evaluator(params)
  evaluator, params = fresh_evaluator(tiny_config('dino_scenes', **{
      **overrides, 'evaluation.token_learning_rates': (3e-4, 1e-3), 'evaluation.token_epochs': 9}))
  evaluator(params)
  assert seen == [((1e-3,), 3, False), ((3e-4, 1e-3), 9, True)]


def test_the_fewshot_probe_reports_each_shot_count_on_one_label_tasks(tiny_data_dir):
  from annoprop_jax import errors  # pylint: disable=g-import-not-at-top
  from annoprop_jax.evaluation import fewshot  # pylint: disable=g-import-not-at-top
  overrides = {'data.data_dir': tiny_data_dir, 'evaluation.tasks': ('objects', 'presence'),
               'evaluation.probes': ('fewshot',), 'evaluation.train_examples': 64,
               'evaluation.test_examples': 32, 'evaluation.fewshot_shots': (1, 4),
               'evaluation.fewshot_seeds': 2}
  config = tiny_config('dino_scenes', **overrides)
  evaluator, params = fresh_evaluator(config)
  results = evaluator(params)
  assert sorted(results) == ['objects_fewshot_1shot', 'objects_fewshot_4shot']   # presence:
  # several labels an image, skipped. The numbers are the probe's on the encoder's features.
  train, test = evaluator._task_data('objects')     # pylint: disable=protected-access
  features = lambda images: encoder_lib.features(evaluator.encoder_config, params, images,
                                                 evaluator.mesh)[0]
  want = fewshot.fewshot_probe(features(train.images), train.targets, features(test.images),
                              test.targets, num_classes=train.num_classes, shots=(1, 4), seeds=2)
  assert results == {f'objects_fewshot_{n}shot': want[n] for n in (1, 4)}
  with pytest.raises(errors.ConfigError, match='fewshot_shots must be >= 1'):
    configuration.validate(tiny_config('dino_scenes', **{**overrides,
                                                          'evaluation.fewshot_shots': (0,)}))


def test_the_centre_crop_is_the_shorter_side_at_size_over_0875_then_the_centre():
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  wide = rng.integers(0, 255, (40, 80, 3)).astype(np.uint8)
  # 16 px: the shorter side to round(16 / 0.875) = 18, so 18 x 36, and the central 16 x 16
  # starts at row 1, column 10.
  want = np.asarray(Image.fromarray(wide).resize((36, 18), Image.BICUBIC))[1:17, 10:26]
  np.testing.assert_array_equal(task_data.centre_crop(wide, 16), want)
  tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
  want = np.asarray(Image.fromarray(tall).resize((18, 36), Image.BICUBIC))[10:26, 1:17]
  np.testing.assert_array_equal(task_data.centre_crop(tall, 16), want)


def test_a_centre_cropped_task_reads_the_crops(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  task = tasks.TASKS['objects']
  native = config.data.scenes.resolution       # resized to its own size: the decoded image
  whole = task_data.load(config.data, 'scenes', task, 'objects', native, 4)
  crops = task_data.load(config.data, 'scenes', task, 'objects', 16, 4, preprocess='centre_crop')
  np.testing.assert_array_equal(crops.targets, whole.targets)
  for image, crop in zip(whole.images, crops.images):
    np.testing.assert_array_equal(crop, task_data.centre_crop(image, 16))
  evaluator, _ = fresh_evaluator(tiny_config('dino_scenes', **{
      'data.data_dir': tiny_data_dir, 'evaluation.preprocess': 'centre_crop',
      'evaluation.tasks': ('objects', 'count'), 'evaluation.train_examples': 4}))
  fit, _ = evaluator._task_data('objects')     # pylint: disable=protected-access
  np.testing.assert_array_equal(fit.images, crops.images)
  # A scene-level task's images are resized whole: a crop would cut objects out.
  fit, _ = evaluator._task_data('count')     # pylint: disable=protected-access
  scenes = task_data.load(config.data, 'scenes', tasks.TASKS['count'], 'train', 16, 4)
  np.testing.assert_array_equal(fit.images, scenes.images)


def test_a_split_over_images_in_memory_is_streamed_with_the_same_results(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  task = tasks.TASKS['objects']
  held = task_data.load(config.data, 'scenes', task, 'objects', 16, 24, captions=True)
  streamed = task_data.load(config.data, 'scenes', task, 'objects', 16, 24, captions=True,
                            images_in_memory=10)
  assert isinstance(held.images, np.ndarray)
  assert isinstance(streamed.images, task_data.StreamedImages) and len(streamed.images) == 24
  assert not any(isinstance(v, np.ndarray) and v.dtype == np.uint8    # no decoded images held
                 for v in vars(streamed.images).values())
  np.testing.assert_array_equal(streamed.images[5:13], held.images[5:13])
  np.testing.assert_array_equal(streamed.targets, held.targets)
  np.testing.assert_array_equal(streamed.captions, held.captions)
  # An evaluation reads the same images either way.
  overrides = {'data.data_dir': tiny_data_dir, 'evaluation.tasks': ('objects', 'boxes'),
               'evaluation.probes': ('knn', 'linear', 'attentive'),
               'evaluation.train_examples': 24, 'evaluation.test_examples': 12,
               'evaluation.epochs': 2}
  evaluator, params = fresh_evaluator(tiny_config('dino_scenes', **overrides))
  want = evaluator(params)
  evaluator, _ = fresh_evaluator(tiny_config('dino_scenes', **{
      **overrides, 'evaluation.images_in_memory': 5}))
  assert isinstance(evaluator._task_data('boxes')[0].images, task_data.StreamedImages)  # pylint: disable=protected-access
  assert evaluator(params) == want


def test_evaluate_keeps_the_features_and_a_rerun_reads_them(tmp_path, tiny_data_dir,
                                                            monkeypatch):
  from annoprop_jax.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  config = tiny_config('dino_scenes', **{
      'data.data_dir': tiny_data_dir, 'total_steps': 2, 'log_every': 2, 'checkpoint_every': 2,
      'evaluation.train_examples': 24, 'evaluation.test_examples': 12,
      'evaluation.probes': ('knn',), 'evaluation.tasks': ('objects', 'boxes')})
  train.train(config, workdir, print_fn=lambda line: None)
  evaluator, _ = fresh_evaluator(config)
  first = evaluator_lib.evaluate_checkpoint(evaluator, workdir, 'target', 2,
                                            print_fn=lambda line: None)
  cache = os.path.join(workdir, 'features', 'step_2_target')
  assert sorted(os.listdir(cache)) == ['boxes_test.json', 'boxes_test.npz', 'boxes_train.json',
                                       'boxes_train.npz', 'objects_test.json',
                                       'objects_test.npz', 'objects_train.json',
                                       'objects_train.npz']
  # The rerun encodes nothing and scores the same.
  def no_encoding(*args, **kwargs):
    raise AssertionError('encoded again')
  monkeypatch.setattr(evaluator_lib.encoder_lib, 'features', no_encoding)
  assert evaluator_lib.evaluate_checkpoint(evaluator, workdir, 'target', 2,
                                           print_fn=lambda line: None) == first
  # Other settings encode again; features of other params are one line, nothing read.
  evaluator, _ = fresh_evaluator(tiny_config('dino_scenes', **{
      'data.data_dir': tiny_data_dir, 'evaluation.probes': ('knn',),
      'evaluation.tasks': ('objects',), 'evaluation.train_examples': 16,
      'evaluation.test_examples': 12}))
  with pytest.raises(AssertionError, match='encoded again'):
    evaluator_lib.evaluate_checkpoint(evaluator, workdir, 'target', 2, print_fn=print)
  shutil.copytree(cache, os.path.join(workdir, 'features', 'step_2_online'))
  with pytest.raises(ValueError, match='written for other encoder params'):
    evaluator_lib.evaluate_checkpoint(evaluator, workdir, 'online', 2, print_fn=print)


def test_streamed_batches_read_through_grain_are_the_held_images(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  task = tasks.TASKS['objects']
  held = task_data.load(config.data, 'scenes', task, 'objects', 16, 21).images
  streamed = task_data.load(config.data, 'scenes', task, 'objects', 16, 21,
                            images_in_memory=1).images
  for threads, workers in ((1, 0), (3, 0), (1, 2)):      # in threads, in worker processes
    batches = list(streamed.local_batches(8, num_threads=threads, num_workers=workers))
    assert [b.shape for b in batches] == [(8, 16, 16, 3)] * 3
    got = np.concatenate(batches)
    np.testing.assert_array_equal(got[:21], held)
    assert not got[21:].any()                             # the last batch's padding
  # Two processes' parts of each batch, side by side, are the batch.
  parts = [list(streamed.local_batches(8, part, 2, num_threads=2)) for part in (0, 1)]
  assert [b.shape for b in parts[0]] == [(4, 16, 16, 3)] * 3
  side_by_side = np.concatenate([np.concatenate(pair) for pair in zip(*parts)])
  np.testing.assert_array_equal(side_by_side[:21], held)


def test_tokens_only_when_asked_and_bfloat16_tokens_through_the_cache(tmp_path):
  from annoprop_jax.evaluation import feature_cache  # pylint: disable=g-import-not-at-top
  config, _, images, params, mesh = _tiny_encoder()
  pooled, tokens = encoder_lib.features(config, params, images, mesh, batch_size=4)
  lines = []
  alone, none = encoder_lib.features(config, params, images, mesh, batch_size=4, tokens=False,
                                     log=lines.append, log_every_s=0)
  assert none is None
  assert [line.split(',')[0] for line in lines] == ['  encoded 4/10 images',
                                                     '  encoded 8/10 images']
  np.testing.assert_array_equal(alone, pooled)
  same, half = encoder_lib.features(config, params, images, mesh, batch_size=4,
                                    token_dtype='bfloat16')
  assert half.dtype.name == 'bfloat16' and half.nbytes * 2 == tokens.nbytes
  np.testing.assert_array_equal(same, pooled)
  np.testing.assert_allclose(half.astype(np.float32), tokens, rtol=1e-2, atol=1e-2)
  assert not np.array_equal(half.astype(np.float32), tokens)      # rounded
  cache = feature_cache.FeatureCache(tmp_path / 'cache', params)
  for key, (p, t) in (('half', (same, half)), ('none', (alone, none))):
    cache.features(key, {}, lambda p=p, t=t: (p, t))
    def encode():
      raise AssertionError('encoded again')
    read_pooled, read_tokens = cache.features(key, {}, encode)
    np.testing.assert_array_equal(read_pooled, p)
    if t is None:
      assert read_tokens is None
    else:
      assert read_tokens.dtype == t.dtype
      np.testing.assert_array_equal(read_tokens.view(np.uint16), t.view(np.uint16))


def test_an_evaluation_without_token_probes_encodes_no_tokens(tiny_data_dir, monkeypatch):
  asked = []
  features = encoder_lib.features
  monkeypatch.setattr(encoder_lib, 'features',
                      lambda *a, **k: asked.append((k['tokens'], k['token_dtype']))
                      or features(*a, **k))
  overrides = {'data.data_dir': tiny_data_dir, 'evaluation.train_examples': 16,
               'evaluation.test_examples': 8, 'evaluation.epochs': 1,
               'evaluation.tasks': ('objects', 'boxes'), 'evaluation.probes': ('knn', 'linear'),
               'evaluation.token_dtype': 'bfloat16'}
  evaluator, params = fresh_evaluator(tiny_config('dino_scenes', **overrides))
  evaluator(params)
  # objects: pooled only; boxes reads the tokens of each object's box.
  assert asked == [(False, 'bfloat16')] * 2 + [(True, 'bfloat16')] * 2
  evaluator, params = fresh_evaluator(tiny_config('dino_scenes', **{
      **overrides, 'evaluation.tasks': ('objects',), 'evaluation.probes': ('attentive',)}))
  asked.clear()
  assert evaluator(params)['objects_attentive'] >= 0
  assert asked == [(True, 'bfloat16')] * 2


def test_the_paper_suite_reads_catalogue_datasets_by_their_tfds_names(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from annoprop_jax.evaluation import settings  # pylint: disable=g-import-not-at-top
  from conftest import write_catalogue_like  # pylint: disable=g-import-not-at-top
  from test_prepare import image_bytes  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path)
  image = lambda i: image_bytes((17 * i % 256, 3 * i % 256, 0), size=(24, 20))
  label = lambda n: tfds.features.ClassLabel(names=[f'c{c}' for c in range(n)])
  pets = tfds.features.FeaturesDict({'image': tfds.features.Image(shape=(None, None, 3)),
                                     'label': label(3), 'species': label(2)})
  write_catalogue_like(data_dir, 'oxford_iiit_pet', '3.2.0', pets, {
      split: [{'image': image(i), 'label': (i + shift) % 3, 'species': i % 2} for i in range(n)]
      for split, n, shift in (('train', 9, 0), ('test', 6, 1))})
  resisc = tfds.features.FeaturesDict({'image': tfds.features.Image(shape=(None, None, 3)),
                                       'label': label(4)})
  write_catalogue_like(data_dir, 'resisc45', '3.0.0', resisc,
                       [{'image': image(i), 'label': i % 4} for i in range(10)])
  clevr = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3)),
      'objects': tfds.features.Sequence({
          'shape': label(3), 'pixel_coords': tfds.features.Tensor(shape=(3,), dtype=np.float32)})})
  # Scene i holds 3 + i objects; its closest object's depth falls in bin i % 6.
  closest = (8.0, 8.2, 8.7, 9.2, 9.7, 10.5)           # 8.0, on the first edge: bin 0
  scene = lambda i: {'image': image(i), 'objects': [
      {'shape': k % 3, 'pixel_coords': [10.0, 20.0, closest[i % 6] + 0.3 * k]}
      for k in range(3 + i)]}
  write_catalogue_like(data_dir, 'clevr', '3.1.0', clevr, {
      'train': [scene(i) for i in range(8)], 'validation': [scene(i) for i in range(6)]})

  entries = ('oxford_iiit_pet:classes', 'resisc45:classes', 'clevr:count', 'clevr:distance')
  config = tiny_config('dino_scenes', **{
      'data.data_dir': data_dir, 'evaluation.tasks': entries, 'evaluation.probes': ('knn',),
      'evaluation.train_examples': 0, 'evaluation.test_examples': 0,
      'evaluation.preprocess': 'centre_crop'})
  evaluator, params = fresh_evaluator(config)
  data = {entry: evaluator._task_data(entry)  # pylint: disable=protected-access
          for entry in entries}
  pets_train, pets_test = data['oxford_iiit_pet:classes']          # 'label', train -> test
  np.testing.assert_array_equal(pets_train.targets, np.arange(9) % 3)
  np.testing.assert_array_equal(pets_test.targets, (np.arange(6) + 1) % 3)
  resisc_train, resisc_test = data['resisc45:classes']             # its one split, 80 / 20
  np.testing.assert_array_equal(resisc_train.targets, np.arange(8) % 4)
  np.testing.assert_array_equal(resisc_test.targets, np.arange(8, 10) % 4)
  count_train, count_test = data['clevr:count']                   # up to 10 objects
  np.testing.assert_array_equal(count_train.targets, np.minimum(3 + np.arange(8), 10))
  assert count_train.num_classes == 11
  distance_train, distance_test = data['clevr:distance']
  np.testing.assert_array_equal(distance_train.targets, np.arange(8) % 6)
  np.testing.assert_array_equal(distance_test.targets, np.arange(6))
  assert distance_train.num_classes == 6
  assert sorted(evaluator(params)) == ['clevr_count_knn', 'clevr_distance_knn',
                                       'oxford_iiit_pet_classes_knn', 'resisc45_classes_knn']
  # Results are named after the catalogue name; 'paper' is the whole suite; a dataset not
  # prepared is one line naming its tfds command.
  assert tasks.resolve('sun397/standard-part1-120k:classes', 'scenes')[2] == 'sun397_classes'
  assert tasks.resolve(os.path.join(data_dir, 'clevr', '3.1.0') + ':count',
                       'scenes')[2] == 'clevr_count'
  assert len(tasks.expand(('objects', 'paper'))) == 1 + len(tasks.PAPER_SUITE)
  suite = tiny_config('dino_scenes', **{'data.data_dir': data_dir,
                                        'evaluation.tasks': ('paper',)})
  settings.validate(suite.evaluation)
  evaluator, params = fresh_evaluator(suite)
  with pytest.raises(FileNotFoundError, match='tfds build imagenet2012 --file_format=array_record'):
    evaluator(params)
