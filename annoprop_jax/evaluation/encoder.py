"""The frozen encoder: features of images from a train state or an exported checkpoint.

``export`` writes a params-only checkpoint (the ViT's parameters and its config) that
``load_encoder`` reads back without the method, optimizer or data state.
"""
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from annoprop_jax import metrics as metrics_lib
from annoprop_jax import sharding
from annoprop_jax import storage
from annoprop_jax.models import vit

ENCODER_CONFIG = 'encoder_config.json'


def features(encoder_config, params, images, mesh, batch_size=256, *, tokens=True,
             token_dtype='float32', num_threads=1, num_workers=0, log=None, log_every_s=30.0):
  """(pooled (N, D) float32, patch tokens (N, T, D) in ``token_dtype``, or None without
  ``tokens``) numpy of uint8 ``images`` (N, S, S, 3): an array, or images read as they are
  encoded (``task_data.StreamedImages``: decoded by grain in ``num_threads`` threads and
  ``num_workers`` worker processes).

  Batches are split over the mesh's batch axes; the last one is padded and the padding
  dropped. With several processes every process passes the same images, reads (and decodes)
  only its rows of each batch, and gets all rows back. ``log`` gets a progress line every
  ``log_every_s`` seconds.
  """
  n = len(images)
  per_step = sharding.data_parallel_size(mesh)
  batch_size = max(per_step, batch_size // per_step * per_step)
  batch_sharding = sharding.batch_sharding(mesh)
  apply = _jitted_apply(encoder_config, mesh, tokens, token_dtype)
  params = jax.device_put(params, sharding.replicated(mesh))
  part, parts = sharding.batch_part(mesh)
  if hasattr(images, 'local_batches'):
    local_batches = images.local_batches(batch_size, part, parts, num_threads, num_workers)
  else:
    local_batches = _local_batches(images, batch_size, part, parts)
  global_shape = (batch_size,) + tuple(images.shape[1:])
  outputs, began = [], time.perf_counter()
  last = began
  for start, local in zip(range(0, n, batch_size), local_batches):
    out = apply(params, jax.make_array_from_process_local_data(batch_sharding, local,
                                                               global_shape))
    outputs.append([x[:n - start] for x in jax.device_get(out)])
    now, done = time.perf_counter(), min(n, start + batch_size)
    if log and now - last >= log_every_s and done < n:
      last, rate = now, done / (now - began)
      log(f'  encoded {done:,}/{n:,} images, {rate:,.0f} images/s, ETA '
          f'{metrics_lib.format_duration((n - done) / rate)}')
  pooled = np.concatenate([o[0] for o in outputs]).astype(np.float32)
  return pooled, np.concatenate([o[1] for o in outputs]) if tokens else None


def _local_batches(images, batch_size, part, parts):
  """This process's rows of each global batch of the array ``images``, the last zero-padded."""
  rows = batch_size // parts
  for start in range(0, len(images), batch_size):
    local = images[start + part * rows:start + (part + 1) * rows]
    yield np.concatenate([local, np.zeros((rows - len(local), *local.shape[1:]), local.dtype)])


@functools.lru_cache(maxsize=8)
def _jitted_apply(encoder_config, mesh, tokens, token_dtype):
  """One jitted encoder per (config, mesh, outputs): every features() call and evaluation
  reuses its compilation (all batches are padded to one shape). The tokens are cast on the
  devices, so a bfloat16 cache moves half the bytes."""
  model = vit.ViT(encoder_config)

  def apply(p, x):
    pooled, patch_tokens = model.apply({'params': p}, x)
    return (pooled, patch_tokens.astype(token_dtype)) if tokens else (pooled,)

  return jax.jit(apply, in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
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
