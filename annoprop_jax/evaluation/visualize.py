"""``visualize``: pictures of what a run learned, as PNGs and an ``index.html`` that shows them.

For each image (the run's validation images, or files given):

  value map    (AB runs) Q_AB(l | x_source, a) over a grid of target boxes (centre x size) as a
               heatmap over the image, beside the target network's p(l | x_box) of the same
               boxes, for one annotation l (default: the target network's top annotation of the
               source view; the source box: around the image's first object)
  attention    the last block's attention of the pooled query (CLS) over the patches, per head
  views        the image with an annotation and a bootstrap sample of views drawn as boxes, and
               the moves between the bootstrap views written out

and for the run: value accuracy by source-target IoU bin over training and the teacher / target
entropies against log K, from metrics.jsonl.
"""
import functools
import html
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from annoprop_jax import checkpoint
from annoprop_jax import metrics as metrics_lib
from annoprop_jax import objectives
from annoprop_jax import storage
from annoprop_jax.data import boxes as boxes_lib
from annoprop_jax.data import feature_map
from annoprop_jax.data import pipeline
from annoprop_jax.data import stream_spec
from annoprop_jax.data import views as views_lib
from annoprop_jax.evaluation import attention_maps
from annoprop_jax.evaluation import value_maps
from annoprop_jax.objectives import bootstrap

_COLOURS = ('#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45')


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def png_bytes(figure):
  """The figure as PNG bytes (and closed)."""
  plt = _pyplot()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=100, bbox_inches='tight')
  plt.close(figure)
  return buffer.getvalue()


def _show(ax, image, title=None):
  ax.imshow(image, extent=(0, 1, 1, 0), interpolation='bilinear')
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=9)


def _box(ax, box, colour, label=None, style='-', width=2.0):
  y0, x0, y1, x1 = box
  ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], style, color=colour, lw=width)
  if label:
    ax.text(x0 + 0.01, y0 + 0.01, label, color='white', fontsize=8, va='top',
            bbox=dict(facecolor=colour, alpha=0.8, pad=1, lw=0))


def draw_value_map(image, vmap, annotation_name, thumbnail=None):
  """A figure: the image with the source box; Q_AB's map per box size; p_target's below."""
  plt = _pyplot()
  sizes = vmap.boxes.shape[0]
  rows = 2 if vmap.p is not None else 1
  figure, axes = plt.subplots(rows, sizes + 1, figsize=(2.4 * (sizes + 1), 2.5 * rows),
                              squeeze=False)
  _show(axes[0, 0], image, f'source box, l = {annotation_name}')
  _box(axes[0, 0], vmap.source_box, 'white')
  if thumbnail is not None and rows > 1:
    _show(axes[1, 0], thumbnail, 'the annotation l')
  elif rows > 1:
    axes[1, 0].axis('off')
    legend = 'each cell: the box of\nthat size centred there;\ndashed: the source box'
    axes[1, 0].text(0, 0.5, legend, fontsize=9, va='center', transform=axes[1, 0].transAxes)
  rows_of = [(vmap.q, 'Q_AB(l | source, box)'), (vmap.p, 'p_target(l | box)')][:rows]
  for row, (values, name) in enumerate(rows_of):
    low, high = float(values.min()), float(values.max())   # each row on its own scale
    for s in range(sizes):
      side = vmap.boxes[s, 0, 0, 2] - vmap.boxes[s, 0, 0, 0]
      centres = (vmap.boxes[s, :, 0, 0] + vmap.boxes[s, :, 0, 2]) / 2
      half = (centres[1] - centres[0]) / 2
      extent = (centres[0] - half, centres[-1] + half, centres[-1] + half, centres[0] - half)
      ax = axes[row, s + 1]
      _show(ax, image, f'{name}\nbox side {side:.1f}')
      shown = ax.imshow(values[s], extent=extent, cmap='magma', alpha=0.85, vmin=low,
                        vmax=high, interpolation='nearest')
      ax.set_xlim(0, 1)
      ax.set_ylim(1, 0)
      _box(ax, vmap.source_box, 'white', width=1.0, style='--')
    figure.colorbar(shown, ax=axes[row, 1:], shrink=0.9, label='probability of l')
  return figure


def draw_attention(image, maps):
  """A figure: the image and each head's attention map (heads, rows, cols) over it."""
  plt = _pyplot()
  heads = maps.shape[0]
  figure, axes = plt.subplots(1, heads + 1, figsize=(2.2 * (heads + 1), 2.4), squeeze=False)
  _show(axes[0, 0], image, 'image')
  for h in range(heads):
    _show(axes[0, h + 1], image, f'head {h}')
    axes[0, h + 1].imshow(maps[h], extent=(0, 1, 1, 0), cmap='inferno', alpha=0.75,
                          interpolation='nearest')
  return figure


def draw_views(image, annotation_views, bootstrap_views):
  """A figure: the image with the views' boxes (annotation dashed, bootstrap numbered) and the
  moves between the bootstrap views."""
  plt = _pyplot()
  figure, axes = plt.subplots(1, 2, figsize=(8.5, 3.6), gridspec_kw=dict(width_ratios=(1, 1.4)))
  _show(axes[0], image, 'annotation views (dashed), bootstrap views (numbered)')
  for i, box in enumerate(annotation_views['boxes']):
    _box(axes[0], box, 'white', style='--', width=1.5, label=f'a{i}')
  for i, box in enumerate(bootstrap_views['boxes']):
    _box(axes[0], box, _COLOURS[i % len(_COLOURS)], label=str(i))
  axes[1].axis('off')
  moves = bootstrap_views['moves']
  iou = boxes_lib.iou(bootstrap_views['boxes'][:, None], bootstrap_views['boxes'][None])
  lines = ['move i -> j: box j in view i\'s frame (ymin, xmin, ymax, xmax); IoU']
  for i in range(len(moves)):
    for j in range(len(moves)):
      if i != j:
        lines.append(f'{i} -> {j}: ({", ".join(f"{c:+.2f}" for c in moves[i, j])})  '
                     f'IoU {iou[i, j]:.2f}')
  axes[1].text(0, 1, '\n'.join(lines), va='top', family='monospace', fontsize=8,
               transform=axes[1].transAxes)
  return figure


def num_candidates(config):
  """K, the number of annotations the target distributes over (for log K on the charts)."""
  name = objectives.AB_VARIANTS.get(config.objective.name, config.objective.name)
  annotation = config.data.annotation
  if name == 'dino':
    return config.objective.num_prototypes
  if name == 'simclr':
    return annotation.batch_size * annotation.views.num
  if name == 'clip':
    return annotation.batch_size
  return pipeline.num_classes(config.data, annotation.dataset)


def draw_training_charts(records, log_k):
  """A figure: value accuracy by IoU bin and the entropies over training (None: none logged)."""
  plt = _pyplot()
  keys = [f'value_accuracy_iou_{b}' for b in bootstrap.IOU_BINS]
  entropies = ('teacher_entropy', 'student_entropy', 'target_entropy', 'ab_prediction_entropy')
  has = lambda key: any(r.get(key) is not None for r in records)
  panels = [k for k in (keys, entropies) if any(has(key) for key in k)]
  if not panels:
    return None
  figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.4), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    for key in panel:
      points = [(r['step'], r[key]) for r in records if r.get(key) is not None]
      if points:
        ax.plot(*zip(*points), label=key.replace('value_accuracy_', ''))
    ax.set_xlabel('step')
    if panel is keys:
      ax.set_title('value accuracy (argmax Q = argmax y) by source-target IoU', fontsize=9)
      ax.set_ylim(0, 1)
    else:
      if log_k:
        ax.axhline(log_k, color='grey', ls='--', label=f'log K = {log_k:.2f}')
      ax.set_title('entropies (nats)', fontsize=9)
    ax.legend(fontsize=7)
  return figure


def load_images(config, paths, count):
  """(images, object boxes): ``paths`` read as RGB, or the first ``count`` images of the run's
  annotation dataset's validation split (its train split when it has none)."""
  if paths:
    images = []
    for path in paths:
      with storage.path(path).open('rb') as f:
        images.append(np.asarray(Image.open(f).convert('RGB')))
    return images, [np.zeros((0, 4), np.float32)] * len(images)
  annotation = config.data.annotation
  try:
    source = pipeline.open_source(config.data, annotation.dataset, 'validation')
  except ValueError:
    source = pipeline.open_source(config.data, annotation.dataset, annotation.split)
  decoder = pipeline.make_decoder(stream_spec.StreamSpec.from_config(annotation))
  images, object_boxes = [], []
  for i in range(min(count, len(source))):
    example = decoder(source[i])
    if example is not None:
      images.append(example['image'])
      object_boxes.append(example['object_boxes'][example['labels'] >= 0])
  return images, object_boxes


def default_source_box(object_boxes):
  """Around the image's first object (1.5x its size, inside the image), else the centre half."""
  if len(object_boxes):
    y0, x0, y1, x1 = object_boxes[0]
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    side = min(1.0, max(0.25, 1.5 * max(y1 - y0, x1 - x0)))
    cy, cx = np.clip(cy, side / 2, 1 - side / 2), np.clip(cx, side / 2, 1 - side / 2)
    return np.array([cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2], np.float32)
  return np.array([0.25, 0.25, 0.75, 0.75], np.float32)


def annotation_name(config, index, annotation_batch):
  """(a short name of annotation ``index``, its image for SimCLR's view candidates or None)."""
  name = objectives.AB_VARIANTS.get(config.objective.name, config.objective.name)
  if name == 'dino':
    return f'prototype {index}', None
  if name == 'simclr':
    views = annotation_batch['images']
    return f'annotation view {index}', views.reshape(-1, *views.shape[2:])[index]
  if name == 'clip':
    text = bytes(annotation_batch['caption'][index]).rstrip(b'\0').decode('utf-8', 'replace')
    return f'"{text[:40]}"', None
  names = _class_names(config)
  return (names[index] if names and index < len(names) else f'class {index}'), None


def _class_names(config):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  info = tfds.builder_from_directory(
      pipeline.dataset_directory(config.data, config.data.annotation.dataset)).info
  feature = feature_map.leaf_feature(info.features, 'objects/label')
  return list(getattr(feature, 'names', []) or [])


@functools.lru_cache(maxsize=4)
def _jitted_attention(encoder_config):
  """One compiled attention-map function per encoder: each evaluation's pictures reuse it."""
  return jax.jit(lambda params, images: attention_maps.last_block_attention(
      encoder_config, params, images))


class Pictures:
  """The pictures of one checkpoint: built once (compiled functions), drawn per image."""

  def __init__(self, config, encoder_config, state, step, annotation_batch=None, seed=0):
    self.config, self.seed = config, seed
    self.encoder_config = encoder_config
    which = objectives.probe_params(config.objective, config.evaluation.params)
    self.encoder = (state['target_params'] if which == 'target' else state['params'])['encoder']
    self.which = which
    self.objective = objectives.build(config.objective, encoder_config)
    self.values = None
    if objectives.is_bootstrapped(config.objective.name):
      if annotation_batch is None:
        streams = pipeline.build_streams(config.data, ('annotation',), config.seed + 7)
        iterator = iter(streams['annotation'])
        annotation_batch = pipeline.device_part(next(iterator))
        iterator.close()
      self.annotation_batch = annotation_batch
      self.values = value_maps.RunValues(self.objective, state, annotation_batch, step,
                                         config.data.bootstrap.views.size)
    self._attention = _jitted_attention(encoder_config)

  def attention(self, image):
    patch = self.encoder_config.patch_size
    size = max(patch, image.shape[0] // patch * patch)
    resized = views_lib.crop(image, boxes_lib.UNIT_BOX, size)
    maps = np.asarray(self._attention(self.encoder, jnp.asarray(resized[None])))[0]
    return draw_attention(image, maps)

  def value_map(self, image, source_box, annotation=None):
    vmap = self.values.value_map(image, source_box, annotation)
    name, thumbnail = annotation_name(self.config, vmap.annotation, self.annotation_batch)
    return vmap, draw_value_map(image, vmap, name, thumbnail)

  def views(self, image, index):
    rng = np.random.default_rng(self.seed * 1000 + index)
    spec = lambda name: stream_spec.StreamSpec.from_config(self.config.data[name]).views
    annotation = views_lib.make_views(image, rng, spec('annotation'))
    stream = 'bootstrap' if 'bootstrap' in self.config.data else 'annotation'
    return draw_views(image, annotation, views_lib.make_views(image, rng, spec(stream)))


def visualize(config, encoder_config, workdir, out, step=None, image_paths=(), num_images=4,
              annotation=None):
  """Writes the pictures of ``workdir``'s checkpoint (latest or ``step``) and ``index.html``
  to ``out``; returns the index's path."""
  step, state = checkpoint.load_state(workdir, step)
  pictures = Pictures(config, encoder_config, state, step)
  images, object_boxes = load_images(config, image_paths, num_images)
  if not images:
    raise ValueError('no images to draw: the dataset split is empty or unreadable')
  out = storage.path(out)
  out.mkdir(parents=True, exist_ok=True)
  sections, summary = [], []

  def save(name, figure):
    storage.write_atomically(out / name, png_bytes(figure))
    return name

  for i, (image, boxes) in enumerate(zip(images, object_boxes)):
    print(f'  image {i + 1}/{len(images)}', flush=True)
    entries = []
    if pictures.values is not None:
      source_box = default_source_box(boxes)
      vmap, figure = pictures.value_map(image, source_box, annotation)
      entries.append((save(f'value_map_{i}.png', figure),
                      'Value map: Q_AB of the annotation l for every target box (top), and the '
                      'target network\'s p(l | box) that Q learns to predict (bottom).'))
      peak = vmap.peak()
      summary.append(dict(image=i, annotation=vmap.annotation,
                          source_box=[round(float(c), 4) for c in vmap.source_box],
                          q_peak_box=[round(float(c), 4) for c in vmap.boxes[peak]],
                          q_max=float(vmap.q.max()), q_min=float(vmap.q.min()),
                          p_max=float(vmap.p.max()),
                          q_p_correlation=float(np.corrcoef(vmap.q.ravel(),
                                                            vmap.p.ravel())[0, 1])))
    entries.append((save(f'attention_{i}.png', pictures.attention(image)),
                    f'Last-block attention of the pooled query over the patches, per head '
                    f'({pictures.which} encoder).'))
    entries.append((save(f'views_{i}.png', pictures.views(image, i)),
                    'A sample of the run\'s views of this image and the moves between them.'))
    sections.append((f'Image {i}', entries))
  records = metrics_lib.read_metrics(workdir) if (
      storage.path(workdir) / 'metrics.jsonl').exists() else []
  k = num_candidates(config)
  chart = draw_training_charts([r for r in records if 'loss' in r], np.log(k) if k else None)
  if chart is not None:
    sections.insert(0, ('Training', [(save('training.png', chart),
                                      'From metrics.jsonl: value accuracy by IoU bin and the '
                                      'entropies of the targets, against log K.')]))
  storage.write_atomically(out / 'value_maps.json', json.dumps(summary, indent=1))
  page = [f'<html><head><meta charset="utf-8"><title>{html.escape(str(workdir))} step {step}'
          '</title></head><body style="font-family: sans-serif">',
          f'<h1>{html.escape(config.objective.name)}: {html.escape(str(workdir))}, step {step}'
          '</h1>']
  for title, entries in sections:
    page.append(f'<h2>{html.escape(title)}</h2>')
    for name, caption in entries:
      page.append(f'<figure><img src="{name}"><figcaption>{html.escape(caption)}</figcaption>'
                  '</figure>')
  page.append('</body></html>')
  storage.write_atomically(out / 'index.html', '\n'.join(page))
  return out / 'index.html'


def image_array(png):
  """(H, W, 3) uint8 of PNG bytes (for TensorBoard)."""
  return np.asarray(Image.open(io.BytesIO(png)).convert('RGB'))


def tensorboard_pictures(config, encoder_config, state, step, image, object_boxes,
                         annotation_batch):
  """{tag: (H, W, 3) uint8} of one image at an evaluation during training: its value map (AB
  runs), attention maps and views."""
  pictures = Pictures(config, encoder_config, state, step, annotation_batch)
  out = {'pictures/attention': pictures.attention(image),
         'pictures/views': pictures.views(image, 0)}
  if pictures.values is not None:
    out['pictures/value_map'] = pictures.value_map(image, default_source_box(object_boxes))[1]
  return {tag: image_array(png_bytes(figure)) for tag, figure in out.items()}

