"""Images/s of a config's train step on 1 device and on 8 (simulated) devices, per mesh, in one
run, and the step's FLOPs (XLA cost analysis of the 1-device program).

  python benchmarks/scale_out.py [--config=configs/ab_dino_scenes.py] [--steps=20] [--microbatches=1]

On a CPU the 8 devices are simulated (XLA_FLAGS=--xla_force_host_platform_device_count=8) and
share the machine's cores, so this checks that sharded steps cost little over one device (the
collectives and the layout), not a speed-up. Only the jitted step is timed (synthetic batches
as in ab_step_time.py, no input pipeline).
"""
import argparse
import os
import time

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from ab_step_time import synthetic_stream  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import aot  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import objectives  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

MESHES = (('1 device', 1, dict(data=1, fsdp=1, tensor=1)),
          ('data=8', 8, dict(data=8, fsdp=1, tensor=1)),
          ('fsdp=8', 8, dict(data=1, fsdp=8, tensor=1)),
          ('data=4 tensor=2', 8, dict(data=4, fsdp=1, tensor=2)))


def images_per_sec(config, devices, steps, warmup=3):
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  rng = np.random.default_rng(0)
  batches = [{name: synthetic_stream(rng, config.data[name].batch_size, config.data[name])
              for name in objective.streams} for _ in range(2)]
  mesh = sharding.make_mesh(config.mesh, devices)
  program = train.build_program(config, mesh, objective, batches[0])
  state = program.init(jax.random.PRNGKey(0))
  batches = [sharding.global_batch(b, mesh) for b in batches]
  for i in range(warmup):
    state, metrics = program.train_step(state, batches[i % 2])
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = program.train_step(state, batches[i % 2])
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - start
  images = sum(config.data[name].batch_size for name in objective.streams)
  return images * steps / seconds


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', default='configs/ab_dino_scenes.py')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--microbatches', type=int, default=1)
  args = parser.parse_args()
  config = configuration.load(args.config).unlock()
  config.microbatches = args.microbatches
  config.mesh.update(data=1, fsdp=1, tensor=1)
  report = aot.compile_report(config, jax.devices()[:1])
  streams = objectives.build(config.objective, configuration.encoder_config(config)).streams
  views = sum(config.data[n].views.num * config.data[n].batch_size for n in streams)
  images = sum(config.data[n].batch_size for n in streams)
  print(f'{args.config}: {images} images = {views} views per step, '
        f'{report.flops_per_step:.3e} FLOPs per step (XLA cost analysis), '
        f'{jax.device_count()} {jax.devices()[0].platform} devices on {os.cpu_count()} cores')
  base = None
  for name, count, mesh in MESHES:
    config.mesh.update(**mesh)
    rate = images_per_sec(config, jax.devices()[:count], args.steps)
    base = base or rate
    gflops = rate / images * report.flops_per_step / 1e9
    print(f'  {name:>16}: {rate:8.1f} images/s  ({rate / base:.2f}x of 1 device), '
          f'{gflops:.1f} GFLOP/s', flush=True)


if __name__ == '__main__':
  main()
