"""What a checkpoint step must be to be resumed: its checksums and its layout.

A step stores a checksum of every array and of each process's data-iterator states; a restored
step that disagrees with them is damage (a flipped bit that still decodes). Its layout must be
this run's: the arrays' tree and shapes (``check_shapes``), the number of JAX processes that
saved the iterators (``check_layout``) and the checkpoint format (``check_format``); a step of
another layout is a ``CheckpointMismatchError``: nothing is wrong with it, it is not this run's.
"""
import json
import zlib

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

# The layout of a step, recorded in its run record: 2 since 2026-12-04 (the method state is
# saved as 'method_state', every step has a run record and checksums). Older steps are refused.
FORMAT_VERSION = 2


class CheckpointMismatchError(RuntimeError):
  """A readable checkpoint of another model, data-reading layout or format."""


@jax.jit
def array_checksums(tree):
  """{leaf path: uint32} of the leaves' raw bits b_i: sum of b_i * (2i + 1) mod 2**32, which
  any single flipped bit changes (the weights are odd)."""
  def one(x):
    if x.dtype == jnp.bool_:
      bits = x.astype(jnp.uint32)
    else:
      unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[jnp.dtype(x.dtype).itemsize]
      bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    bits = bits.reshape(-1)
    return jnp.sum(bits * (jnp.arange(bits.size, dtype=jnp.uint32) * 2 + 1), dtype=jnp.uint32)
  return {jax.tree_util.keystr(path): one(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def iterator_checksums(iterators):
  """This process's CRC32 of each iterator's state (json), in stream-name order."""
  return np.array([zlib.crc32(json.dumps(iterators[name].get_state(), sort_keys=True,
                                         default=str).encode())
                   for name in sorted(iterators)], np.uint32)


def checksums(state_tree, iterators):
  """{'state': {leaf: checksum}, 'data_<stream>': [checksum of each process's iterator
  state]}: the json is written by process 0 alone, so it gathers every process's."""
  sums = {'state': {k: int(v) for k, v in jax.device_get(array_checksums(state_tree)).items()}}
  names, local = sorted(iterators), iterator_checksums(iterators)
  if jax.process_count() > 1:
    gathered = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, len(names))
  else:
    gathered = local[None]
  for i, name in enumerate(names):
    sums[f'data_{name}'] = [int(c) for c in gathered[:, i]]
  return sums


def verify(saved, state_tree, iterators):
  """Damage (RuntimeError) unless the restored state and this process's iterators match the
  ``saved`` checksums (no collective: each process checks its own)."""
  arrays = jax.device_get(array_checksums(state_tree))
  bad = sorted(f'state{k}' for k, v in arrays.items() if saved['state'].get(k) != int(v))
  index = jax.process_index()
  for name, crc in zip(sorted(iterators), iterator_checksums(iterators)):
    per_process = saved.get(f'data_{name}', [])
    if index >= len(per_process) or per_process[index] != int(crc):
      bad.append(f'data_{name}')
  if bad:
    raise RuntimeError(f'checksum mismatch in {", ".join(bad[:3])}: a file changed after it was '
                       'written')


def check_format(step_directory, run):
  """CheckpointMismatchError unless the step's run record has this FORMAT_VERSION."""
  version = (run or {}).get('format_version', 1)
  if version != FORMAT_VERSION:
    raise CheckpointMismatchError(
        f'{step_directory} has checkpoint format {version}, and this annoprop_jax reads format '
        f'{FORMAT_VERSION}: start a new run (--config.init_from=WORKDIR starts it from these '
        f'parameters)')


def check_layout(step_directory, iterators):
  """CheckpointMismatchError if the step's iterator states were saved by another number of
  processes (grain keeps one file per process and would only say a file is missing)."""
  count = jax.process_count()
  for name in iterators:
    folder = step_directory / f'data_{name}'
    files = [f.name for f in folder.iterdir()] if folder.is_dir() else []
    saved = {f.rsplit('-of-', 1)[1].split('.')[0] for f in files if '-of-' in f}
    if saved and saved != {str(count)}:
      raise CheckpointMismatchError(
          f'{folder} was saved by {", ".join(sorted(saved))} JAX processes and this run has '
          f'{count}; resume with the same process count, or start a new run from these '
          f'weights with --config.init_from')


def check_shapes(directory, step, abstract_state_tree):
  """CheckpointMismatchError unless step's saved state has this tree's keys and shapes."""
  detail = tree_differences(abstract_state_tree, state_metadata(directory, step))
  if detail:
    raise CheckpointMismatchError(
        f'checkpoint {directory}/{step} holds another model ({detail}); resume with the '
        f'config it was trained with, or start a new workdir (--config.init_from to reuse '
        f'weights of the same shapes)')


def state_metadata(directory, step):
  """The saved state tree's array metadata (shapes, dtypes) of ``step``, arrays unread."""
  with ocp.CheckpointManager(
      directory, item_handlers={'state': ocp.StandardCheckpointHandler()}) as manager:
    metadata = manager.item_metadata(step)['state']
  if not metadata:
    raise FileNotFoundError(f'no state metadata in {directory}/{step}')
  return metadata


def _shapes(tree):
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def tree_differences(want, got):
  """'' if the trees have the same keys and shapes, else what differs (the first few)."""
  want, got = _shapes(want), _shapes(got)
  if want == got:
    return ''
  missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
  differ = [f'{k} {got[k]} (this run: {want[k]})' for k in sorted(want.keys() & got.keys())
            if want[k] != got[k]]
  return '; '.join(filter(None, (
      missing and f'missing {", ".join(missing[:3])}', extra and f'extra {", ".join(extra[:3])}',
      differ and f'shapes {", ".join(differ[:3])}')))
