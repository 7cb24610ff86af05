"""One process of a multi-process CPU run (started by test_multihost.py, not collected).

  python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR OUT [MESH]

Joins a ``jax.distributed`` run on 127.0.0.1:PORT (when NUM_PROCESSES > 1) with the local CPU
devices that the caller's XLA_FLAGS give it (``conftest.xla_flags``), on the config's mesh or
MESH (e.g. data=2,tensor=2), reads this process's part of both AB_Sup streams through the
pipeline as training does (``sharding.batch_part``), takes 3 train steps with a learning rate
from the first step, and writes (process 0) OUT.json with the losses and a checksum of every global
batch (gathered from all processes), and OUT.npz with the parameters before and after.
"""
import json
import os
import sys
import zlib


def main():
  process_id, num_processes, port = map(int, sys.argv[1:4])
  data_dir, out = sys.argv[4:6]
  mesh_sizes = sys.argv[6] if len(sys.argv) > 6 else None
  import jax  # pylint: disable=g-import-not-at-top
  from annoprop_jax import multihost  # pylint: disable=g-import-not-at-top
  if num_processes > 1:
    multihost.initialize('auto', f'127.0.0.1:{port}', num_processes, process_id)
  # pylint: disable=g-import-not-at-top
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
