"""`prepare`: each format's tiny input, written here, read back equal; corrupt files skipped and
reported; interrupted runs resume without duplicates."""
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from annoprop_jax.data import pipeline
from annoprop_jax.data import prepare
from annoprop_jax.data.formats import coco as coco_format
from annoprop_jax.data.formats import video as video_format
from annoprop_jax.evaluation import tasks
from annoprop_jax.evaluation import task_data
from conftest import REPO, fresh_evaluator, tiny_config


def image_bytes(colour, size=(24, 16), fmt='JPEG'):
  """An image of one colour, ``size`` = (width, height), encoded as ``fmt``."""
  buf = io.BytesIO()
  Image.new('RGB', size, colour).save(buf, format=fmt)
  return buf.getvalue()


def write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb' if isinstance(data, bytes) else 'w') as f:
    f.write(data)


def options(tmp_path, fmt, input_dir, **kwargs):
  kwargs.setdefault('num_workers', 1)
  kwargs.setdefault('name', 'ds')
  return prepare.Options(format=fmt, input=str(input_dir), output=str(tmp_path / 'out'),
                         **kwargs)


def read(directory, split):
  builder = tfds.builder_from_directory(directory)
  source = builder.as_data_source(split=split, decoders={'image': tfds.decode.SkipDecoding()})
  return {r['source_id'].decode(): r for r in (source[i] for i in range(len(source)))}


def first_batch(directory, batch_size):
  """A batch of the training pipeline's annotation stream over a prepared dataset."""
  config = tiny_config('clip_scenes', **{'data.annotation.dataset': str(directory)})
  source = pipeline.open_source(config.data, str(directory), 'train')
  stream = pipeline.build_stream(source, config.data.annotation, global_batch_size=batch_size,
                                 seed=0)
  return next(iter(stream))


def captions_of(batch):
  return sorted(bytes(c).rstrip(b'\0') for c in batch['caption'])


def report(directory):
  with open(os.path.join(directory, prepare.REPORT)) as f:
    return json.load(f)


# --- coco ---------------------------------------------------------------------------------

COCO_CATEGORIES = [{'id': 1, 'name': 'person'}, {'id': 18, 'name': 'dog'},
                   {'id': 90, 'name': 'toothbrush'}]


def write_coco(root, split, images, boxes, captions):
  """images: [(id, file name, bytes, width, height)]; boxes: [(image id, category id, xywh)];
  captions: [(image id, text)]."""
  write(str(root / 'annotations' / f'instances_{split}.json'), json.dumps({
      'images': [{'id': i, 'file_name': f, 'width': w, 'height': h} for i, f, _, w, h in images],
      'annotations': [{'id': k, 'image_id': i, 'category_id': c, 'bbox': b, 'iscrowd': 0}
                      for k, (i, c, b) in enumerate(boxes)],
      'categories': COCO_CATEGORIES}))
  write(str(root / 'annotations' / f'captions_{split}.json'), json.dumps({
      'images': [{'id': i, 'file_name': f, 'width': w, 'height': h} for i, f, _, w, h in images],
      'annotations': [{'id': k, 'image_id': i, 'caption': t} for k, (i, t) in enumerate(captions)]}))
  for _, name, data, _, _ in images:
    write(str(root / split / name), data)


def tiny_coco(root):
  dog_jpeg = image_bytes((200, 10, 10), size=(200, 100))
  write_coco(root, 'train2017', [
      (7, 'a.jpg', dog_jpeg, 200, 100),
      (9, 'b.jpg', image_bytes((0, 0, 255), size=(50, 40)), 50, 40),
      (11, 'broken.jpg', image_bytes((0, 255, 0), size=(64, 64))[:300], 64, 64),   # truncated
  ], boxes=[(7, 18, [20, 10, 50, 40]), (7, 90, [0, 0, 200, 100]), (9, 1, [5, 4, 10, 20])],
     captions=[(7, 'a dog on red'), (7, 'red background, dog'), (9, 'blue')])
  write_coco(root, 'val2017', [(3, 'c.jpg', image_bytes((9, 9, 9)), 24, 16)], boxes=[],
             captions=[])
  return dog_jpeg


def test_coco_boxes_labels_captions_and_a_corrupt_image(tmp_path):
  dog_jpeg = tiny_coco(tmp_path / 'coco')
  directory = prepare.prepare(options(tmp_path, 'coco', tmp_path / 'coco', shard_size=2),
                              log=lambda s: None)
  assert directory == str(tmp_path / 'out' / 'ds' / '1.0.0')
  train = read(directory, 'train')
  assert sorted(train) == ['a.jpg', 'b.jpg']
  a, b = train['a.jpg'], train['b.jpg']
  assert a['image'] == dog_jpeg                       # the source JPEG bytes, not re-encoded
  # COCO (x, y, w, h) pixels -> (ymin, xmin, ymax, xmax) / (height, width) = (100, 200).
  np.testing.assert_allclose(np.stack(a['objects']['bbox']),
                             [[0.1, 0.1, 0.5, 0.35], [0, 0, 1, 1]], atol=1e-6)
  assert list(a['objects']['label']) == [1, 2]       # ids 18, 90 -> contiguous 1, 2
  assert a['objects']['description'] == [b'a photo of a dog', b'a photo of a toothbrush']
  assert list(a['labels']) == [1, 2]
  assert a['caption'] == [b'a dog on red', b'red background, dog']
  np.testing.assert_allclose(np.stack(b['objects']['bbox']), [[0.1, 0.1, 0.6, 0.3]], atol=1e-6)
  assert list(b['objects']['label']) == [0] and b['caption'] == [b'blue']
  validation = read(directory, 'validation')
  assert list(validation) == ['c.jpg'] and validation['c.jpg']['objects']['label'] == []
  info = tfds.builder_from_directory(directory).info
  assert info.features['objects']['label'].names == ['person', 'dog', 'toothbrush']
  rep = report(directory)
  assert rep['splits'] == {'train': {'examples': 2, 'skipped': 1, 'shards': 2},
                           'validation': {'examples': 1, 'skipped': 0, 'shards': 1}}
  assert [(s['split'], s['source']) for s in rep['skipped']] == [('train', 'broken.jpg')]
  assert 'truncated' in rep['skipped'][0]['reason'].lower()


def test_coco_box_conversion():
  assert coco_format.box_to_yxyx([30, 20, 60, 40], height=80, width=120) == (0.25, 0.25, 0.75,
                                                                              0.75)
  assert coco_format.box_to_yxyx([-2, 70, 130, 20], height=80, width=120) == (0.875, 0.0, 1.0,
                                                                               1.0)


# --- imagefolder --------------------------------------------------------------------------

def test_imagefolder_labels_splits_and_resizing(tmp_path):
  root = tmp_path / 'folders'
  pixels = np.arange(32 * 64 * 3, dtype=np.uint8).reshape(32, 64, 3)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format='PNG')
  write(str(root / 'train' / 'cat' / '1.png'), buf.getvalue())
  write(str(root / 'train' / 'dog' / '2.jpg'), image_bytes((1, 2, 3), size=(100, 50)))
  write(str(root / 'train' / 'dog' / 'bad.jpg'), b'not a jpeg')
  write(str(root / 'val' / 'dog' / '3.jpg'), image_bytes((4, 5, 6)))
  write(str(root / 'val' / 'emu' / '4.jpg'), image_bytes((7, 8, 9)))
  directory = prepare.prepare(options(tmp_path, 'imagefolder', root), log=lambda s: None)
  info = tfds.builder_from_directory(directory).info
  assert info.features['labels'].feature.names == ['cat', 'dog', 'emu']
  train, validation = read(directory, 'train'), read(directory, 'validation')
  assert {k: list(r['labels']) for k, r in train.items()} == {'cat/1.png': [0], 'dog/2.jpg': [1]}
  assert {k: list(r['labels']) for k, r in validation.items()} == {'dog/3.jpg': [1],
                                                                   'emu/4.jpg': [2]}
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(train['cat/1.png']['image']))),
                                pixels)            # PNG kept losslessly
  assert report(directory)['skipped'][0]['source'] == 'dog/bad.jpg'

  small = prepare.prepare(options(tmp_path, 'imagefolder', root, max_image_size=32,
                                  name='small'), log=lambda s: None)
  images = {k: Image.open(io.BytesIO(r['image'])) for k, r in read(small, 'train').items()}
  assert images['cat/1.png'].size == (32, 16) and images['cat/1.png'].format == 'JPEG'
  assert images['dog/2.jpg'].size == (32, 16)


def test_single_split_imagefolder(tmp_path):
  write(str(tmp_path / 'in' / 'b' / 'x.jpg'), image_bytes((0, 0, 0)))
  write(str(tmp_path / 'in' / 'a' / 'y.jpg'), image_bytes((0, 0, 0)))
  directory = prepare.prepare(options(tmp_path, 'imagefolder', tmp_path / 'in'),
                              log=lambda s: None)
  assert list(tfds.builder_from_directory(directory).info.splits) == ['train']
  assert {k: list(r['labels']) for k, r in read(directory, 'train').items()} == {
      'a/y.jpg': [0], 'b/x.jpg': [1]}


# --- webdataset ---------------------------------------------------------------------------

def write_tar(path, members):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tarfile.open(path, 'w') as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def test_webdataset_captions_from_txt_and_json(tmp_path):
  root = tmp_path / 'wds'
  red = image_bytes((255, 0, 0))
  write_tar(str(root / '00000.tar'), [
      ('000.jpg', red), ('000.txt', b'a red square'),
      ('000.json', json.dumps({'caption': 'a red square', 'url': 'x'}).encode()),
      ('001.jpg', image_bytes((0, 255, 0))), ('001.json', b'{"caption": "green"}'),
      ('002.txt', b'no image here'),
      ('003.jpg', red[:100]), ('003.txt', b'truncated'),
  ])
  write_tar(str(root / '00001.tar'), [('004.png', image_bytes((0, 0, 9), fmt='PNG')),
                                      ('004.txt', b' blue\n'), ('004.json', b'{"caption": "navy"}')])
  directory = prepare.prepare(options(tmp_path, 'webdataset', root), log=lambda s: None)
  train = read(directory, 'train')
  assert {k: r['caption'] for k, r in train.items()} == {
      '00000.tar/000': [b'a red square'], '00000.tar/001': [b'green'],
      '00001.tar/004': [b'blue', b'navy']}
  assert train['00000.tar/000']['image'] == red
  skipped = {s['source']: s['reason'] for s in report(directory)['skipped']}
  assert set(skipped) == {'00000.tar/002', '00000.tar/003'} and 'no image' in skipped['00000.tar/002']
  # The training pipeline reads it: a batch of the 3 images with their first captions.
  batch = first_batch(directory, 3)
  assert batch['images'].shape == (3, 1, 16, 16, 3)   # CLIP: one view
  assert captions_of(batch) == [b'a red square', b'blue', b'green']


def test_truncated_tar_keeps_what_it_read(tmp_path):
  root = tmp_path / 'wds'
  members = [(f'{i:03d}.{ext}', image_bytes((i, 0, 0)) if ext == 'jpg' else b'c%d' % i)
             for i in range(6) for ext in ('jpg', 'txt')]
  write_tar(str(root / 'a.tar'), members)
  with open(root / 'a.tar', 'rb') as f:
    data = f.read()
  write(str(root / 'a.tar'), data[:len(data) * 2 // 3 // 512 * 512 + 100])   # mid-block
  directory = prepare.prepare(options(tmp_path, 'webdataset', root), log=lambda s: None)
  train = read(directory, 'train')
  assert 2 <= len(train) < 6
  assert all(r['caption'] == [b'c%d' % int(k[-3:])] for k, r in train.items())
  assert [s['source'] for s in report(directory)['skipped']] == ['a.tar']


# --- video --------------------------------------------------------------------------------

def write_video(path, seconds=2, rate=10, size=(64, 48)):
  """Frame k (at k / rate s) is grey level 10 k."""
  av = pytest.importorskip('av')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=rate)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], 'yuv420p'
    for k in range(seconds * rate):
      frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 10 * k, np.uint8),
                                         format='rgb24')
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def test_video_frames_at_fps_with_csv_annotations(tmp_path):
  root = tmp_path / 'videos'
  write_video(str(root / 'P01' / 'P01_01.mp4'))
  write(str(root / 'P01' / 'P01_02.mp4'), b'\x00\x00\x00 ftypisom' + bytes(300))   # corrupt
  csv_path = str(tmp_path / 'ann.csv')
  write(csv_path, 'video_id,start_timestamp,stop_timestamp,noun,narration,ymin,xmin,ymax,xmax\n'
                  'P01_01,00:00:00.00,00:00:00.70,cup,pick up cup,0.1,0.2,0.5,0.6\n'
                  'P01_01,0.9,2,knife,cut bread,,,,\n'
                  'P09_01,0,1,spoon,elsewhere,,,,\n')
  directory = prepare.prepare(options(tmp_path, 'video', root, fps=2, annotations=csv_path),
                              log=lambda s: None)
  info = tfds.builder_from_directory(directory).info
  assert info.features['labels'].feature.names == ['cup', 'knife', 'spoon']
  frames = read(directory, 'train')
  assert sorted(frames) == [f'P01_01/{i:06d}' for i in range(4)]
  got = [frames[f'P01_01/{i:06d}'] for i in range(4)]
  np.testing.assert_allclose([f['timestamp'] for f in got], [0, 0.5, 1.0, 1.5], atol=1e-3)
  assert all(f['video_id'] == b'P01_01' for f in got)
  for f, timestamp in zip(got, [0, 0.5, 1.0, 1.5]):
    grey = np.asarray(Image.open(io.BytesIO(f['image']))).mean()
    assert abs(grey - 100 * timestamp) < 6, (timestamp, grey)
  assert [list(f['labels']) for f in got] == [[0], [0], [1], [1]]
  np.testing.assert_allclose(np.stack(got[0]['objects']['bbox']), [[0.1, 0.2, 0.5, 0.6]])
  assert got[1]['objects']['description'] == [b'a photo of a cup']
  assert got[2]['objects']['label'] == [] and got[2]['caption'] == [b'cut bread']
  assert got[0]['caption'] == [b'pick up cup']
  skipped = report(directory)['skipped']
  assert [s['source'] for s in skipped] == ['P01_02'] and 'before any frame' in skipped[0]['reason']
  # The training pipeline reads the frames with their box labels (padding -1).
  batch = first_batch(directory, 4)
  assert batch['images'].shape == (4, 1, 16, 16, 3)
  assert captions_of(batch) == [b'cut bread', b'cut bread', b'pick up cup', b'pick up cup']
  assert sorted(batch['labels'][:, 0].tolist()) == [-1, -1, 0, 0]


def test_annotation_times_and_frame_sampling():
  assert video_format.parse_time('00:01:02.50') == 62.5
  assert video_format.parse_time('3.25') == 3.25
  times = [k / 30 for k in range(61)]                # 30 fps source, 2 s
  picked = [t for t, _ in video_format.sampled_frames(((t, None) for t in times), fps=4)]
  np.testing.assert_allclose(picked, [0, 0.2667, 0.5, 0.7667, 1.0, 1.2667, 1.5, 1.7667, 2.0],
                             atol=1e-3)


# --- resuming -----------------------------------------------------------------------------

def image_folder(root, n):
  for i in range(n):
    write(str(root / f'class{i % 2}' / f'{i}.jpg'), image_bytes((i, i, i)))


def test_interrupted_prepare_resumes_without_duplicates(tmp_path):
  root = tmp_path / 'folders'
  image_folder(root, 7)
  opts = options(tmp_path, 'imagefolder', root, shard_size=2)        # 4 shards
  assert prepare.prepare(opts, log=lambda s: None, stop_after_shards=1) is None
  directory = opts.directory()
  assert not os.path.exists(os.path.join(directory, 'dataset_info.json'))
  assert len([f for f in os.listdir(directory) if '.array_record-' in f]) == 1
  messages = []
  assert prepare.prepare(opts, log=messages.append) == directory
  assert any('1 of 4 shards already written' in m for m in messages)
  assert sorted(read(directory, 'train')) == sorted(f'class{i % 2}/{i}.jpg' for i in range(7))

  # A lost shard (and the info file) are rewritten; everything else is reused.
  os.remove(os.path.join(directory, 'dataset_info.json'))
  os.remove(os.path.join(directory, prepare.shard_filename('ds', 'train', 2, 4)))
  messages = []
  prepare.prepare(opts, log=messages.append)
  assert any('3 of 4 shards already written' in m for m in messages)
  builder = tfds.builder_from_directory(directory)
  source = builder.as_data_source(split='train')
  ids = [source[i]['source_id'] for i in range(len(source))]
  assert len(ids) == len(set(ids)) == 7
  assert builder.info.splits['train'].shard_lengths == [2, 2, 2, 1]

  with pytest.raises(prepare.PrepareError, match='other inputs or settings'):
    prepare.prepare(options(tmp_path, 'imagefolder', root, shard_size=3), log=lambda s: None)


def test_parallel_workers_write_what_one_process_writes(tmp_path):
  root = tmp_path / 'folders'
  image_folder(root, 6)
  one = prepare.prepare(options(tmp_path, 'imagefolder', root, shard_size=2),
                        log=lambda s: None)
  messages = []
  two = prepare.prepare(options(tmp_path, 'imagefolder', root, shard_size=2, num_workers=2,
                                name='two'), log=messages.append, progress_interval=0)
  assert any('3/3 shards' in m and 'examples/s' in m and 'ETA' in m for m in messages)
  records = lambda d: [(k, r['image'], list(r['labels'])) for k, r in read(d, 'train').items()]
  assert records(one) == records(two) and len(records(one)) == 6       # same order too
  shards = lambda d: tfds.builder_from_directory(d).info.splits['train'].shard_lengths
  assert shards(one) == shards(two) == [2, 2, 2]


def test_bad_inputs_are_clear_errors(tmp_path):
  with pytest.raises(prepare.PrepareError, match='is not a folder'):
    options(tmp_path, 'coco', tmp_path / 'missing').validate()
  with pytest.raises(prepare.PrepareError, match='unknown --format'):
    options(tmp_path, 'tfrecord', tmp_path).validate()
  with pytest.raises(prepare.PrepareError, match='no annotations/ folder'):
    prepare.prepare(options(tmp_path, 'coco', tmp_path), log=lambda s: None)
  write(str(tmp_path / 'ann.csv'), 'video_id,begin,end\nx,0,1\n')
  write_video(str(tmp_path / 'v' / 'x.mp4'), seconds=1)
  with pytest.raises(prepare.PrepareError, match='lacks the column.*start, stop, label'):
    prepare.prepare(options(tmp_path, 'video', tmp_path / 'v',
                            annotations=str(tmp_path / 'ann.csv')), log=lambda s: None)


@pytest.mark.slow
def test_command_line_prepare_and_one_line_errors(tmp_path):
  image_folder(tmp_path / 'in', 3)

  def run(*args):
    return subprocess.run([sys.executable, '-m', 'annoprop_jax.main', 'prepare', *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)

  out = f'--output={tmp_path / "out"}'
  ok = run('--format=imagefolder', f'--input={tmp_path / "in"}', out, '--name=folders',
           '--num_workers=1')
  assert ok.returncode == 0, ok.stderr
  assert '1/1 shards, 3 examples' in ok.stdout and 'Prepared folders' in ok.stdout
  assert len(read(str(tmp_path / 'out' / 'folders' / '1.0.0'), 'train')) == 3
  for args, message in [
      (('--format=imagefolder', f'--input={tmp_path / "nope"}', out, '--name=x'),
       f"error: --input='{tmp_path / 'nope'}' is not a folder"),
      (('--format=parquet', f'--input={tmp_path}', out, '--name=x'),
       "error: unknown --format='parquet'; known: coco, imagefolder, video, webdataset"),
      (('--format=coco', f'--input={tmp_path / "in"}', out, '--name=x'),
       f'error: {tmp_path / "in"} has no annotations/ folder (expected the official layout: '
       f'annotations/instances_train2017.json, train2017/, ...)')]:
    bad = run(*args)
    assert bad.returncode == 2 and bad.stderr.strip() == message, bad.stderr
  missing = run('--format=coco')
  assert missing.returncode == 2 and missing.stderr.startswith('error: prepare needs --input')


def test_imagefolder_splits_are_probe_tasks(tmp_path):
  """The `classes` task reads a prepared ImageFolder's image-level labels, train -> validation;
  colour decides the class, so a linear probe on even an untrained encoder separates them."""
  colours = {'red': (230, 20, 20), 'green': (20, 200, 40), 'blue': (30, 40, 230)}
  rng = np.random.default_rng(0)
  for split, n in (('train', 12), ('val', 6)):
    for name, colour in colours.items():
      for i in range(n):
        jitter = tuple(int(c) for c in np.clip(np.add(colour, rng.integers(-20, 20, 3)), 0, 255))
        write(str(tmp_path / 'in' / split / name / f'{i}.png'), image_bytes(jitter, fmt='PNG'))
  directory = prepare.prepare(options(tmp_path, 'imagefolder', tmp_path / 'in'),
                              log=lambda s: None)
  config = tiny_config('supervised_objects', **{
      'evaluation.dataset': str(directory), 'evaluation.tasks': ('classes',),
      'evaluation.probes': ('linear', 'knn'), 'evaluation.epochs': 100})
  test = task_data.load(config.data, str(directory), tasks.TASKS['classes'], 'validation', 16, 0)
  assert test.num_classes == 3 and sorted(test.targets.tolist()) == [0] * 6 + [1] * 6 + [2] * 6
  # A limited count is class-balanced (the records are class-sorted: the first 7 would be red).
  seven = task_data.load(config.data, str(directory), tasks.TASKS['classes'], 'validation', 16, 7)
  assert sorted(np.bincount(seven.targets, minlength=3).tolist()) == [2, 2, 3]
  evaluator, encoder_params = fresh_evaluator(config)
  assert evaluator(encoder_params) == {'classes_linear': 1.0, 'classes_knn': 1.0}


def test_one_evaluation_reads_the_scenes_and_an_imagefolder(tmp_path, tiny_data_dir):
  """'DATASET:TASK' entries: the scenes' objects task and a prepared ImageFolder's classes in
  one evaluation, the latter's results named after the dataset's folder."""
  colours = {'red': (230, 20, 20), 'blue': (30, 40, 230)}
  for split, n in (('train', 8), ('val', 4)):
    for name, colour in colours.items():
      for i in range(n):
        write(str(tmp_path / 'in' / split / name / f'{i}.png'), image_bytes(colour, fmt='PNG'))
  directory = str(prepare.prepare(options(tmp_path, 'imagefolder', tmp_path / 'in'),
                                  log=lambda s: None))
  label = os.path.basename(os.path.dirname(directory))     # OUTPUT/NAME/VERSION: NAME
  assert label and not label[0].isdigit()
  common = {'data.data_dir': tiny_data_dir, 'evaluation.probes': ('knn',),
            'evaluation.train_examples': 16, 'evaluation.test_examples': 8}
  both, encoder_params = fresh_evaluator(tiny_config('supervised_objects', **common, **{
      'evaluation.tasks': ('objects', f'{directory}:classes')}))
  results = both(encoder_params)
  assert sorted(results) == sorted(['objects_knn', f'{label}_classes_knn'])
  alone, _ = fresh_evaluator(tiny_config('supervised_objects', **common, **{
      'evaluation.dataset': directory, 'evaluation.tasks': ('classes',)}))
  assert results[f'{label}_classes_knn'] == alone(encoder_params)['classes_knn'] == 1.0
  scenes, _ = fresh_evaluator(tiny_config('supervised_objects', **common, **{
      'evaluation.tasks': ('objects',)}))
  assert results['objects_knn'] == scenes(encoder_params)['objects_knn']
  # The results' prefix is the dataset's name, whatever names it.
  for entry in ('food101:classes', 'food101:2.0.0:classes', 'gs://b/tfds/food101/2.0.0:classes',
                '~/tensorflow_datasets/food101/2.0.0:classes'):
    assert tasks.parse_entry(entry, 'scenes')[2] == 'food101_classes', entry
  assert tasks.parse_entry('objects', 'scenes') == ('scenes', 'objects', 'objects')


def test_a_task_the_second_dataset_cannot_serve_is_one_line_before_any_encoding(
    tmp_path, tiny_data_dir, monkeypatch):
  from annoprop_jax.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  for split in ('train', 'val'):
    for name, colour in (('red', (230, 20, 20)), ('blue', (30, 40, 230))):
      write(str(tmp_path / 'in' / split / name / '0.png'), image_bytes(colour, fmt='PNG'))
  directory = str(prepare.prepare(options(tmp_path, 'imagefolder', tmp_path / 'in'),
                                  log=lambda s: None))
  evaluator, encoder_params = fresh_evaluator(tiny_config('supervised_objects', **{
      'data.data_dir': tiny_data_dir, 'evaluation.probes': ('knn',),
      'evaluation.tasks': ('objects', f'{directory}:objects')}))   # no split 'objects' there
  def no_encoding(*args, **kwargs):
    raise AssertionError('encoded')
  monkeypatch.setattr(evaluator_lib.encoder_lib, 'features', no_encoding)
  with pytest.raises(ValueError, match="has no split 'objects'"):
    evaluator(encoder_params)
