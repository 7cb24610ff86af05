"""Ahead-of-time check: lower and compile a config's train step for its mesh, without data.

``python -m annoprop_jax.main compile --config=FILE.py [--mesh=data=2,fsdp=4]`` compiles the
step on the devices of the machine it runs on (or on N simulated CPU devices with
``--num_cpu_devices=N``) and prints the FLOPs per step and the memory each device needs, so an
out-of-memory configuration is caught before a launch. The config's mesh and batch sizes are
validated first, each with a one-line error.
"""
import dataclasses
import time

import jax
import numpy as np

from annoprop_jax import configuration
from annoprop_jax import objectives
from annoprop_jax import sharding
from annoprop_jax import train
from annoprop_jax.data import pipeline


def _size(num_bytes):
  return f'{num_bytes / 2**30:.2f} GiB' if num_bytes >= 2**30 else f'{num_bytes / 2**20:.1f} MiB'


def parse_mesh(text):
  """'data=2,fsdp=4' -> {'data': 2, 'fsdp': 4} (the axes not named keep their config value)."""
  sizes = {}
  for part in filter(None, text.split(',')):
    axis, _, size = part.partition('=')
    if axis not in sharding.AXES or not size.lstrip('-').isdigit():
      raise configuration.ConfigError(
          f'--mesh={text!r}: use AXIS=SIZE pairs separated by commas, axes {sharding.AXES}')
    sizes[axis] = int(size)
  return sizes


def check(config, devices):
  """Validates mesh and batch sizes for ``devices``; returns the mesh and the objective."""
  configuration.validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  train.check_batch_sizes(config, mesh, objective.streams)
  return mesh, objective


def lower(config, devices=None):
  """The lowered train step of ``config`` (jax.stages.Lowered) and its mesh."""
  devices = jax.devices() if devices is None else devices
  mesh, objective = check(config, devices)
  shapes = {name: pipeline.batch_shapes(config.data[name], config.data[name].batch_size)
            for name in objective.streams}
  example = {name: pipeline.zeros_batch(config.data[name]) for name in shapes}
  program = train.build_program(config, mesh, objective, example)
  batch = {name: {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in s.items()}
           for name, s in shapes.items()}
  return program.train_step.lower(program.abstract_state, batch), mesh


@dataclasses.dataclass
class Report:
  """What compiling one step showed."""
  platform: str
  mesh: dict
  flops_per_step: float        # XLA's count for the whole (unpartitioned) step, recompute of
                               # model.remat included
  argument_bytes: int          # per device: state and batch shards
  output_bytes: int
  temp_bytes: int              # activations and other temporaries
  alias_bytes: int             # outputs that reuse donated arguments
  compile_seconds: float

  @property
  def bytes_per_device(self):
    return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes

  def lines(self):
    estimate = (' (CPU: an estimate of what an accelerator needs; XLA:CPU does not credit '
                'model.remat)' if self.platform == 'cpu' else '')
    return [
        f'mesh {" ".join(f"{k}={v}" for k, v in self.mesh.items())} on '
        f'{int(np.prod(list(self.mesh.values())))} {self.platform} devices; compiled in '
        f'{self.compile_seconds:.1f} s',
        f'FLOPs per step: {self.flops_per_step:.3e} (XLA cost analysis of the whole step)',
        f'memory per device: {_size(self.bytes_per_device)} = arguments '
        f'{_size(self.argument_bytes)} + outputs {_size(self.output_bytes)} + temporaries '
        f'{_size(self.temp_bytes)} - donated {_size(self.alias_bytes)}{estimate}',
    ]


def flops_per_step(config, devices=None, lowered=None):
  """FLOPs of one optimizer step: XLA's cost analysis of the unpartitioned program (so work
  that every device repeats, such as the update of replicated parameters, counts once). XLA
  counts a loop body once, so a step with micro-batches is counted as the same step without."""
  if lowered is None or config.microbatches > 1:
    config = config.copy_and_resolve_references()
    config.microbatches = 1
    lowered, _ = lower(config, devices)
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan')))


def compile_report(config, devices=None):
  """Compiles the train step of ``config`` and reports its FLOPs and memory per device."""
  lowered, mesh = lower(config, devices)
  start = time.perf_counter()
  compiled = lowered.compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  return Report(
      platform=mesh.devices.flat[0].platform, mesh=dict(mesh.shape),
      flops_per_step=flops_per_step(config, devices, lowered),
      argument_bytes=int(memory.argument_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes),
      temp_bytes=int(memory.temp_size_in_bytes),
      alias_bytes=int(memory.alias_size_in_bytes), compile_seconds=seconds)
