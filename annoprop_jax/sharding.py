"""Device mesh and shardings. Today: a data-parallel mesh; params are replicated."""
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from annoprop_jax.configuration import ConfigError

DATA_AXIS = 'data'


def make_mesh(mesh_config, devices=None):
  """A 1-axis ('data') mesh over all (or the given) devices; size -1 means all of them."""
  devices = jax.devices() if devices is None else devices
  size = mesh_config.data
  if size == -1:
    size = len(devices)
  if size != len(devices):
    raise ConfigError(f'mesh.data={mesh_config.data} does not match the {len(devices)} devices')
  return Mesh(np.asarray(devices).reshape(size), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(mesh):
  """Leading (example) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size, mesh, name='batch_size'):
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    raise ConfigError(f'{name}={batch_size} is not divisible by the {n} devices of the data axis')


def global_batch(local_batch, mesh):
  """Process-local numpy batch -> global jax arrays sharded over the data axis."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
