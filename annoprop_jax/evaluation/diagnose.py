"""``diagnose``: does an AB run's annotation decoder use the action (the box of the other view)?

On batches of the run's own streams, with a checkpoint's online and target networks, for every
trained pair (i, j) of bootstrap views, by source-target IoU bin (``bootstrap.IOU_BINS``), by
the target view's area (``AREA_BINS``, fractions of the image) and over all pairs, in nats:

  kl_true      KL(y_ij || Q_AB(. | x_i, a_ij))            Q with the true moves
  kl_shuffled  KL(y_ij || Q_AB(. | x_i, a_shuffled))      the moves permuted within each image
  kl_copy      KL(y_ij || p_target(. | x_i))              the copy baseline: no move at all
  information  KL(y_ij || mean y)                         how much the targets say at all

and ``identity_kl`` = KL(p_target(. | x_i) || Q_AB(. | x_i, identity move)), the decoder's
read-out of its own view. A decoder that uses the action has kl_true below kl_shuffled (and
below kl_copy where views overlap little); kl_true ~ kl_shuffled says it ignores the box. The
area split shows the targets that come from crops smaller than any view the base method trains
on (a DINO without local crops sees no crop under its RandomResizedCrop's lower scale).
"""
import json

import jax
import jax.numpy as jnp
import numpy as np

from annoprop_jax import checkpoint
from annoprop_jax import objectives
from annoprop_jax import storage
from annoprop_jax.data import pipeline
from annoprop_jax.objectives import bootstrap

ROWS = ('kl_true', 'kl_shuffled', 'kl_copy', 'information')
# The target view's area as a fraction of the image: under 0.15 (local crops only), up to 0.4
# (the paper's local/global boundary, Table 7), and the global crops' range.
AREA_BINS = ('<0.15', '0.15-0.4', '>=0.4')
_AREA_EDGES = ((0.0, 0.15), (0.15, 0.4), (0.4, 1.01))


def area_bin_masks(view_boxes, pairs):
  """{bin of AREA_BINS: the pairs (B, V, V) whose target view j has its area in the bin}."""
  area = (view_boxes[..., 2] - view_boxes[..., 0]) * (view_boxes[..., 3] - view_boxes[..., 1])
  target_area = area[:, None, :]                                       # pair (i, j) -> view j
  return {name: pairs & (target_area >= lo) & (target_area < hi)
          for name, (lo, hi) in zip(AREA_BINS, _AREA_EDGES)}


def kl(p, log_q):
  """KL(p || q) over the last axis, for probabilities ``p`` and log-probabilities ``log_q``."""
  return jnp.sum(p * (jnp.log(jnp.clip(p, 1e-12)) - log_q), axis=-1)


def shuffled_moves(moves, rng):
  """(B, V, V, 4) moves with the V x V moves of each image permuted among its pairs."""
  b, v = moves.shape[:2]
  keys = jax.random.split(rng, b)
  order = jax.vmap(lambda k: jax.random.permutation(k, v * v))(keys)
  flat = moves.reshape(b, v * v, 4)
  return jnp.take_along_axis(flat, order[..., None], axis=1).reshape(moves.shape)


def _sums(objective, inputs):
  """Per bin (IoU and area) and row: (sum of KL over the bin's trained pairs, pair count);
  identity KL. ``inputs.rng`` shuffles the moves."""
  boot = inputs.batch['bootstrap']
  true = objective.predictions(inputs)
  shuffled = objective.predictions(inputs, actions=shuffled_moves(boot['moves'], inputs.rng))
  pairs = jnp.broadcast_to(jnp.asarray(true.pairs), true.y.shape[:3])
  y = true.y
  mean_y = (y * pairs[..., None]).sum(axis=(0, 1, 2)) / pairs.sum()
  log_copy = jnp.log(jnp.clip(true.p_next, 1e-12))[:, :, None, :]      # p_target(. | x_i)
  rows = {'kl_true': kl(y, true.log_q), 'kl_shuffled': kl(y, shuffled.log_q),
          'kl_copy': kl(y, jnp.broadcast_to(log_copy, y.shape)),
          'information': kl(y, jnp.log(jnp.clip(mean_y, 1e-12)))}
  masks = {**bootstrap.iou_bin_masks(bootstrap.pairwise_iou(boot['boxes']), pairs),
           **area_bin_masks(boot['boxes'], pairs)}
  sums = {name: {row: (jnp.sum(value * in_bin), in_bin.sum()) for row, value in rows.items()}
          for name, in_bin in masks.items()}
  # The identity move of each view (i -> i) is the diagonal of the moves; read Q there.
  v = boot['moves'].shape[1]
  identity = jnp.broadcast_to(boot['moves'][:, jnp.arange(v), jnp.arange(v)][:, :, None],
                              boot['moves'].shape)
  read_out = objective.predictions(inputs, actions=identity, all_views=True)
  diagonal = read_out.log_q[:, jnp.arange(v), jnp.arange(v)]           # Q(. | x_i, a_ii)
  return sums, jnp.mean(kl(true.p_next, diagonal))


def diagnose(config, encoder_config, workdir, step=None, batches=4, seed=0):
  """{'step', 'pairs', 'identity_kl', 'by_iou': {bin: {row: mean}}, 'by_area': {bin: {row:
  mean}}, 'area_pairs': {bin: pairs}, 'all': {row: mean}} for the
  checkpoint of ``step`` (default: the latest) of the AB run of ``config`` in ``workdir``, on
  ``batches`` batches of its streams (seeded apart from training's)."""
  if not objectives.is_bootstrapped(config.objective.name):
    raise ValueError(f'diagnose needs an annotation-bootstrapping run; {workdir!r} trains '
                     f'{config.objective.name!r}')
  step, state = checkpoint.load_state(workdir, step)
  objective = objectives.build(config.objective, encoder_config)
  streams = pipeline.build_streams(config.data, objective.streams, config.seed + 1 + seed)
  iterators = {name: iter(ds) for name, ds in streams.items()}
  compute = jax.jit(lambda batch, rng: _sums(objective, objectives.LossInputs(
      params=state['params'], target_params=state['target_params'],
      method_state=state['method_state'], batch=batch, step=jnp.int32(step), rng=rng)))
  totals, identity = {}, []
  for i in range(batches):
    batch = {name: pipeline.device_part(next(it)) for name, it in iterators.items()}
    sums, identity_kl = jax.device_get(compute(batch, jax.random.PRNGKey(seed * 1000 + i)))
    identity.append(float(identity_kl))
    for name, rows in sums.items():
      for row, (total, count) in rows.items():
        t, c = totals.get((name, row), (0.0, 0))
        totals[name, row] = (t + float(total), c + int(count))
  for it in iterators.values():
    it.close()
  mean = lambda t, c: t / c if c else None
  by_bin = lambda bins: {name: {row: mean(*totals[name, row]) for row in ROWS} for name in bins}
  overall = {}
  for row in ROWS:
    total = sum(totals[name, row][0] for name in bootstrap.IOU_BINS)
    count = sum(totals[name, row][1] for name in bootstrap.IOU_BINS)
    overall[row] = mean(total, count)
  return {'step': int(step), 'pairs': sum(totals[name, 'kl_true'][1] for name in
                                          bootstrap.IOU_BINS),
          'identity_kl': float(np.mean(identity)), 'by_iou': by_bin(bootstrap.IOU_BINS),
          'by_area': by_bin(AREA_BINS), 'all': overall,
          'area_pairs': {name: totals[name, 'kl_true'][1] for name in AREA_BINS}}


def table(result):
  """The rows against the IoU bins, then against the target's area bins, as text."""
  cell = lambda v: f'{v:>9.4f}' if v is not None else f'{"-":>9}'
  lines = [f'diagnose at step {result["step"]} ({result["pairs"]} pairs; nats)']
  for title, key, bins in (('IoU', 'by_iou', bootstrap.IOU_BINS),
                           ('target area', 'by_area', AREA_BINS)):
    lines.append(f'  {title:<12}' + ''.join(f'{b:>9}' for b in (*bins, 'all')))
    for row in ROWS:
      values = [result[key][b][row] for b in bins] + [result['all'][row]]
      lines.append(f'  {row:<12}' + ''.join(cell(v) for v in values))
  lines.append(f'  {"pairs":<12}' + ''.join(f'{result["area_pairs"][b]:>9}' for b in AREA_BINS)
               + f'{result["pairs"]:>9}')
  lines.append(f'  identity_kl  {result["identity_kl"]:.4f}  (p_target(.|x) vs Q(.|x, identity))')
  return '\n'.join(lines)


def write(result, workdir):
  """Writes ``WORKDIR/diagnose/step_<N>.json``; returns its path."""
  path = storage.path(workdir) / 'diagnose' / f'step_{result["step"]}.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  storage.write_atomically(path, json.dumps(result, indent=1, sort_keys=True))
  return path
