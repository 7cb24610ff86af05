"""The grain streams: shapes, boxes, determinism, resumable state, sharding, bad records."""
import collections
import io

import numpy as np
import pytest
from PIL import Image

from annoprop_jax.data import boxes
from annoprop_jax.data import pipeline
from conftest import tiny_config


def _stream(config, split='train', process_index=0, process_count=1, batch=8, source=None):
  stream = config.data.annotation
  source = source if source is not None else pipeline.open_source(config.data, 'scenes', split)
  return pipeline.build_stream(source, stream, global_batch_size=batch, seed=3,
                               process_index=process_index, process_count=process_count)


def test_batch_shapes_and_moves(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir,
                                         'data.annotation.local_views.num': 2})
  batch = next(iter(_stream(config)))
  v, s = config.data.annotation.views.num, config.data.annotation.views.size
  assert batch['images'].shape == (8, v, s, s, 3) and batch['images'].dtype == np.uint8
  assert batch['local_images'].shape == (8, 2, 8, 8, 3)
  assert batch['moves'].shape == (8, v, v, 4)
  assert batch['labels'].shape == (8, config.data.annotation.max_objects)
  assert batch['caption'].shape == (8, config.data.annotation.max_caption_bytes)
  for b in range(8):
    np.testing.assert_allclose(batch['moves'][b],
                               boxes.moves(batch['boxes'][b], batch['flips'][b]), atol=1e-6)
    n = int((batch['labels'][b] >= 0).sum())
    assert n >= 1 and n <= config.data.scenes.max_objects
    assert np.all(batch['object_boxes'][b, :n, 2] > batch['object_boxes'][b, :n, 0])
    caption = bytes(batch['caption'][b]).rstrip(b'\0').decode()
    assert caption.startswith('a ') and 'background' in caption


def test_same_seed_same_batches(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  a, b = iter(_stream(config)), iter(_stream(config))
  for _ in range(3):
    x, y = next(a), next(b)
    np.testing.assert_array_equal(x['images'], y['images'])
    np.testing.assert_array_equal(x['boxes'], y['boxes'])


def _records(batch):
  return [_record_key(*parts) for parts in zip(batch['caption'], batch['labels'],
                                               batch['object_boxes'])]


def _split_records(config, source):
  decode = pipeline.Decoder(config.data.annotation.max_objects,
                            config.data.annotation.max_caption_bytes)
  return collections.Counter(_record_key(r['caption'], r['labels'], r['object_boxes'])
                             for r in (decode(source[i]) for i in range(len(source))))


def test_every_epoch_reads_each_record_once_in_a_new_order(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  source = pipeline.open_source(config.data, 'scenes', 'objects_validation')   # 32 records
  it = iter(_stream(config, batch=8, source=source))
  epochs = [sum((_records(next(it)) for _ in range(4)), []) for _ in range(3)]
  everything = _split_records(config, source)
  assert all(collections.Counter(epoch) == everything for epoch in epochs)
  assert len({tuple(epoch) for epoch in epochs}) == 3       # three different orders


def test_iterator_state_resumes_exactly(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  it = iter(_stream(config))
  next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  resumed = iter(_stream(config))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got['images'], want['images'])
    np.testing.assert_array_equal(got['moves'], want['moves'])


def _record_key(caption, labels, object_boxes):
  return bytes(caption) + np.asarray(labels).tobytes() + np.asarray(object_boxes).tobytes()


def test_processes_read_their_rows_of_the_one_process_batches(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  source = pipeline.open_source(config.data, 'scenes', 'objects_validation')   # 32 records
  one = iter(_stream(config, batch=16, source=source))
  parts = [iter(_stream(config, process_index=i, process_count=2, batch=16, source=source))
           for i in range(2)]
  seen = []
  for _ in range(2):                       # one epoch of global batches of 16
    want, got = next(one), [next(p) for p in parts]
    assert [g['images'].shape[0] for g in got] == [8, 8]
    for key in ('images', 'boxes', 'moves', 'labels', 'caption'):   # same records, same views
      np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key], key)
    seen += _records(got[0]) + _records(got[1])
  assert collections.Counter(seen) == _split_records(config, source)   # disjoint, all of it


def test_state_from_another_process_count_is_refused(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  state = iter(_stream(config, process_count=1)).get_state()
  other = iter(_stream(config, process_index=0, process_count=2))
  with pytest.raises(ValueError, match='saved with 1 JAX processes'):
    other.set_state(state)


class _SourceWithCorruptRecords:
  """Wraps a data source; every 4th record's image bytes are garbage."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    record = dict(self.source[index])
    if index % 4 == 0:
      record['image'] = b'not an image'
    return record


def test_undecodable_records_are_skipped_and_counted(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  source = _SourceWithCorruptRecords(pipeline.open_source(config.data, 'scenes', 'objects_validation'))
  it = iter(_stream(config, batch=8, source=source))
  batches = [next(it) for _ in range(6)]                 # 48 good records = 2 epochs of 24
  assert all(b['images'].shape[0] == 8 for b in batches)
  # The reading order of the source's indices, from the same stream over the intact source:
  # each good record must carry the number of bad ones (index % 4 == 0) read before it.
  decode = pipeline.Decoder(config.data.annotation.max_objects,
                            config.data.annotation.max_caption_bytes)
  index_of = {_record_key(r['caption'], r['labels'], r['object_boxes']): i
              for i, r in enumerate(decode(source.source[i]) for i in range(len(source)))}
  assert len(index_of) == len(source) == 32
  intact = iter(_stream(config, batch=8, source=source.source))
  order = [index_of[key] for _ in range(8) for key in _records(next(intact))]   # 2 epochs
  expected, bad_so_far = [], 0
  for index in order:
    if index % 4 == 0:
      bad_so_far += 1
    else:
      expected.append(bad_so_far)
  got = np.concatenate([b['skipped_records'] for b in batches])
  assert got.tolist() == expected
  assert [index_of[k] for b in batches for k in _records(b)] == [i for i in order if i % 4]


def test_decoder_pads_and_truncates():
  buf = io.BytesIO()
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, format='PNG')
  record = {'image': buf.getvalue(), 'caption': b'a red star',
            'objects': {'label': [3, 1, 2], 'bbox': [[0, 0, .5, .5]] * 3}}
  out = pipeline.Decoder(max_objects=2, max_caption_bytes=5)(record)
  np.testing.assert_array_equal(out['labels'], [3, 1])
  assert bytes(out['caption']) == b'a red'
  no_objects = pipeline.Decoder(max_objects=2, max_caption_bytes=4)(
      {'image': buf.getvalue(), 'caption': b'', 'objects': {'label': [], 'bbox': []}})
  np.testing.assert_array_equal(no_objects['labels'], [-1, -1])
  assert pipeline.Decoder(2, 4)({'image': b'garbage', 'caption': b''}) is None


def test_missing_dataset_says_how_to_build_it(tmp_path):
  config = tiny_config('dino_scenes', **{'data.data_dir': str(tmp_path)})
  with pytest.raises(FileNotFoundError, match='not prepared.*tfds build'):
    pipeline.dataset_directory(config.data, 'coco/2017')
