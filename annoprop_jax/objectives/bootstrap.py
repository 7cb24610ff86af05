"""Annotation bootstrapping (docs/method.md): predict a neighbouring view's annotations.

Given bootstrap views x_1..x_V of one image and the moves between them, the annotation decoder
predicts Q_AB(l | x_i, a_ij) over the candidate annotations l (always built from the annotation
batch). Its target, from the EMA target network with stop-gradient, is

    y_ij(l) = (1 - gamma) p(l | x_j) + gamma m_ij(l) / sum_l m_ij(l),
    m_ij(l) = max (or mean) over next moves a_jk of Q_target(l | x_j, a_jk),

and the loss is CE(y_ij, Q_AB(. | x_i, a_ij)) averaged over pairs (i, j), then images.
Total loss = base loss (annotation batch, online parameters) + weight * AB loss.

All pairs of all views are computed in one packed decoder call per source view, so every view
costs one encoder pass; a source view is decoded for the V - 1 other views only, unless the
identity pairs are trained (``include_diagonal``) or read (``predictions(all_views=True)``).
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from annoprop_jax import errors
from annoprop_jax.models import decoder as decoder_lib
from annoprop_jax.models import network as network_lib
from annoprop_jax.objectives import method as method_lib

Network = network_lib.Network

IOU_BINS = ('0', '0-0.2', '0.2-0.5', '0.5-0.8', '>0.8')
AGGREGATES = ('max', 'expectation')     # of Q_target over the next moves
_IOU_EDGES = ((-1.0, 0.0), (0.0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 1.01))


def default_config():
  """The ``objective.bootstrap`` block shared by every AB variant."""
  return ml_collections.ConfigDict(dict(
      weight=1.0,                 # lambda: total = base + weight * AB
      gamma=0.0,                  # 0 = the preprint's loss
      aggregate='max',            # 'max' or 'expectation' over next moves
      include_diagonal=False,     # train on identity pairs (i, i) too
      actions=True,               # False: the decoder sees one constant move, never the box
                                  # (a control: the paper's "remove action tokens")
      next_include_identity=False,  # next moves of x_j include j -> j
      next_include_source=True,   # next moves of x_j include j -> i (back to x_1)
      decoder=dict(width=128, depth=2, num_heads=4, mlp_ratio=4.0),
      box=dict(bins=128, low=-5.0, high=6.0),
  ))


def pair_masks(num_views, include_diagonal, next_include_identity, next_include_source):
  """Static masks: ``pairs[i, j]`` trains pair (i, j); ``nexts[i, j, k]`` counts move j -> k."""
  eye = np.eye(num_views, dtype=bool)
  pairs = np.ones((num_views, num_views), bool) if include_diagonal else ~eye
  nexts = np.ones((num_views,) * 3, bool)
  if not next_include_identity:
    nexts &= ~eye[None, :, :]                          # k == j
  if not next_include_source:
    nexts &= ~eye[:, None, :]                          # k == i
  return pairs, nexts


def bootstrapped_target(p_next, q_next, gamma, aggregate, nexts):
  """y for every pair (i, j).

  Args:
    p_next: (B, V, L) target-network annotation probabilities p(l | x_j).
    q_next: (B, V, V, L) target-network Q(l | x_j, a_jk) probabilities (None when gamma = 0).
    gamma: bootstrap weight. aggregate: 'max' or 'expectation'. nexts: (V, V, V) bool mask.
  Returns:
    (B, V, V, L) targets y_ij, each summing to 1, with no gradient.
  """
  b, v, num_candidates = p_next.shape
  y = jnp.broadcast_to(p_next[:, None], (b, v, v, num_candidates))     # y_ij = p(. | x_j)
  if gamma:
    mask = jnp.asarray(nexts)[None, :, :, :, None]          # (1, i, j, k, 1)
    q = jnp.where(mask, q_next[:, None], 0.0)               # (B, i, j, k, L), probabilities >= 0
    if aggregate == 'max':
      m = q.max(axis=3)
    else:                                                   # 'expectation'
      m = q.sum(axis=3) / jnp.maximum(mask.sum(axis=3), 1)
    m = m / jnp.maximum(m.sum(-1, keepdims=True), 1e-12)
    y = (1.0 - gamma) * y + gamma * m
  return jax.lax.stop_gradient(y)


def ab_loss(log_q, y, pairs):
  """Soft-target cross-entropy, mean over the valid pairs of an image, then over images."""
  ce = -jnp.sum(y * log_q, axis=-1)                         # (B, V, V)
  pairs = jnp.asarray(pairs, ce.dtype)
  return (jnp.sum(ce * pairs, axis=(1, 2)) / pairs.sum()).mean()


def target_staleness(p_target, p_online):
  """KL(p_target || p_online) in nats, the mean over images and views: how far the target
  network's p(l | x) lags behind the online network's on the same views (0 when they agree)."""
  log = lambda p: jnp.log(jnp.clip(p, 1e-12))
  return jnp.sum(p_target * (log(p_target) - log(p_online)), axis=-1).mean()


def pairwise_iou(view_boxes):
  """(B, V, 4) -> (B, V, V) IoU of every pair of views, in jnp."""
  a, b = view_boxes[:, :, None], view_boxes[:, None, :]
  ih = jnp.clip(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0)
  iw = jnp.clip(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0)
  inter = ih * iw
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  return inter / jnp.maximum(area(a) + area(b) - inter, 1e-12)


def iou_bin_masks(iou, pairs):
  """{bin of IOU_BINS: the pairs (B, V, V) whose source-target IoU falls in it}; ``pairs`` is
  the trained-pair mask, broadcast to ``iou``."""
  pairs = jnp.broadcast_to(jnp.asarray(pairs), iou.shape)
  return {name: pairs & (iou <= 0.0) if name == '0' else pairs & (iou > lo) & (iou <= hi)
          for name, (lo, hi) in zip(IOU_BINS, _IOU_EDGES)}


def diagnostics(log_q, y, pairs, view_boxes, moves, box_config):
  """Value accuracy by source-target IoU bin, the IoU histogram and the clipped fraction."""
  iou = pairwise_iou(view_boxes)
  correct = jnp.argmax(log_q, -1) == jnp.argmax(y, -1)
  pairs = jnp.broadcast_to(jnp.asarray(pairs), iou.shape)
  out = {}
  for name, in_bin in iou_bin_masks(iou, pairs).items():
    count = in_bin.sum()
    out[f'value_accuracy_iou_{name}'] = jnp.where(
        count > 0, (correct & in_bin).sum() / jnp.maximum(count, 1), jnp.nan)
    out[f'pair_iou_fraction_{name}'] = count / pairs.sum()
  _, clipped = decoder_lib.quantise_moves(moves, box_config.low, box_config.high, box_config.bins)
  out['clipped_box_fraction'] = (clipped * pairs[..., None]).sum() / (4 * pairs.sum())
  return out


def target_views(num_views, include_diagonal):
  """(V, T) static: the views each source view is decoded for, all V or the V - 1 others."""
  return np.array([[j for j in range(num_views) if include_diagonal or j != i]
                   for i in range(num_views)])


def decode_pairs(method, params, tokens, moves, targets):
  """phi_AB of the pairs (i, targets[i, t]): (B, V, T, W), one packed decoder call per source
  view (``tokens`` (B * V, N, D), ``moves`` (B, V, V, 4))."""
  b, v = moves.shape[:2]
  if targets.shape[1] < v:
    moves = moves[:, np.arange(v)[:, None], targets]                # (B, V, T, 4)
  phi = method.apply(params, Network.decode, tokens, moves.reshape(b * v, -1, 4))
  return phi.reshape(b, v, targets.shape[1], -1)


def all_pairs(values, targets):
  """(B, V, T, ...) values of the decoded pairs -> (B, V, V, ...); a pair that was not decoded
  (i, i) repeats a decoded value of its row, which every mask of the identity pair removes."""
  v = targets.shape[0]
  if targets.shape[1] == v:
    return values
  column = {(i, int(j)): t for i in range(v) for t, j in enumerate(targets[i])}
  return jnp.stack([jnp.stack([values[:, i, column.get((i, j), 0)] for j in range(v)], axis=1)
                    for i in range(v)], axis=1)


def pair_log_probs(method, params, tokens, moves, targets, candidates):
  """log Q_AB (B, V, V, L) of ``params`` for the pairs (i, targets[i, t]) (see ``all_pairs`` for
  the pairs not decoded): the decoder on the moves, then the method's AB head over the
  candidates."""
  phi = decode_pairs(method, params, tokens, moves, targets)
  return all_pairs(method.ab_log_probs(params, phi, candidates), targets)


@dataclasses.dataclass(frozen=True)
class PairPredictions:
  """What annotation bootstrapping computes on a batch (``AnnotationBootstrapping.predictions``)."""
  base: method_lib.BaseResult
  log_q: Any              # (B, V, V, L) log Q_AB(l | x_i, a_ij), online
  y: Any                  # (B, V, V, L) its targets y_ij, no gradient
  p_next: Any             # (B, V, L) the target network's p(l | x_j)
  pairs: np.ndarray       # (V, V) the trained pairs
  p_online: Any           # (B, V, L) the online network's p(l | x_j), no gradient


def decoder_kwargs(ab_config, encoder_config):
  """The annotation decoder's keyword arguments: ``objective.bootstrap``'s decoder and box
  blocks, computed in the encoder's dtype with its attention."""
  return dict(**ab_config.decoder.to_dict(), **ab_config.box.to_dict(),
              dtype=encoder_config.dtype, attention=encoder_config.attention)


class AnnotationBootstrapping:
  """A base ``method`` (a ``method.Method`` built with the decoder) with annotation
  bootstrapping: base loss on the annotation stream plus ``weight`` x the AB loss on the
  bootstrap stream."""
  streams = ('annotation', 'bootstrap')

  def __init__(self, method):
    self.method = method
    self.config = method.config.bootstrap

  def init(self, rng, batch):
    boot, annotation = batch['bootstrap'], batch['annotation']
    params = self.method.net.init(rng, boot['images'][:1, 0], boot['moves'][:1, 0],
                                  **self.method.init_inputs(annotation))['params']
    return params, self.method.init_state()

  def predictions(self, inputs, actions=None, all_views=False):
    """The base result and, for every ordered pair (i, j) of bootstrap views, log Q_AB (online,
    with ``actions``: by default the moves, or one constant move without ``actions``) and the
    target y (target network, the same actions for its next moves). The identity pairs (i, i)
    of log Q_AB are decoded only when trained or asked for (``all_views``)."""
    cfg, method, boot = self.config, self.method, inputs.batch['bootstrap']
    inputs = dataclasses.replace(inputs, params=method.step_params(inputs.params, inputs.step))
    params, target_params = inputs.params, inputs.target_params
    # Base loss and the candidate annotations, both from the annotation batch.
    base = method.base_loss(inputs, bootstrap=True)
    # Online: encoder on the bootstrap views, decoder on all pairs, Q_AB over candidates.
    v = boot['images'].shape[1]
    pairs, nexts = pair_masks(v, cfg.include_diagonal, cfg.next_include_identity,
                              cfg.next_include_source)
    if actions is None:
      actions = boot['moves'] if cfg.actions else jnp.zeros_like(boot['moves'])
    pooled, tokens = method.encode_views(params, boot['images'],
                                         method_lib.online_rng(inputs, 'bootstrap'))
    log_q = pair_log_probs(method, params, tokens, actions,
                           target_views(v, cfg.include_diagonal or all_views), base.candidates)
    # Target network: p(l | x_j) and, with gamma > 0, Q_target(l | x_j, a_jk).
    target_pooled, target_tokens = method.encode_views(target_params, boot['images'])
    p_next = method.target_probs(inputs, target_pooled, base.target_candidates)
    q_next = None
    if cfg.gamma:
      q_next = jnp.exp(pair_log_probs(method, target_params, target_tokens, actions,
                                      target_views(v, cfg.next_include_identity),
                                      base.target_candidates))
    y = bootstrapped_target(p_next, q_next, cfg.gamma, cfg.aggregate, nexts)
    # How far the target lags: the online network's p(l | x_j) beside the target's.
    p_online = method.target_probs(dataclasses.replace(inputs, target_params=params),
                                   pooled, base.candidates)
    return PairPredictions(base=base, log_q=log_q, y=y, p_next=p_next, pairs=pairs,
                           p_online=jax.lax.stop_gradient(p_online))

  def loss_terms(self, inputs):
    cfg, boot = self.config, inputs.batch['bootstrap']
    pred = self.predictions(inputs)
    base, log_q, y, pairs = pred.base, pred.log_q, pred.y, pred.pairs
    loss_ab = ab_loss(log_q, y, pairs)
    pair_mean = lambda x: (x * pairs).sum() / (pairs.sum() * x.shape[0])
    metrics = dict(base.metrics, base_loss=base.loss, ab_loss=loss_ab,
                   target_entropy=pair_mean(method_lib.entropy(y)),
                   ab_prediction_entropy=pair_mean(method_lib.entropy(jnp.exp(log_q))),
                   target_staleness=target_staleness(pred.p_next, pred.p_online),
                   **diagnostics(log_q, y, pairs, boot['boxes'], boot['moves'], cfg.box))
    return {'base': base.loss, 'ab': cfg.weight * loss_ab}, (metrics, base.method_state)

  loss = method_lib.total_loss


def validate(config):
  """One-line errors for ``objective.bootstrap`` of the experiment ``config``."""
  ab, num_views = config.objective.bootstrap, config.data.bootstrap.views.num
  if ab.aggregate not in AGGREGATES:
    raise errors.ConfigError(
        f'objective.bootstrap.aggregate must be one of {AGGREGATES}, got {ab.aggregate!r}')
  if not 0 <= ab.gamma <= 1:
    raise errors.ConfigError(f'objective.bootstrap.gamma must be in [0, 1], got {ab.gamma}')
  _, nexts = pair_masks(num_views, ab.include_diagonal, ab.next_include_identity,
                        ab.next_include_source)
  if ab.gamma and not nexts.any(axis=2)[~np.eye(num_views, dtype=bool)].all():
    raise errors.ConfigError('with these next-move options some pairs have no next move; use '
                             'more bootstrap views or include the identity or source move')
