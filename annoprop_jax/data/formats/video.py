"""Video files decoded with PyAV (``pip install av``, the ``video`` extra) into frames at --fps,
EpicKitchens-style, with optional per-frame annotations from a CSV (--annotations).

Videos (.mp4, .avi, .mkv, .mov, .webm, ...) are found recursively under INPUT, which is one
``train`` split, or under INPUT/<split>/ when every sub-folder is named like a split. A video's
``video_id`` is its file name without the extension (P01_01.MP4 -> P01_01). Frames are taken
at times 0, 1/fps, 2/fps, ... (the first decoded frame at or after each time), stored as JPEG
with ``video_id``, ``timestamp`` (seconds from the start of the video) and
``source_id = <video_id>/<frame number>``. One output shard per video.

Annotation CSV (header row, one row per annotated interval; EPIC-KITCHENS-100's action CSVs
work as they are):

  video_id            required: the video's file name without extension
  start, stop         required: seconds (``12.5``) or ``HH:MM:SS.fff``; EPIC's
                      start_timestamp / stop_timestamp are accepted as these columns
  label               required: the class name (EPIC's ``noun`` is accepted as it)
  caption             optional text (EPIC's ``narration`` is accepted as it)
  ymin,xmin,ymax,xmax optional: a box of the label in [0, 1] of the frame

A frame at time t gets every row of its video with start <= t <= stop: ``labels`` = their
labels (sorted, unique), ``objects`` = the rows with a box (with the description "a photo of
a <label>"), ``caption`` = their captions (unique, in CSV order). Class names are the sorted
labels of the whole CSV.
"""
import csv
import dataclasses
import importlib.util
import os

from annoprop_jax.data import formats

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv',
                    '.flv')
ALIASES = {'start': ('start', 'start_timestamp'), 'stop': ('stop', 'stop_timestamp'),
           'label': ('label', 'noun'), 'caption': ('caption', 'narration')}
BOX_COLUMNS = ('ymin', 'xmin', 'ymax', 'xmax')


@dataclasses.dataclass(frozen=True)
class Row:
  start: float
  stop: float
  label: int
  caption: str = ''
  box: tuple = ()         # (ymin, xmin, ymax, xmax) or ()


@dataclasses.dataclass(frozen=True)
class Video:
  path: str
  video_id: str
  rows: tuple             # of Row
  class_names: tuple


def parse_time(text):
  """Seconds from ``12.5`` or ``HH:MM:SS.fff`` (or ``MM:SS.fff``)."""
  seconds = 0.0
  for part in text.strip().split(':'):
    seconds = seconds * 60 + float(part)
  return seconds


def _column(header, name):
  for alias in ALIASES.get(name, (name,)):
    if alias in header:
      return alias
  return None


def read_annotations(csv_path):
  """``(class_names, {video_id: [Row, ...]})`` of an annotation CSV (see the module doc)."""
  try:
    with open(csv_path, newline='') as f:
      records = list(csv.DictReader(f))
      header = records[0].keys() if records else []
  except OSError as e:
    raise formats.PrepareError(f'cannot read --annotations={csv_path}: {e}') from None
  if not records:
    raise formats.PrepareError(f'--annotations={csv_path} has no rows')
  columns = {name: _column(header, name) for name in ('start', 'stop', 'label', 'caption')}
  missing = [n for n in ('video_id', 'start', 'stop', 'label')
             if n not in header and columns.get(n) is None]
  if missing:
    raise formats.PrepareError(f'--annotations={csv_path} lacks the column(s) {", ".join(missing)} '
                               f'(it has {", ".join(header)})')
  has_box = all(c in header for c in BOX_COLUMNS)
  class_names = tuple(sorted({r[columns['label']].strip() for r in records}))
  index = {name: i for i, name in enumerate(class_names)}
  rows = {}
  for line, r in enumerate(records, start=2):
    try:
      box = tuple(float(r[c]) for c in BOX_COLUMNS) if has_box and r[BOX_COLUMNS[0]].strip() else ()
      row = Row(start=parse_time(r[columns['start']]), stop=parse_time(r[columns['stop']]),
                label=index[r[columns['label']].strip()],
                caption=(r[columns['caption']] or '').strip() if columns['caption'] else '',
                box=box)
    except (ValueError, TypeError, AttributeError) as e:
      raise formats.PrepareError(f'--annotations={csv_path} line {line}: {e}') from None
    rows.setdefault(r['video_id'].strip(), []).append(row)
  return class_names, rows


def plan(options):
  if importlib.util.find_spec('av') is None:
    raise formats.PrepareError("--format=video needs PyAV: pip install -e '.[video]' "
                               "(or pip install av)")
  class_names, rows = (), {}
  if options.annotations:
    class_names, rows = read_annotations(options.annotations)
  tasks = {}
  for split, folder in formats.split_folders(options.input).items():
    videos = {}
    for path in formats.files_under(folder, VIDEO_EXTENSIONS):
      video_id = os.path.splitext(os.path.basename(path))[0]
      if video_id in videos:
        raise formats.PrepareError(f'two videos are called {video_id!r}: {videos[video_id]} '
                                   f'and {path}')
      videos[video_id] = path
    if videos:
      tasks[split] = [Video(path, vid, tuple(rows.get(vid, ())), class_names)
                      for vid, path in videos.items()]
  if not tasks:
    raise formats.PrepareError(f'{options.input}: no video files ({", ".join(VIDEO_EXTENSIONS)})')
  return formats.Plan(class_names=class_names, splits=tasks, video=True,
                      description=f'Frames at {options.fps} fps of the videos in {options.input}.')


def frame_annotations(rows, timestamp, class_names):
  """labels, boxes, box labels, descriptions and captions of the rows that cover ``timestamp``."""
  active = [r for r in rows if r.start <= timestamp <= r.stop]
  boxed = [r for r in active if r.box]
  captions = []
  for r in active:
    if r.caption and r.caption not in captions:
      captions.append(r.caption)
  return dict(labels=sorted({r.label for r in active}), boxes=[r.box for r in boxed],
              box_labels=[r.label for r in boxed],
              descriptions=[formats.describe(class_names[r.label]) for r in boxed],
              captions=captions)


def sampled_frames(frames, fps):
  """(timestamp, frame) of the first frame at or after each of the times 0, 1/fps, 2/fps, ...;
  ``frames`` yields (timestamp, frame) in order."""
  next_time = 0.0
  for timestamp, frame in frames:
    if timestamp + 1e-6 < next_time:
      continue
    yield timestamp, frame
    while next_time <= timestamp + 1e-6:
      next_time += 1.0 / fps


def _decoded(container):
  stream = container.streams.video[0]
  stream.thread_type = 'AUTO'
  start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
  for frame in container.decode(stream):
    if frame.time is not None:
      yield frame.time - start, frame


def examples(task, options):
  import av  # pylint: disable=g-import-not-at-top  # optional dependency: the `video` extra
  written = 0
  try:
    with av.open(task.path) as container:
      if not container.streams.video:
        yield formats.Skipped(task.video_id, 'no video stream')
        return
      for timestamp, frame in sampled_frames(_decoded(container), options.fps):
        image = formats.encode_pil(frame.to_image(), options.max_image_size, options.jpeg_quality)
        ann = frame_annotations(task.rows, timestamp, task.class_names)
        example = formats.make_example(image, f'{task.video_id}/{written:06d}', **ann)
        example.update(video_id=task.video_id, timestamp=timestamp)
        yield example
        written += 1
  except Exception as e:  # pylint: disable=broad-except  # a damaged video keeps its good frames
    where = f'after {written} frames' if written else 'before any frame'
    yield formats.Skipped(task.video_id, f'undecodable {where}: {formats.reason(e)}')
