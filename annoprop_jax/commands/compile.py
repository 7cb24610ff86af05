"""``compile``: lower and compile the train step for the config's mesh and print the FLOPs per
step and the memory per device (``--mesh=data=2,fsdp=4``; ``--num_cpu_devices=8`` simulates
CPU devices). On a pod or a cluster, run it as ``train`` runs (every process, the same flags):
the processes join first, so the mesh spans every process's devices."""
from absl import flags
import jax

from annoprop_jax import aot
from annoprop_jax import configuration
from annoprop_jax.commands import common
from annoprop_jax.commands import experiment

MESH = flags.DEFINE_string('mesh', None, 'Mesh sizes, e.g. data=2,fsdp=4,tensor=1.')
NUM_CPU_DEVICES = flags.DEFINE_integer('num_cpu_devices', None,
                                       'Simulate this many CPU devices.')


def main(argv):
  del argv
  config = experiment.config()
  try:
    if MESH.value:
      config.mesh.update(aot.parse_mesh(MESH.value))
    configuration.validate(config)
  except configuration.ConfigError as e:
    common.fail(str(e))
  if NUM_CPU_DEVICES.value:
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', NUM_CPU_DEVICES.value)
  experiment.join_processes()
  try:
    report = aot.compile_report(config)
  except configuration.ConfigError as e:
    common.fail(str(e))
  if jax.process_index() == 0:
    print('\n'.join(report.lines()))
