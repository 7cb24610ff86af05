"""``diagnose``: whether an AB run's decoder uses the action, on ``--batches`` batches of the
run's streams (KL of Q to its targets with true and shuffled moves, by IoU); prints a table and
writes WORKDIR/diagnose/step_N.json."""
from absl import flags
from absl import logging

from annoprop_jax import checkpoint_integrity
from annoprop_jax import configuration
from annoprop_jax.commands import common
from annoprop_jax.commands import experiment
from annoprop_jax.evaluation import diagnose

BATCHES = flags.DEFINE_integer('batches', 4, "Batches of the run's streams.")


def main(argv):
  del argv
  config = experiment.config(run_config=True)
  logging.set_verbosity(logging.WARNING)
  experiment.join_processes()
  workdir = common.workdir('diagnose')
  try:
    result = diagnose.diagnose(config, configuration.encoder_config(config), workdir,
                               common.STEP.value, BATCHES.value)
  except (FileNotFoundError, ValueError, checkpoint_integrity.CheckpointMismatchError) as e:
    common.fail(str(e))
  print(diagnose.table(result))
  print(f'wrote {diagnose.write(result, workdir)}')
