"""The frozen encoder: features of images from a train state or an exported checkpoint.

``export`` writes a params-only checkpoint (the ViT's parameters and its config) that
``load_encoder`` reads back without the method, optimizer or data state.
"""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from annoprop_jax import sharding
from annoprop_jax import storage
from annoprop_jax.models import vit

ENCODER_CONFIG = 'encoder_config.json'


def features(encoder_config, params, images, mesh, batch_size=256):
  """(pooled (N, D), patch tokens (N, T, D)) float32 numpy of uint8 ``images`` (N, S, S, 3).

  Batches are split over the mesh's batch axes; the last one is padded and the padding
  dropped. With several processes every process passes the same images and gets all rows.
  """
  n = len(images)
  per_step = sharding.data_parallel_size(mesh)
  batch_size = max(per_step, batch_size // per_step * per_step)
  batch_sharding = sharding.batch_sharding(mesh)
  apply = _jitted_apply(encoder_config, mesh)
  params = jax.device_put(params, sharding.replicated(mesh))
  pooled, tokens = [], []
  part, parts = sharding.batch_part(mesh)
  for start in range(0, n, batch_size):
    batch = images[start:start + batch_size]
    pad = batch_size - len(batch)
    if pad:
      batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
    rows = batch_size // parts
    local = batch[part * rows:(part + 1) * rows]
    out = apply(params, jax.make_array_from_process_local_data(batch_sharding, local,
                                                               batch.shape))
    p, t = jax.device_get(out)
    pooled.append(p[:batch_size - pad])
    tokens.append(t[:batch_size - pad])
  return np.concatenate(pooled).astype(np.float32), np.concatenate(tokens).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _jitted_apply(encoder_config, mesh):
  """One jitted encoder per (config, mesh): every features() call and evaluation reuses its
  compilation (all batches are padded to one shape)."""
  model = vit.ViT(encoder_config)
  return jax.jit(lambda p, x: model.apply({'params': p}, x),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


def export(params, encoder_config, directory):
  """Writes the encoder's params and config to ``directory`` (a new folder)."""
  directory = storage.path(directory)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / 'params', params)
  if jax.process_index() == 0:
    storage.write_atomically(directory / ENCODER_CONFIG,
                             json.dumps(encoder_config.to_dict(), indent=2, sort_keys=True))
  return directory


def load_encoder(directory):
  """(vit.EncoderConfig, params) of an ``export``ed encoder, which ``vit.ViT`` applies:
  ``ViT(config).apply({'params': params}, images)`` -> (pooled, patch tokens)."""
  directory = storage.path(directory)
  path = directory / ENCODER_CONFIG
  if not path.exists():
    raise FileNotFoundError(f'{directory} is not an exported encoder (no {ENCODER_CONFIG})')
  encoder_config = vit.EncoderConfig.from_dict(json.loads(path.read_text()))
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(directory / 'params')
  return encoder_config, jax.tree.map(jnp.asarray, params)
