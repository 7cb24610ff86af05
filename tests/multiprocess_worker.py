"""One process of a multi-process CPU run (started by test_multihost.py, not collected).

  python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT DEVICES DATA_DIR OUT

Joins a ``jax.distributed`` run on 127.0.0.1:PORT (when NUM_PROCESSES > 1) with DEVICES local
CPU devices, builds the same global AB_Sup batches (two streams) in every process (the pipeline
read as one process), feeds this process's rows of them, takes 3 train steps and writes the
losses to OUT (process 0).
"""
import json
import os
import sys


def main():
  process_id, num_processes, port, devices = map(int, sys.argv[1:5])
  data_dir, out = sys.argv[5:7]
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  import jax  # pylint: disable=g-import-not-at-top
  from annoprop_jax import multihost  # pylint: disable=g-import-not-at-top
  if num_processes > 1:
    multihost.initialize('auto', f'127.0.0.1:{port}', num_processes, process_id)
  # pylint: disable=g-import-not-at-top
  from annoprop_jax import configuration, objectives, sharding, train
  from annoprop_jax.data import pipeline

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = configuration.load(os.path.join(repo, 'configs', 'ab_sup_scenes.py:tiny'))
  config.data.data_dir = data_dir
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  mesh = sharding.make_mesh(config.mesh)
  batches = {}
  for i, name in enumerate(objective.streams):
    size = train.stream_batch_size(config, name)
    source = pipeline.open_source(config, config.data[name].dataset, config.data[name].split)
    it = iter(pipeline.build_stream(source, config.data[name], global_batch_size=size, seed=i))
    rows = slice(process_id * size // num_processes, (process_id + 1) * size // num_processes)
    batches[name] = [{k: v[rows] for k, v in next(it).items()
                      if k not in pipeline.HOST_ONLY_KEYS} for _ in range(3)]
  program = train.build_program(config, mesh, objective,
                                {name: b[0] for name, b in batches.items()})
  state = program.init(jax.random.PRNGKey(0))
  losses = []
  for step in range(3):
    local = {name: b[step] for name, b in batches.items()}
    state, metrics = program.train_step(state, sharding.global_batch(local, mesh))
    losses.append(float(metrics['loss']))
  if jax.process_index() == 0:
    with open(out, 'w') as f:
      json.dump({'losses': losses, 'process_count': jax.process_count(),
                 'device_count': jax.device_count()}, f)


if __name__ == '__main__':
  main()
