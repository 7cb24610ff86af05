"""Device mesh, partition rules and global batches.

The mesh has three named axes (``config.mesh``):

  data    pure data parallelism: parameters replicated, batch split.
  fsdp    fully sharded data parallelism: the batch is split over it too, and parameters,
          the EMA target and the optimizer state are sharded over it (gathered per layer by
          XLA when they are used).
  tensor  tensor (Megatron-style) parallelism: attention heads and the MLP's hidden units are
          split over it; the batch is not.

How each array of the train state is partitioned comes from ``mesh.rules``: ``(regex, spec)``
pairs matched (``re.search``) against the array's '/'-joined path, e.g.
``params/encoder/block3/MlpBlock_0/Dense_0/kernel``; the optimizer's moments and the EMA
target have the parameter's path as a suffix, so they follow the same rule. ``spec`` names a
mesh axis (or None) per dimension. The first rule whose spec has the array's rank wins; an axis
that does not divide its dimension is dropped (that dimension is replicated). Arrays no rule
matches are sharded over ``fsdp`` along their largest divisible dimension when they have at
least ``mesh.min_shard_size`` elements, and replicated otherwise.
"""
import functools
import re

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np

from annoprop_jax import errors

AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')     # the example axis of every batch is split over both

# Megatron-style tensor parallelism for Flax's attention and our MlpBlock, FSDP on the other
# dimension. Attention kernels: query/key/value (width, heads, head_dim), out (heads, head_dim,
# width). Lookup tables stay whole: a gather from a table split along its width would hand its
# layout to batch-split activations (XLA then replicates them).
DEFAULT_RULES = (
    (r'box_tokens/tables$', (None, None, None)),
    (r'token_embedding/embedding$', (None, None)),
    (r'(query|key|value)/kernel$', ('fsdp', 'tensor', None)),
    (r'(query|key|value)/bias$', ('tensor', None)),
    (r'out/kernel$', ('tensor', None, 'fsdp')),
    (r'MlpBlock_\d+/Dense_0/kernel$', ('fsdp', 'tensor')),
    (r'MlpBlock_\d+/Dense_0/bias$', ('tensor',)),
    (r'MlpBlock_\d+/Dense_1/kernel$', ('tensor', 'fsdp')),
)


def default_config():
  return dict(data=-1, fsdp=1, tensor=1, rules=DEFAULT_RULES, min_shard_size=2 ** 12)


def mesh_shape(mesh_config, num_devices):
  """(data, fsdp, tensor) sizes with the one -1 resolved; ConfigError if they do not fit."""
  sizes = [mesh_config[a] for a in AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise errors.ConfigError(
        f'mesh sizes must be positive, with at most one -1; got {dict(zip(AXES, sizes))}')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise errors.ConfigError(
          f'mesh {dict(zip(AXES, sizes))} does not divide the {num_devices} devices')
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise errors.ConfigError(
        f'mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices but {num_devices} '
        f'are available; make the sizes multiply to {num_devices} or leave one at -1')
  return tuple(sizes)


def make_mesh(mesh_config, devices=None):
  """The (data, fsdp, tensor) mesh over all (or the given) devices."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(mesh):
  """Leading (example) axis split over the data and fsdp axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def data_parallel_size(mesh):
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def check_batch_size(batch_size, mesh, name='batch_size', microbatches=1):
  n = data_parallel_size(mesh)
  if batch_size % (n * microbatches):
    extra = f' x {microbatches} micro-batches' if microbatches > 1 else ''
    raise errors.ConfigError(
        f'{name}={batch_size} is not divisible by the {n} data-parallel devices '
        f'(mesh data x fsdp){extra}')


@functools.lru_cache(maxsize=16)
def batch_part(mesh):
  """(index, count): the part of every global batch that this process reads and feeds.

  The global batch is split into ``count`` equal consecutive parts along its example axis, one
  per group of processes whose devices hold the same batch shards (the mesh's data x fsdp
  positions). On a data-parallel mesh each process is its own group: (process index, process
  count). Where a mesh axis outside the batch axes (tensor) spans processes, the processes
  along it hold the same shards, so they read the same part, row for row.
  """
  positions = np.ndindex(mesh.devices.shape)
  batch_dims = [AXES.index(a) for a in BATCH_AXES]
  batch_shape = [mesh.devices.shape[d] for d in batch_dims]
  shards = {}
  for position in positions:
    shard = int(np.ravel_multi_index([position[d] for d in batch_dims], batch_shape))
    shards.setdefault(mesh.devices[position].process_index, set()).add(shard)
  mine = sorted(shards[jax.process_index()])
  size = len(mine)
  if (mine != list(range(mine[0], mine[0] + size)) or mine[0] % size
      or any(len(s) != size for s in shards.values())):
    raise errors.ConfigError(
        f'process {jax.process_index()} holds batch shards {mine} of {data_parallel_size(mesh)}: '
        'every process must hold an equal, consecutive block of them; order the mesh so that '
        'each process\'s devices are neighbours along data x fsdp')
  return mine[0] // size, data_parallel_size(mesh) // size


def global_batch(local_batch, mesh):
  """This process's part of a batch (``batch_part``; numpy) -> global jax arrays sharded over
  the batch axes."""
  sharding = batch_sharding(mesh)
  _, parts = batch_part(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, x, (x.shape[0] * parts, *x.shape[1:])), local_batch)


def path_string(path):
  """A tree path as 'a/b/0/c' (dict keys, attribute names and sequence indices)."""
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return '/'.join(parts)


def partition_spec(path, shape, mesh, rules, min_shard_size):
  """The PartitionSpec of one array (see the module docstring)."""
  if not shape:
    return P()
  for pattern, spec in rules:
    if len(spec) == len(shape) and re.search(pattern, path):
      return P(*(axis if axis is not None and mesh.shape[axis] > 1
                 and dim % mesh.shape[axis] == 0 else None
                 for axis, dim in zip(spec, shape)))
  fsdp = mesh.shape['fsdp']
  if fsdp == 1 or int(np.prod(shape)) < min_shard_size:
    return P()
  divisible = [i for i, dim in enumerate(shape) if dim % fsdp == 0]
  if not divisible:
    return P()
  largest = max(divisible, key=lambda i: shape[i])
  return P(*('fsdp' if i == largest else None for i in range(len(shape))))


def tree_shardings(tree, mesh, mesh_config):
  """NamedShardings for every array of ``tree`` (arrays or ShapeDtypeStructs)."""
  rules = tuple(tuple(r) for r in mesh_config.rules)

  def one(path, leaf):
    spec = partition_spec(path_string(path), tuple(leaf.shape), mesh, rules,
                          mesh_config.min_shard_size)
    return NamedSharding(mesh, spec)
  return jax.tree_util.tree_map_with_path(one, tree)


def validate_rules(rules):
  for rule in rules:
    if len(rule) != 2:
      raise errors.ConfigError(
          f'mesh.rules entries are (regex, spec) pairs; got {rule!r}')
    pattern, spec = rule
    try:
      re.compile(pattern)
    except re.error as e:
      raise errors.ConfigError(f'mesh.rules: bad regex {pattern!r}: {e}') from None
    bad = [a for a in spec if a is not None and a not in AXES]
    if bad:
      raise errors.ConfigError(
          f'mesh.rules: {pattern!r} names unknown mesh axes {bad}; the axes are {AXES} or None')
