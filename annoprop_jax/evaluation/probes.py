"""Probes on frozen, already extracted features: kNN, linear, attentive (MAP) and decoder (the
few-shot ridge regression is fewshot.py).

Numpy arrays in, Python floats out; everything is a pure function of its inputs and the seed.
Two task kinds:
  'class'       int labels (N,) in [0, num_classes); softmax cross-entropy; score = accuracy.
  'multilabel'  multi-hot (N, C); per-class sigmoid + binary cross-entropy; score = mean average
                precision over the classes with at least one positive in the scored set.

Trained probes (``fit``) run their whole schedule (AdamW, cosine LR decay, seeded per-epoch
shuffles) in one jitted call, vmapped over the (learning rate, weight decay) grid of the sweep.
Features are standardised per channel with the statistics of the rows being fit. Prediction
pads the last batch, so every test row is scored.
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from annoprop_jax import optimizer
from annoprop_jax import sharding
from annoprop_jax.models import decoder as decoder_lib
from annoprop_jax.models import vit

KINDS = ('class', 'multilabel')


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  learning_rates: tuple = (1e-3, 3e-3, 1e-2)   # the sweep (linear probe); attentive/decoder use
  weight_decays: tuple = (0.0, 1e-4)           # the first of each unless sweep=True
  epochs: int = 30
  batch_size: int = 256
  holdout_fraction: float = 0.2   # part of TRAIN held out to pick the sweep's best; then refit
  seed: int = 0
  num_heads: int = 4              # attentive / decoder probes
  decoder_depth: int = 1          # decoder probe: transformer decoder layers
  decoder_width: int = 0          # 0: the feature width
  decoder_queries: int = 1        # decoder probe: learned query tokens (mean-pooled at the end)


# ----------------------------------------------------------------------------- heads

class LinearHead(nn.Module):
  num_outputs: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_outputs, kernel_init=nn.initializers.zeros, name='head')(x)


def heads_multiple(width, num_heads):
  """The attention width: ``width`` rounded up to a multiple of ``num_heads``."""
  return -(-width // num_heads) * num_heads


class AttentiveHead(nn.Module):
  """MAP pooling (one learned query cross-attends to the tokens, LayerNorm + MLP residual),
  then a linear head. (N, T, D) -> (N, num_outputs)."""
  num_outputs: int
  num_heads: int = 4
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, tokens):
    n, _, d = tokens.shape
    probe = self.param('probe', nn.initializers.xavier_uniform(), (1, 1, d), jnp.float32)
    x = nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                        qkv_features=heads_multiple(d, self.num_heads),
                                        out_features=d,
                                        kernel_init=nn.initializers.xavier_uniform())(
                                            jnp.broadcast_to(probe, (n, 1, d)), tokens)
    x = x + vit.MlpBlock(int(d * self.mlp_ratio))(nn.LayerNorm()(x))
    return LinearHead(self.num_outputs)(x[:, 0])


class DecoderHead(nn.Module):
  """Learned queries through ``depth`` decoder blocks (self-attention, cross-attention to the
  LayerNorm-ed, projected tokens, MLP), final LayerNorm, mean over queries, linear head."""
  num_outputs: int
  width: int
  depth: int = 1
  num_heads: int = 4
  num_queries: int = 1
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, tokens):
    n = tokens.shape[0]
    memory = nn.LayerNorm(name='memory_norm')(tokens)
    memory = nn.Dense(self.width, name='memory_projection')(memory)
    queries = self.param('queries', nn.initializers.normal(0.02),
                         (1, self.num_queries, self.width), jnp.float32)
    x = jnp.broadcast_to(queries, (n, self.num_queries, self.width))
    for i in range(self.depth):
      x = decoder_lib.DecoderBlock(self.num_heads, int(self.width * self.mlp_ratio),
                                   name=f'block{i}')(x, memory, None)
    x = nn.LayerNorm(name='decoder_norm')(x).mean(axis=1)
    return LinearHead(self.num_outputs)(x)


# ----------------------------------------------------------------------------- training

def _loss(kind, logits, targets):
  if kind == 'class':
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
  return optax.sigmoid_binary_cross_entropy(logits, targets).mean()


@functools.partial(jax.jit, static_argnames=('model', 'kind', 'epochs', 'batch_size'))
def _fit_grid(model, kind, epochs, batch_size, x, y, rows, mean, std, seed, learning_rates,
              weight_decays):
  """Params of ``model`` trained once per (learning rate, weight decay) pair (stacked on axis 0)
  on the ``rows`` of ``x`` and ``y``, each minibatch standardised as it is read ((x - mean) /
  std), so the features sit on the device once. Same initialisation and the same batch order
  for every pair."""
  n = rows.shape[0]
  steps = -(-n // batch_size)          # the last partial batch wraps around the permutation
  init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
  params0 = model.init(init_key, x[:1])['params']

  def fit_one(learning_rate, weight_decay):
    tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, epochs * steps),
                     weight_decay=weight_decay, mask=optimizer.decay_mask)

    def step(carry, index):
      params, opt_state = carry
      batch = (x[index].astype(jnp.float32) - mean) / std    # float32 or bfloat16 features
      grads = jax.grad(lambda p: _loss(kind, model.apply({'params': p}, batch), y[index]))(
          params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    def epoch(carry, key):
      order = jax.random.permutation(key, n)
      index = rows[order[jnp.arange(steps * batch_size) % n]].reshape(steps, batch_size)
      return jax.lax.scan(step, carry, index)[0], None

    carry = (params0, tx.init(params0))
    return jax.lax.scan(epoch, carry, jax.random.split(data_key, epochs))[0][0]

  if learning_rates.shape[0] == 1:   # no sweep: skip vmap (it costs compile time)
    return jax.tree.map(lambda p: p[None], fit_one(learning_rates[0], weight_decays[0]))
  return jax.vmap(fit_one)(learning_rates, weight_decays)


def fit(model, x, y, *, kind, learning_rate, weight_decay, epochs, batch_size, seed=0):
  """Params of ``model`` trained on (already standardised) ``x`` and targets ``y``."""
  params = _fit_grid(model, kind, epochs, min(batch_size, len(x)), jnp.asarray(x),
                     jnp.asarray(y), jnp.arange(len(x), dtype=jnp.int32), jnp.float32(0.0),
                     jnp.float32(1.0), seed, jnp.float32([learning_rate]),
                     jnp.float32([weight_decay]))
  return jax.tree.map(lambda p: np.asarray(p)[0], params)


@functools.partial(jax.jit, static_argnames=('model', 'batch_size'))
def _predict(model, params, x, mean, std, batch_size):
  n = x.shape[0]
  batches = -(-n // batch_size)
  x = jnp.pad(x, [(0, batches * batch_size - n)] + [(0, 0)] * (x.ndim - 1))   # zero rows
  x = x.reshape(batches, batch_size, *x.shape[1:])
  logits = jax.lax.map(
      lambda b: model.apply({'params': params}, (b.astype(jnp.float32) - mean) / std), x)
  return logits.reshape(batches * batch_size, -1)[:n]


def predict(model, params, x, *, batch_size=256, mean=0.0, std=1.0):
  """Logits (N, num_outputs) for every row of ``x`` (standardised on the device as (x -
  ``mean``) / ``std``), float32 numpy."""
  return np.asarray(_predict(model, params, jnp.asarray(x), jnp.asarray(mean, jnp.float32),
                             jnp.asarray(std, jnp.float32), min(batch_size, len(x))))


def score(logits, targets, *, kind):
  """Accuracy ('class', argmax; ties -> lowest class) or mean average precision ('multilabel')."""
  if kind == 'class':
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(targets)))
  return mean_average_precision(logits, targets)


def _moments(x, rows=None, chunk=4096):
  """The per-feature mean and std (floored at 1e-6), float32, of ``x``'s ``rows`` (default all)
  over every axis but the last: what the probes standardise with. Summed in float64 a chunk of
  rows at a time, so no copy of ``x`` (float32 or bfloat16) is made."""
  rows = np.arange(len(x)) if rows is None else rows
  total, squares, count = 0.0, 0.0, 0
  for start in range(0, len(rows), chunk):
    part = np.asarray(x[rows[start:start + chunk]], np.float64).reshape(-1, x.shape[-1])
    total, squares = total + part.sum(0), squares + np.square(part).sum(0)
    count += len(part)
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
  return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def _sweep_and_fit(model, train_x, train_y, test_x, test_y, kind, grid, config,
                   return_predictions):
  """Picks the best (lr, wd) of ``grid`` on a holdout of train, refits it on all of train,
  scores test. The train features go to the device once; minibatches are standardised there."""
  if not grid or config.epochs < 1 or config.batch_size < 1:
    raise ValueError(f'a probe needs learning rates, weight decays, epochs >= 1 and '
                     f'batch_size >= 1; got {config}')
  learning_rates, weight_decays = (np.float32(v) for v in zip(*grid))
  best, holdout_scores = 0, {}
  x, y = jnp.asarray(train_x), jnp.asarray(train_y)
  if len(grid) > 1:
    n = len(train_x)
    n_hold = int(round(n * config.holdout_fraction))
    if not 0 < n_hold < n:
      raise ValueError(f'holdout_fraction {config.holdout_fraction} of {n} train rows leaves '
                       f'an empty holdout or fit set; a sweep needs both')
    order = np.random.default_rng(config.seed).permutation(n)
    hold, rest = order[:n_hold], order[n_hold:]
    mean, std = _moments(train_x, rest)
    params = _fit_grid(model, kind, config.epochs, min(config.batch_size, len(rest)), x, y,
                       jnp.asarray(rest, jnp.int32), jnp.asarray(mean), jnp.asarray(std),
                       config.seed, jnp.asarray(learning_rates), jnp.asarray(weight_decays))
    params = jax.tree.map(np.asarray, params)   # numpy slices below: no per-shape compiles
    for i, pair in enumerate(grid):
      one = jax.tree.map(lambda p, i=i: p[i], params)
      holdout_scores[pair] = score(predict(model, one, train_x[hold], mean=mean, std=std,
                                           batch_size=config.batch_size),
                                   train_y[hold], kind=kind)
    best = int(np.argmax([np.nan_to_num(s, nan=-1.0) for s in holdout_scores.values()]))
  mean, std = _moments(train_x)
  params = _fit_grid(model, kind, config.epochs, min(config.batch_size, len(train_x)), x, y,
                     jnp.arange(len(train_x), dtype=jnp.int32), jnp.asarray(mean),
                     jnp.asarray(std), config.seed, jnp.float32([grid[best][0]]),
                     jnp.float32([grid[best][1]]))
  del x, y
  params = jax.tree.map(lambda p: np.asarray(p)[0], params)
  logits = predict(model, params, test_x, mean=mean, std=std, batch_size=config.batch_size)
  result = {'score': score(logits, test_y, kind=kind), 'learning_rate': grid[best][0],
            'weight_decay': grid[best][1], 'holdout_scores': holdout_scores}
  if return_predictions:
    result['predictions'] = logits
  return result


# ----------------------------------------------------------------------------- validation

def _check_split(split, x, y, kind, num_classes, feature_ndim):
  """float32 features and checked targets (int32 labels or float32 multi-hot) of one split."""
  if kind not in KINDS:
    raise ValueError(f'unknown kind {kind!r}: use one of {KINDS}')
  if int(num_classes) < 1:
    raise ValueError(f'num_classes must be positive, got {num_classes}')
  what = 'pooled features (N, D)' if feature_ndim == 2 else 'tokens (N, T, D)'
  x = np.asarray(x)
  if x.ndim != feature_ndim:
    raise ValueError(f'{split} features: expected {what}, got shape {x.shape}')
  if len(x) == 0:
    raise ValueError(f'{split} features are empty')
  if x.dtype.name != 'bfloat16':            # bfloat16 tokens stay so: the probes cast batches
    x = x.astype(np.float32, copy=False)    # features held once: no copy of float32 ones
  if not np.isfinite(x).all():
    raise ValueError(f'{split} features contain NaN or inf')
  if y is None:
    return x, None
  y = np.asarray(y)
  if len(x) != len(y):
    raise ValueError(f'{split}: {len(x)} feature rows but {len(y)} targets')
  if kind == 'class':
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f'{split} targets: kind "class" needs int labels (N,), got '
                       f'{y.dtype} {y.shape}')
    if y.min() < 0 or y.max() >= num_classes:
      raise ValueError(f'{split} labels must lie in [0, {num_classes}), got '
                       f'[{y.min()}, {y.max()}]')
    return x, y.astype(np.int32)
  if y.ndim != 2 or y.shape[1] != num_classes:
    raise ValueError(f'{split} targets: kind "multilabel" needs multi-hot (N, {num_classes}), '
                     f'got {y.shape}')
  y = y.astype(np.float32)
  if not np.isin(y, (0.0, 1.0)).all():
    raise ValueError(f'{split} multi-hot targets must be 0 or 1')
  return x, y


def check_features(train_x, train_y, test_x, test_y, kind, num_classes, feature_ndim):
  """[train_x, train_y, test_x, test_y] checked and cast (test_y may be None)."""
  train = _check_split('train', train_x, train_y, kind, num_classes, feature_ndim)
  test = _check_split('test', test_x, test_y, kind, num_classes, feature_ndim)
  if train[0].shape[1:] != test[0].shape[1:]:
    raise ValueError(f'train features {train[0].shape[1:]} and test features '
                     f'{test[0].shape[1:]} differ in shape')
  return [*train, *test]


def _check_heads(width, num_heads):
  if width % num_heads:
    raise ValueError(f'width {width} is not divisible by num_heads {num_heads}')


# ----------------------------------------------------------------------------- public probes

def mean_average_precision(scores, targets):
  """Mean over classes of average precision; classes without a positive are skipped (NaN if
  none has one). Tied scores count as one threshold, so the value does not depend on the order
  of the rows: AP = sum over thresholds of (recall step) * precision at that threshold."""
  scores, targets = np.asarray(scores, np.float64), np.asarray(targets) > 0
  if scores.shape != targets.shape or scores.ndim != 2:
    raise ValueError(f'scores {scores.shape} and targets {targets.shape} must both be (N, C)')
  aps = []
  for s, t in zip(scores.T, targets.T):
    if not t.any():
      continue
    order = np.argsort(-s, kind='stable')
    s, t = s[order], t[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]   # last row of each tied group
    true_pos = np.cumsum(t)[last]
    precision, recall = true_pos / (last + 1), true_pos / true_pos[-1]
    aps.append(np.sum(np.diff(np.r_[0.0, recall]) * precision))
  return float(np.mean(aps)) if aps else float('nan')


@functools.lru_cache(maxsize=16)
def _knn(mesh, k, temperature):
  """The jitted kNN vote of a query chunk against a train bank whose rows are split over the
  mesh's batch axes: each shard's k nearest (masked padding rows: -inf), then the k nearest of
  those. Shards are in row order and ``top_k`` puts lower positions first, so equal
  similarities go to the lower train row, as on one device."""
  axes = sharding.BATCH_AXES

  def shard_nearest(bank, targets, inverse_norm, valid, query):
    similarity = jnp.where(valid[None, :], (query @ bank.T) * inverse_norm[None, :], -jnp.inf)
    top, index = jax.lax.top_k(similarity, min(k, bank.shape[0]))
    return top, targets[index]

  nearest = jax.shard_map(shard_nearest, mesh=mesh,
                          in_specs=(P(axes), P(axes), P(axes), P(axes), P()),
                          out_specs=(P(None, axes), P(None, axes)))

  def vote(bank, targets, inverse_norm, valid, query):
    top, votes = nearest(bank, targets, inverse_norm, valid, query)   # (Q, k x shards), (.., C)
    top, pick = jax.lax.top_k(top, k)
    votes = jnp.take_along_axis(votes, pick[..., None], axis=1)
    weights = jnp.exp((top - top[:, :1]) / temperature)   # exp(sim / T) up to a row's factor
    return jnp.einsum('qk,qkc->qc', weights, votes) / weights.sum(1, keepdims=True)

  return jax.jit(vote, out_shardings=sharding.replicated(mesh))


SIMILARITIES = 1 << 22     # a kNN chunk's similarities on one device (16 MB of float32)


def knn_scores(train_x, train_y, test_x, *, kind, num_classes, k=20, temperature=0.07,
               chunk_size=1024, mesh=None):
  """(N_test, num_classes) kNN scores on cosine similarity of L2-normalised pooled features.

  For each test row, the k most similar train rows (equal similarities: lower train row first)
  with weights exp(sim / T); the score is the weighted mean of their one-hot labels ('class':
  the normalised vote) or multi-hot vectors ('multilabel'). ``chunk_size`` test rows at a time,
  fewer where the bank is large (``SIMILARITIES``; the last chunk padded, so one compilation
  and bounded memory). With a ``mesh`` the train
  bank's rows are split over its batch axes (a bank larger than one device's memory); without,
  it sits on one device.
  """
  train_x, train_y, test_x, _ = check_features(train_x, train_y, test_x, None, kind,
                                               num_classes, 2)
  if k < 1:
    raise ValueError(f'k must be positive, got {k}')
  if mesh is None:
    mesh = Mesh(np.asarray(jax.local_devices()[:1]).reshape((1,) * len(sharding.BATCH_AXES)),
                sharding.BATCH_AXES)
  # The bank stays as it is (no normalised copy): each similarity is scaled by its train row's
  # inverse norm on the device.
  inverse_norm = lambda a: 1.0 / np.maximum(np.sqrt(np.einsum('ij,ij->i', a, a)), 1e-12)
  test_x = test_x * inverse_norm(test_x)[:, None]
  train_t = (np.eye(num_classes, dtype=np.float32)[train_y] if kind == 'class'
             else train_y.astype(np.float32))
  pad = -len(train_x) % sharding.data_parallel_size(mesh)
  bank = [np.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)) if pad else a
          for a in (train_x, train_t, inverse_norm(train_x).astype(np.float32))]
  valid = np.arange(len(train_x) + pad) < len(train_x)
  # Every process holds the whole bank and places the rows of its own devices.
  bank, targets, scale, valid = (
      jax.make_array_from_callback(a.shape, sharding.batch_sharding(mesh),
                                   lambda index, a=a: a[index]) for a in (*bank, valid))
  vote = _knn(mesh, min(k, len(train_x)), temperature)
  # At most SIMILARITIES (query, train row) similarities on a device at once: fewer queries a
  # chunk for a larger bank (the chunk's votes, queries x k x shards x classes, come on top).
  rows = bank.shape[0] // sharding.data_parallel_size(mesh)
  chunk = max(1, min(chunk_size, len(test_x), SIMILARITIES // rows))
  padded = np.pad(test_x, ((0, -len(test_x) % chunk), (0, 0)))
  scores = [vote(bank, targets, scale, valid, jnp.asarray(padded[i:i + chunk]))
            for i in range(0, len(padded), chunk)]
  return np.concatenate([np.asarray(s) for s in scores])[:len(test_x)]


def knn_probe(train_x, train_y, test_x, test_y, *, kind, num_classes, k=20, temperature=0.07,
              chunk_size=1024):
  """Weighted kNN (``knn_scores``) scored on test: 'class' accuracy of the argmax vote (ties ->
  lowest class id), 'multilabel' mAP of the scores."""
  _check_split('test', test_x, test_y, kind, num_classes, 2)
  scores = knn_scores(train_x, train_y, test_x, kind=kind, num_classes=num_classes, k=k,
                      temperature=temperature, chunk_size=chunk_size)
  return score(scores, np.asarray(test_y), kind=kind)


def linear_probe(train_x, train_y, test_x, test_y, *, kind, num_classes, config=ProbeConfig(),
                 return_predictions=False):
  """Softmax / sigmoid regression on standardised pooled features (N, D), swept over
  learning_rates x weight_decays on the holdout, best refit on all train.
  Returns {'score', 'learning_rate', 'weight_decay', 'holdout_scores'[, 'predictions']}."""
  train_x, train_y, test_x, test_y = check_features(train_x, train_y, test_x, test_y, kind,
                                                    num_classes, 2)
  grid = [(lr, wd) for lr in config.learning_rates for wd in config.weight_decays]
  return _sweep_and_fit(LinearHead(num_classes), train_x, train_y, test_x, test_y, kind,
                        grid, config, return_predictions)


def _token_probe(model, train_x, train_y, test_x, test_y, kind, config, sweep,
                 return_predictions):
  if sweep:   # learning rates only, at the first weight decay, to keep it cheap
    grid = [(lr, config.weight_decays[0]) for lr in config.learning_rates]
  else:
    grid = [(config.learning_rates[0], config.weight_decays[0])]
  return _sweep_and_fit(model, train_x, train_y, test_x, test_y, kind, grid, config,
                        return_predictions)


def attentive_probe(train_tokens, train_y, test_tokens, test_y, *, kind, num_classes,
                    config=ProbeConfig(), sweep=False, return_predictions=False):
  """MAP attention pooling + linear head on standardised tokens (N, T, D).

  Without ``sweep``: one fit at (learning_rates[0], weight_decays[0]). With it: the learning
  rates are swept at weight_decays[0] on the holdout. Returns the dict of ``linear_probe``."""
  data = check_features(train_tokens, train_y, test_tokens, test_y, kind, num_classes, 3)
  model = AttentiveHead(num_classes, num_heads=config.num_heads)
  return _token_probe(model, *data, kind, config, sweep, return_predictions)


def decoder_probe(train_tokens, train_y, test_tokens, test_y, *, kind, num_classes,
                  config=ProbeConfig(), sweep=False, return_predictions=False):
  """A small transformer decoder (config.decoder_depth layers of config.decoder_queries learned
  queries; self-attention, cross-attention to the frozen tokens (N, T, D), MLP), pooled over the
  queries, linear head. Training and the sweep as ``attentive_probe``."""
  data = check_features(train_tokens, train_y, test_tokens, test_y, kind, num_classes, 3)
  width = config.decoder_width or heads_multiple(data[0].shape[-1], config.num_heads)
  _check_heads(width, config.num_heads)
  model = DecoderHead(num_classes, width=width, depth=config.decoder_depth,
                      num_heads=config.num_heads, num_queries=config.decoder_queries)
  return _token_probe(model, *data, kind, config, sweep, return_predictions)
