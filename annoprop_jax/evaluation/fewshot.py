"""The few-shot probe, as big_vision's few-shot evaluator: closed-form ridge regression from
L2-normalised pooled features to +-1 one-hot targets on a few train examples of each class, the
cheap evaluation to watch during training (``evaluation.probes`` 'fewshot').
"""
import jax
import jax.numpy as jnp
import numpy as np

from annoprop_jax.evaluation import probes

FEWSHOT_L2 = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@jax.jit
def _ridge(x, targets, l2):
  """The closed-form ridge regression of ``targets`` (N, C) on ``x`` (N, D) with a bias (x and
  targets centred on their means): (W, b) = argmin |x W + b - targets|^2 + l2 |W|^2."""
  mean_x, mean_t = x.mean(0), targets.mean(0)
  centred = x - mean_x
  gram = centred.T @ centred + l2 * jnp.eye(x.shape[1], dtype=x.dtype)
  weights = jnp.linalg.solve(gram, centred.T @ (targets - mean_t))
  return weights, mean_t - mean_x @ weights


def _shots(train_y, shots, rng):
  """Rows of ``shots`` train examples of each class (all of a class with fewer), and the other
  rows shuffled, drawn by ``rng``."""
  support = np.concatenate([rng.permutation(np.flatnonzero(train_y == c))[:shots]
                            for c in np.unique(train_y)])
  return support, rng.permutation(np.setdiff1d(np.arange(len(train_y)), support))


def fewshot_probe(train_x, train_y, test_x, test_y, *, num_classes, shots=(1, 5, 10, 25),
                  seeds=3, l2=FEWSHOT_L2, selection_examples=1000):
  """Few-shot accuracy of closed-form ridge regression on L2-normalised pooled features ('class'
  tasks), as big_vision's few-shot evaluator: {shots: accuracy on test, averaged over
  ``seeds``}. For each seed and shot count, ``shots`` train rows of each class are drawn at
  random; a ridge regression to +-1 one-hot targets is solved for each ``l2``, the one with the
  best accuracy on up to ``selection_examples`` of the other train rows kept (test is scored
  once); the prediction is its argmax."""
  train_x, train_y, test_x, test_y = probes.check_features(
      train_x, train_y, test_x, test_y, 'class', num_classes, 2)
  if not shots or min(shots) < 1 or seeds < 1 or not l2 or min(l2) <= 0:
    raise ValueError(f'few-shot needs shots >= 1, seeds >= 1 and positive l2 values; got '
                     f'shots={shots}, seeds={seeds}, l2={l2}')
  normalise = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  train_x, test_x = normalise(train_x), jnp.asarray(normalise(test_x))
  signs = 2 * np.eye(num_classes, dtype=np.float32) - 1
  accuracy = lambda x, y, w, b: float(jnp.mean(jnp.argmax(x @ w + b, -1) == y))
  results = {}
  for count in shots:
    per_seed = []
    for seed in range(seeds):
      support, rest = _shots(train_y, count, np.random.default_rng([seed, count]))
      rest = rest[:selection_examples]
      fits = [_ridge(jnp.asarray(train_x[support]), jnp.asarray(signs[train_y[support]]),
                     np.float32(value)) for value in l2]
      best = (int(np.argmax([accuracy(train_x[rest], train_y[rest], *fit) for fit in fits]))
              if len(l2) > 1 and len(rest) else 0)
      per_seed.append(accuracy(test_x, test_y, *fits[best]))
    results[count] = float(np.mean(per_seed))
  return results
