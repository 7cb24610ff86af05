"""Converts real datasets into array_record tfds datasets, in parallel and resumably, without
TensorFlow:

  python -m annoprop_jax.main prepare --format=coco --input=/data/coco \
      --output=~/tensorflow_datasets --name=coco2017

writes OUTPUT/NAME/1.0.0/ (the tfds layout: train with ``--config.data.data_dir=OUTPUT`` and
``dataset=NAME``, or give the folder itself as ``dataset``), readable with
``tfds.builder_from_directory(dir).as_data_source(split)``. Formats: ``annoprop_jax.data.formats``.

Schema of every prepared dataset:

  image        encoded image: the source JPEG/PNG bytes when they are RGB and fit
               --max_image_size, else a JPEG of quality --jpeg_quality
  source_id    where the example came from (file name, tar key, video frame)
  objects      Sequence of {bbox: (ymin, xmin, ymax, xmax) in [0, 1], label: ClassLabel,
               description: text such as "a photo of a dog"}
  labels       Sequence of image-level ClassLabels (multi-label)
  caption      Sequence of texts: all captions of the image (empty when it has none)
  video_id, timestamp   video frames only: the video and the frame's time in seconds

Work is cut into shards planned up front (a chunk of --shard_size images, one tar shard, one
video). Worker processes write each shard to a temporary name, rename it when complete and
leave a small manifest in ``prepare_progress/``; a re-run (after an interruption, or with a
shard file deleted) writes only the shards that are missing, so no record is ever written
twice. dataset_info.json, features.json and ``prepare_report.json`` (examples per split and every
skipped input with its reason) are written last.
"""
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import time

from array_record.python import array_record_module
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

from annoprop_jax import storage
from annoprop_jax.data import formats
from annoprop_jax.data.formats import PrepareError
from annoprop_jax.data.formats import coco
from annoprop_jax.data.formats import imagefolder
from annoprop_jax.data.formats import video
from annoprop_jax.data.formats import webdataset

FORMATS = {'coco': coco, 'imagefolder': imagefolder, 'video': video, 'webdataset': webdataset}

VERSION = '1.0.0'
PROGRESS_DIR = 'prepare_progress'
REPORT = 'prepare_report.json'


@dataclasses.dataclass(frozen=True)
class Options:
  """What to prepare and how (the ``prepare`` command's flags)."""
  format: str
  input: str
  output: str
  name: str
  num_workers: int = 0          # worker processes; 0: one per CPU core
  shard_size: int = 1000        # images per output shard (coco, imagefolder)
  max_image_size: int = 0       # scale images down so that the longer side is at most this; 0: keep
  jpeg_quality: int = 95        # for images that are (re-)encoded
  fps: float = 1.0              # video: frames per second
  annotations: str = ''         # video: the annotation CSV (see formats/video.py)

  def validate(self):
    if self.format not in FORMATS:
      raise PrepareError(f'unknown --format={self.format!r}; known: {", ".join(FORMATS)}')
    if not os.path.isdir(self.input):
      raise PrepareError(f'--input={self.input!r} is not a folder')
    if not re.fullmatch(r'[a-z][a-z0-9_]*', self.name):
      raise PrepareError(f'--name={self.name!r} must be lower case letters, digits and _ '
                         f'(a tfds dataset name)')
    if self.shard_size < 1 or self.max_image_size < 0 or self.num_workers < 0:
      raise PrepareError('--shard_size must be >= 1, --max_image_size and --num_workers >= 0')
    if not 1 <= self.jpeg_quality <= 100 or self.fps <= 0:
      raise PrepareError('--jpeg_quality must be in 1..100 and --fps > 0')
    if self.annotations and not os.path.isfile(self.annotations):
      raise PrepareError(f'--annotations={self.annotations!r} is not a file')
    if self.annotations and self.format != 'video':
      raise PrepareError('--annotations is for --format=video only')
    return self

  def directory(self):
    """Where the dataset goes: ``OUTPUT/NAME/VERSION``, a local path or a ``gs://`` URL."""
    return os.fspath(storage.path(self.output) / self.name / VERSION)


@functools.lru_cache(maxsize=4)
def features(class_names, video=False):
  """The FeaturesDict of a prepared dataset (see the module doc)."""
  label = lambda: tfds.features.ClassLabel(names=list(class_names))
  spec = {
      'image': tfds.features.Image(shape=(None, None, 3)),
      'source_id': tfds.features.Text(),
      'objects': tfds.features.Sequence({
          'bbox': tfds.features.BBoxFeature(),
          'label': label(),
          'description': tfds.features.Text(),
      }),
      'labels': tfds.features.Sequence(label()),
      'caption': tfds.features.Sequence(tfds.features.Text()),
  }
  if video:
    spec.update(video_id=tfds.features.Text(), timestamp=tfds.features.Scalar(np.float32))
  return tfds.features.FeaturesDict(spec)


@functools.lru_cache(maxsize=4)
def _serializer(class_names, video):
  return example_serializer.ExampleSerializer(features(class_names, video).get_serialized_info())


def shard_filename(name, split, index, num_shards):
  """The file name tfds' array_record reader expects for shard ``index`` of ``num_shards``."""
  return f'{name}-{split}.array_record-{index:05d}-of-{num_shards:05d}'


@dataclasses.dataclass(frozen=True)
class Job:
  """One output shard: what a worker process needs to write it."""
  directory: str
  split: str
  index: int
  num_shards: int
  task: object
  class_names: tuple
  video: bool
  options: Options

  @property
  def path(self):
    return storage.path(self.directory) / shard_filename(self.options.name, self.split,
                                                         self.index, self.num_shards)

  @property
  def manifest_path(self):
    return (storage.path(self.directory) / PROGRESS_DIR
            / f'{self.split}-{self.index:05d}-of-{self.num_shards:05d}.json')

  def done(self):
    return self.path.exists() and self.manifest_path.exists()


def _write_json(path, data):
  """Writes ``data`` to ``path``, never half-written (``storage.write_atomically``)."""
  storage.write_atomically(path, json.dumps(data, indent=1))


def _one_line(text):
  return ' '.join(str(text).split())


def write_shard(job):
  """Writes one shard (a worker's unit of work); returns its manifest."""
  fmt = FORMATS[job.options.format]
  feats = features(job.class_names, job.video)
  serializer = _serializer(job.class_names, job.video)
  examples, skipped = 0, []
  # array_record writes local files only: a local file that becomes the shard when complete.
  with storage.local_file(job.path) as tmp:
    writer = array_record_module.ArrayRecordWriter(tmp, 'group_size:1')
    try:
      for item in fmt.examples(job.task, job.options):
        if isinstance(item, formats.Skipped):
          skipped.append([item.source, _one_line(item.reason)])
          continue
        try:
          record = serializer.serialize_example(feats.encode_example(item))
        except Exception as e:  # pylint: disable=broad-except  # e.g. a box outside [0, 1]
          skipped.append([item['source_id'],
                          _one_line(f'bad annotation: {type(e).__name__}: {e}')])
          continue
        writer.write(record)
        examples += 1
    finally:
      writer.close()
  manifest = {'split': job.split, 'index': job.index, 'examples': examples,
              'num_bytes': job.path.stat().length, 'skipped': skipped}
  _write_json(job.manifest_path, manifest)
  return manifest


def _fingerprint(options, plan):
  """Identifies the planned shards: a re-run resumes only an identical plan."""
  h = hashlib.sha1(json.dumps({
      'format': options.format, 'shard_size': options.shard_size,
      'max_image_size': options.max_image_size, 'jpeg_quality': options.jpeg_quality,
      'fps': options.fps, 'class_names': list(plan.class_names), 'video': plan.video,
      'splits': {s: len(t) for s, t in plan.splits.items()}}, sort_keys=True).encode())
  for split in sorted(plan.splits):
    for task in plan.splits[split]:
      h.update(repr(task).encode())
  return h.hexdigest()


def _check_plan(directory, options, plan):
  path = directory / PROGRESS_DIR / 'plan.json'
  fingerprint = _fingerprint(options, plan)
  if path.exists():
    old = json.loads(path.read_text())
    if old['fingerprint'] != fingerprint:
      raise PrepareError(
          f'{directory} holds a prepare of other inputs or settings ({old["format"]} from '
          f'{old["input"]}); use another --output or --name, or delete that folder')
  else:
    _write_json(path, {'fingerprint': fingerprint, 'format': options.format,
                       'input': os.path.abspath(options.input),
                       'splits': {s: len(t) for s, t in plan.splits.items()}})


def _remove_temporaries(directory):
  for folder in (directory, directory / PROGRESS_DIR):
    for f in folder.iterdir():
      if re.search(r'\.tmp\d+$', f.name):
        f.unlink(missing_ok=True)
      elif f.name.startswith('.info-tmp'):
        f.rmtree(missing_ok=True)


def _run(jobs, num_workers):
  """Manifests of ``jobs`` as they complete, written by ``num_workers`` processes."""
  if num_workers <= 1 or len(jobs) <= 1:
    yield from map(write_shard, jobs)
    return
  # Spawned (not forked) workers: the caller may already run JAX, which is multithreaded.
  with multiprocessing.get_context('spawn').Pool(min(num_workers, len(jobs))) as pool:
    yield from pool.imap_unordered(write_shard, jobs)


def _duration(seconds):
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class Progress:
  """Prints ``done/total shards, examples, examples/s, ETA`` at most every ``interval`` s."""

  def __init__(self, name, total, done, log, interval=5.0):
    self.name, self.total, self.done, self.log, self.interval = name, total, done, log, interval
    self.start = self.last = time.time()
    self.done_now = self.examples = self.skipped = 0

  def update(self, manifest, final=False):
    self.done += 1
    self.done_now += 1
    self.examples += manifest['examples']
    self.skipped += len(manifest['skipped'])
    now = time.time()
    if final or now - self.last >= self.interval:
      self.last = now
      elapsed = max(now - self.start, 1e-9)
      eta = elapsed / self.done_now * (self.total - self.done)
      self.log(f'{self.name}: {self.done}/{self.total} shards, {self.examples:,} examples '
               f'({self.skipped} skipped), {self.examples / elapsed:,.0f} examples/s, '
               f'ETA {_duration(eta)}')


def _print(message):
  print(message, flush=True)


def prepare(options, log=_print, stop_after_shards=None, progress_interval=5.0):
  """Prepares the dataset ``options`` describes; returns its directory.

  Shards already written by an earlier run are kept. ``stop_after_shards`` simulates an
  interruption: the run stops after writing that many shards and returns None.
  """
  options.validate()
  plan = FORMATS[options.format].plan(options)
  directory = storage.path(options.directory())
  (directory / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
  _check_plan(directory, options, plan)
  _remove_temporaries(directory)
  jobs = [Job(os.fspath(directory), split, i, len(tasks), task, plan.class_names, plan.video,
              options)
          for split, tasks in plan.splits.items() for i, task in enumerate(tasks)]
  todo = [job for job in jobs if not job.done()]
  if todo:
    (directory / 'dataset_info.json').unlink(missing_ok=True)   # incomplete until finalised
  if not todo:
    log(f'{options.name}: all {len(jobs)} shards already written')
  elif len(todo) < len(jobs):
    log(f'{options.name}: resuming, {len(jobs) - len(todo)} of {len(jobs)} shards already '
        f'written')
  progress = Progress(options.name, len(jobs), len(jobs) - len(todo), log, progress_interval)
  num_workers = options.num_workers or os.cpu_count() or 1
  for written, manifest in enumerate(_run(todo, num_workers), start=1):
    progress.update(manifest, final=written == len(todo))
    if stop_after_shards is not None and written >= stop_after_shards and written < len(todo):
      return None
  return finalize(directory, options, plan, jobs, log)


def finalize(directory, options, plan, jobs, log=_print):
  """Writes dataset_info.json, features.json and the report from the shards' manifests;
  returns the dataset's directory (a local path or a gs:// URL)."""
  manifests = {}
  for job in jobs:
    manifests[job.split, job.index] = json.loads(job.manifest_path.read_text())
  split_infos, report_splits, skipped = [], {}, []
  for split, tasks in plan.splits.items():
    shards = [manifests[split, i] for i in range(len(tasks))]
    split_skipped = [s for m in shards for s in m['skipped']]
    report_splits[split] = {'examples': sum(m['examples'] for m in shards),
                            'skipped': len(split_skipped), 'shards': len(shards)}
    skipped.extend({'split': split, 'source': src, 'reason': why} for src, why in split_skipped)
    if not report_splits[split]['examples']:
      continue      # tfds cannot read a split without examples: it is left out (and reported)
    split_infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[m['examples'] for m in shards],
        num_bytes=sum(m['num_bytes'] for m in shards),
        filename_template=tfds.core.ShardedFileTemplate(
            data_dir=directory, dataset_name=options.name, split=split,
            filetype_suffix='array_record')))
  if not split_infos:
    raise PrepareError(f'no example of {options.input} could be read; see '
                       f'{directory / PROGRESS_DIR} for the reasons')
  identity = tfds.core.dataset_info.DatasetIdentity(
      name=options.name, version=tfds.core.Version(VERSION), data_dir=directory,
      module_name=__name__)
  info = tfds.core.DatasetInfo(
      builder=identity, description=plan.description,
      features=features(plan.class_names, plan.video),
      metadata=tfds.core.MetadataDict(prepare={
          'format': options.format, 'input': os.path.abspath(options.input),
          'max_image_size': options.max_image_size, 'jpeg_quality': options.jpeg_quality,
          'fps': options.fps, 'annotations': options.annotations}))
  info.set_file_format('array_record')
  info.set_splits(tfds.core.SplitDict(split_infos))
  tmp = tempfile.mkdtemp(prefix='annoprop-info-')
  try:
    info.write_to_directory(tmp)
    # dataset_info.json last: its presence marks a complete dataset.
    storage.put_folder(tmp, directory, last=('dataset_info.json',))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  report = {'dataset': os.fspath(directory), 'name': options.name, 'format': options.format,
            'input': os.path.abspath(options.input), 'splits': report_splits,
            'skipped': skipped}
  _write_json(directory / REPORT, report)
  log(summary(report))
  return os.fspath(directory)


def summary(report, max_listed=10):
  """A few lines: examples per split and the first skipped inputs with their reasons."""
  splits = ', '.join(f'{s} {r["examples"]:,}' for s, r in report['splits'].items())
  lines = [f'Prepared {report["name"]} in {report["dataset"]}: {splits} examples; '
           f'{len(report["skipped"])} inputs skipped'
           + (f' (all listed in {os.path.join(report["dataset"], REPORT)})'
              if report['skipped'] else '')]
  lines += [f'  split {s} has no readable example: left out of the dataset'
            for s, r in report['splits'].items() if not r['examples']]
  for s in report['skipped'][:max_listed]:
    lines.append(f'  skipped {s["split"]}: {s["source"]}: {s["reason"]}')
  if len(report['skipped']) > max_listed:
    lines.append(f'  ... and {len(report["skipped"]) - max_listed} more')
  return '\n'.join(lines)
