"""Training streams on prepared datasets: feature mapping, captions, resizing, worker processes,
and a decoupled AB run across two prepared datasets."""
import os

import numpy as np
import pytest

from annoprop_jax import configuration
from annoprop_jax.data import pipeline
from annoprop_jax.data import prepare
from annoprop_jax.data import worker_processes
from conftest import override, tiny_config, write_catalogue_like
from test_prepare import image_bytes
from test_prepare import tiny_coco
from test_prepare import write


@pytest.fixture(scope='module')
def coco_dir(tmp_path_factory):
  """The tiny COCO of test_prepare, prepared (train: a.jpg with 2 boxes, b.jpg with 1)."""
  tmp = tmp_path_factory.mktemp('coco')
  tiny_coco(tmp / 'coco')
  return prepare.prepare(prepare.Options(format='coco', input=str(tmp / 'coco'),
                                         output=str(tmp / 'out'), name='coco', num_workers=1),
                         log=lambda s: None)


@pytest.fixture(scope='module')
def folder_dir(tmp_path_factory):
  """An ImageFolder of 3 classes (image-level labels only), prepared."""
  tmp = tmp_path_factory.mktemp('folders')
  for i in range(12):
    write(str(tmp / 'in' / f'c{i % 3}' / f'{i}.jpg'),
          image_bytes((20 * i, 0, 0), size=(40 + i, 30)))
  return prepare.prepare(prepare.Options(format='imagefolder', input=str(tmp / 'in'),
                                         output=str(tmp / 'out'), name='folders',
                                         num_workers=1), log=lambda s: None)


def _stream(stream_config, directory, batch=4, seed=0):
  config = tiny_config('dino_scenes')
  source = pipeline.open_source(config.data, directory, 'train')
  return pipeline.build_stream(source, stream_config, global_batch_size=batch, seed=seed)


def _annotation(**overrides):
  return override(tiny_config('dino_scenes').data.annotation, **overrides)


def _caption(row):
  return bytes(row).rstrip(b'\0').decode()


def test_prepared_coco_streams_boxes_labels_and_captions(coco_dir):
  stream = _annotation(dataset=coco_dir)
  batch = next(iter(_stream(stream, coco_dir, batch=4)))
  v, s, m = stream.views.num, stream.views.size, stream.max_objects
  assert batch['images'].shape == (4, v, s, s, 3) and batch['labels'].shape == (4, m)
  assert batch['object_boxes'].shape == (4, m, 4)
  for labels, boxes, caption in zip(batch['labels'], batch['object_boxes'], batch['caption']):
    if _caption(caption) == 'a dog on red':                 # a.jpg: the first of its captions
      np.testing.assert_array_equal(labels[:3], [1, 2, -1])
      np.testing.assert_allclose(boxes[:2], [[0.1, 0.1, 0.5, 0.35], [0, 0, 1, 1]], atol=1e-6)
    else:                                                   # b.jpg
      assert _caption(caption) == 'blue'
      np.testing.assert_array_equal(labels[:2], [0, -1])
      np.testing.assert_allclose(boxes[0], [0.1, 0.1, 0.6, 0.3], atol=1e-6)


def test_random_caption_choice_and_box_descriptions_as_captions(coco_dir):
  it = iter(_stream(_annotation(dataset=coco_dir, caption_choice='random'), coco_dir, batch=8))
  seen = {_caption(c) for _ in range(4) for c in next(it)['caption']}
  assert seen == {'a dog on red', 'red background, dog', 'blue'}
  descriptions = _annotation(**{'dataset': coco_dir, 'features.caption': 'objects/description'})
  seen = {_caption(c) for c in next(iter(_stream(descriptions, coco_dir, batch=8)))['caption']}
  assert seen == {'a photo of a dog', 'a photo of a person'}


def test_mapping_a_missing_feature_is_one_clear_line(coco_dir):
  stream = _annotation(**{'dataset': coco_dir, 'features.caption': 'captions'})
  with pytest.raises(configuration.ConfigError) as error:
    _stream(stream, coco_dir)
  message = str(error.value)
  assert '\n' not in message and "features.caption='captions'" in message
  assert 'its features: caption, image, labels, objects/bbox, objects/description, ' \
         'objects/label, source_id' in message
  with pytest.raises(AttributeError):       # unknown keys stay errors
    stream.features.captions = 'caption'


def test_image_level_labels_and_class_count(folder_dir):
  config = tiny_config('supervised_objects')
  config.data.annotation.update(dataset=folder_dir)
  config.data.annotation.features.labels = 'labels'
  assert pipeline.num_classes(config.data, folder_dir) == 3
  assert pipeline.num_classes(config.data, folder_dir, labels_feature='') is None
  stream = _annotation(**{'dataset': folder_dir, 'features.labels': 'labels'})
  batch = next(iter(_stream(stream, folder_dir, batch=12)))
  assert sorted(batch['labels'][:, 0]) == [0] * 4 + [1] * 4 + [2] * 4
  assert (batch['labels'][:, 1:] == -1).all()


def test_catalogue_imagenet2012_with_its_scalar_label(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3)),
      'label': tfds.features.ClassLabel(names=['n01', 'n02', 'n03']),
      'file_name': tfds.features.Text()})
  write_catalogue_like(str(tmp_path), 'imagenet2012', '5.1.0', features, [
      {'image': image_bytes((i, 0, 0)), 'label': i % 3, 'file_name': f'{i}.JPEG'}
      for i in range(6)])
  config = tiny_config('supervised_objects', **{'data.data_dir': str(tmp_path)})
  stream = config.data.annotation
  stream.update(dataset='imagenet2012', split='train')
  source = pipeline.open_source(config.data, 'imagenet2012', 'train')
  with pytest.raises(configuration.ConfigError,
                     match="features.boxes='objects/bbox': dataset 'imagenet2012' has no such "
                           "feature; its features: file_name, image, label$"):
    pipeline.build_stream(source, stream, global_batch_size=6, seed=0)
  stream.features.update(labels='label', boxes='', caption='')
  assert pipeline.num_classes(config.data, 'imagenet2012') == 3
  batch = next(iter(pipeline.build_stream(source, stream, global_batch_size=6, seed=0)))
  assert sorted(batch['labels'][:, 0]) == [0, 0, 1, 1, 2, 2]
  assert (batch['labels'][:, 1:] == -1).all() and not batch['caption'].any()


def test_scalar_label_as_in_imagenet2012():
  png = image_bytes((1, 2, 3), size=(8, 8), fmt='PNG')
  decode = pipeline.Decoder(3, 8, features=(('image', 'image'), ('boxes', ''),
                                            ('labels', 'label'), ('caption', '')))
  out = decode({'image': png, 'label': np.int64(7), 'file_name': b'x.JPEG'})
  np.testing.assert_array_equal(out['labels'], [7, -1, -1])
  assert not out['object_boxes'].any() and not out['caption'].any()


def test_resize_sets_the_shorter_side():
  for fmt in ('JPEG', 'PNG'):
    image = pipeline.decode_image(image_bytes((9, 9, 9), size=(200, 100), fmt=fmt), resize=20)
    assert image.shape == (20, 40, 3)
  tall = pipeline.decode_image(image_bytes((9, 9, 9), size=(30, 60)), resize=45)
  assert tall.shape == (90, 45, 3)
  assert pipeline.decode_image(b'garbage', resize=20) is None


def test_state_with_another_worker_count_is_refused(folder_dir):
  state = iter(_stream(_annotation(dataset=folder_dir), folder_dir)).get_state()
  workers = iter(_stream(_annotation(dataset=folder_dir, num_workers=2), folder_dir))
  with pytest.raises(ValueError, match='saved with 0 grain worker processes cannot be restored with 2'):
    workers.set_state(state)
  state = workers.get_state()
  assert state['num_workers'] == 2
  with pytest.raises(ValueError, match='saved with 2 grain worker processes cannot be restored with 0'):
    iter(_stream(_annotation(dataset=folder_dir), folder_dir)).set_state(state)


def test_skip_counts_of_the_workers_are_summed():
  import grain  # pylint: disable=g-import-not-at-top
  # Round-robin batches of two workers whose own counters are 0, 3 | 1, 4 | 2, 4.
  counts = [0, 3, 1, 4, 2, 4]
  parent = grain.MapDataset.source(counts).map(
      lambda c: {'skipped_records': np.full((2,), c, np.int32)}).to_iter_dataset()
  it = iter(worker_processes._WorkerLayout(parent, num_workers=2, process_count=1))
  totals = [int(next(it)['skipped_records'][0]) for _ in counts]
  assert totals == [0, 3, 4, 5, 6, 6]
  state = it.get_state()
  assert state['worker_skipped'] == [2, 4] and state['next_worker'] == 0


@pytest.mark.slow
def test_worker_processes_give_valid_batches_and_resume(folder_dir):
  stream = _annotation(**{'dataset': folder_dir, 'features.labels': 'labels', 'num_workers': 2})
  it = iter(_stream(stream, folder_dir, batch=4))
  first = [next(it) for _ in range(3)]
  assert all(b['images'].shape == (4, 2, 16, 16, 3) for b in first)
  assert all(((b['labels'][:, 0] >= 0) & (b['labels'][:, 0] < 3)).all() for b in first)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  it.close()
  resumed = iter(_stream(stream, folder_dir, batch=4))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got['images'], want['images'])
    np.testing.assert_array_equal(got['labels'], want['labels'])
  resumed.close()


@pytest.mark.slow
def test_decoupled_ab_sup_trains_on_two_prepared_datasets(tmp_path, folder_dir, coco_dir):
  from annoprop_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from annoprop_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config('ab_sup_scenes')
  config.data.annotation.update(dataset=folder_dir, split='train')
  config.data.annotation.features.labels = 'labels'
  config.data.bootstrap.update(dataset=coco_dir, split='train', batch_size=8)
  config.objective.num_classes = 3
  config.update(total_steps=2, log_every=1, checkpoint_every=2)
  state = train.train(config, str(tmp_path / 'run'), print_fn=lambda s: None)
  assert int(state.step) == 2
  records = metrics_lib.read_metrics(str(tmp_path / 'run'))
  assert [r['step'] for r in records] == [1, 2]
  assert all(np.isfinite(r['base_loss']) and np.isfinite(r['ab_loss']) for r in records)
