"""The encoder features of a checkpoint's probe splits, kept in the run's folder (local or
gs://) by ``evaluate``, so that a rerun with other probes reads them instead of encoding again.

One ``.npz`` (pooled and token features) and one ``.json`` per task and split role, under
WORKDIR/features/step_N_WHICH/. The JSON names what the features depend on: the encoder
(a fingerprint of its params: each leaf's sum and sum of squares) and the evaluation settings
that choose and shape the images. Other settings: encoded again and overwritten. Another
encoder under the same name (a run restarted in the same folder): one line, nothing read.
"""
import io
import json

import jax
import jax.numpy as jnp
import numpy as np

from annoprop_jax import storage


def fingerprint(params):
  """[sum, sum of squares] of every leaf of ``params``, in float64: reductions on the devices
  where the params are, so sharded params need no gathering."""
  leaves = jax.tree.leaves(params)
  sums = jax.jit(lambda ls: [jnp.stack([jnp.sum(x.astype(jnp.float32)),
                                        jnp.sum(jnp.square(x.astype(jnp.float32)))])
                             for x in ls])(leaves)
  return [float(v) for pair in jax.device_get(sums) for v in pair]


class FeatureCache:
  """Features under ``directory`` for the encoder ``params``."""

  def __init__(self, directory, params):
    self.directory = storage.path(directory)
    self.fingerprint = fingerprint(params)

  def features(self, key, settings, compute):
    """``compute()`` -> (pooled, tokens or None), or what the cache holds for ``key`` with the same
    ``settings`` (a JSON-able dict) and encoder; ValueError if the cache was written for
    another encoder."""
    data, meta = self.directory / f'{key}.npz', self.directory / f'{key}.json'
    if meta.exists():
      recorded = json.loads(meta.read_text())
      if not np.allclose(recorded['params'], self.fingerprint, rtol=1e-5, atol=1e-6):
        raise ValueError(f'the feature cache {self.directory} was written for other encoder '
                         f'params (another run in this folder?); delete it to encode again')
      if recorded['settings'] == settings and data.exists():
        with data.open('rb') as f:
          stored = np.load(io.BytesIO(f.read()))
          tokens = None
          if recorded.get('tokens_dtype'):     # bfloat16 is stored as its bits
            tokens = stored['tokens'].view(jnp.dtype(recorded['tokens_dtype']))
          return stored['pooled'], tokens
    pooled, tokens = compute()
    if jax.process_index() == 0:
      self.directory.mkdir(parents=True, exist_ok=True)
      stored = np.zeros(0) if tokens is None else tokens.view(f'u{tokens.dtype.itemsize}')
      with storage.local_file(data) as tmp, open(tmp, 'wb') as f:
        np.savez(f, pooled=pooled, tokens=stored)
      storage.write_atomically(meta, json.dumps({
          'params': self.fingerprint, 'settings': settings,
          'tokens_dtype': None if tokens is None else tokens.dtype.name}))
    return pooled, tokens
