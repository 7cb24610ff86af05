"""One process of a multi-process CPU run (started by test_multihost.py, not collected).

  python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR OUT [MESH;MESH...]

Joins a ``jax.distributed`` run on 127.0.0.1:PORT (when NUM_PROCESSES > 1) with the local CPU
devices that the caller's XLA_FLAGS give it (``conftest.xla_flags``). On the config's mesh, or
on each MESH in turn (e.g. data=2,tensor=2), it reads this process's part of both AB_Sup streams
through the pipeline as training does (``sharding.batch_part``), takes 3 train steps with a
learning rate from the first step, and writes (process 0) OUT.I.json (I: the mesh's index) with
the losses and a checksum of every global batch (gathered from all processes), and OUT.I.npz
with the parameters before and after.
"""
import json
import os
import sys
import zlib


def main():
  process_id, num_processes, port = map(int, sys.argv[1:4])
  data_dir, out = sys.argv[4:6]
  meshes = sys.argv[6].split(';') if len(sys.argv) > 6 else [None]
  from annoprop_jax import multihost  # pylint: disable=g-import-not-at-top
  if num_processes > 1:
    multihost.initialize('auto', f'127.0.0.1:{port}', num_processes, process_id)
  for index, mesh_sizes in enumerate(meshes):
    train_on(mesh_sizes, data_dir, f'{out}.{index}')


def train_on(mesh_sizes, data_dir, out):
  """3 train steps on the mesh MESH_SIZES (None: the config's); process 0 writes OUT.json/.npz."""
  # pylint: disable=g-import-not-at-top
  import jax
  from flax import traverse_util
  from jax.experimental import multihost_utils
  import numpy as np
  from annoprop_jax import aot, configuration, objectives, sharding, train
  from annoprop_jax.data import pipeline

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = configuration.load(os.path.join(repo, 'configs', 'ab_sup_scenes.py:tiny')).unlock()
  config.data.data_dir = data_dir
  config.optimizer.warmup_steps = 0       # every one of the 3 steps updates the params
  if mesh_sizes:
    config.mesh.update(aot.parse_mesh(mesh_sizes))
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  mesh = sharding.make_mesh(config.mesh)
  iterators = {name: iter(ds) for name, ds in pipeline.build_streams(
      config.data, objective.streams, config.seed, *sharding.batch_part(mesh)).items()}
  program = train.build_program(config, mesh, objective,
                                {name: pipeline.zeros_batch(config.data[name])
                                 for name in objective.streams})
  state = program.init(jax.random.PRNGKey(0))
  gather = lambda tree: jax.device_get(multihost_utils.process_allgather(tree, tiled=True))
  before = gather(state.params)
  losses, checksums = [], []
  for _ in range(3):
    local = {name: pipeline.device_part(next(it))
             for name, it in iterators.items()}
    batch = sharding.global_batch(local, mesh)
    whole = gather(batch)       # the global batch, as every process assembled it
    checksums.append({f'{name}/{key}': zlib.crc32(np.ascontiguousarray(value))
                      for name, arrays in whole.items() for key, value in arrays.items()})
    state, metrics = program.train_step(state, batch)
    losses.append(float(metrics['loss']))
  after = gather(state.params)
  if jax.process_index() == 0:
    with open(out + '.json', 'w') as f:
      json.dump({'losses': losses, 'checksums': checksums,
                 'process_count': jax.process_count(), 'device_count': jax.device_count()}, f)
    flat = {f'{when}/{k}': v for when, tree in (('before', before), ('after', after))
            for k, v in traverse_util.flatten_dict(tree, sep='/').items()}
    np.savez(out + '.npz', **flat)


if __name__ == '__main__':
  main()
