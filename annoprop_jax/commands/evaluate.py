"""``evaluate``: probe the latest (or ``--step``) checkpoint of ``--workdir`` on the frozen
encoder; print a table and append it to the run's metrics (``--config`` optional: the run's
config.json)."""
from absl import logging

from annoprop_jax import configuration
from annoprop_jax import objectives
from annoprop_jax import sharding
from annoprop_jax.commands import common
from annoprop_jax.commands import experiment
from annoprop_jax.evaluation import evaluator


def main(argv):
  del argv
  config = experiment.config(run_config=True)
  logging.set_verbosity(logging.WARNING)
  experiment.join_processes()
  workdir = common.workdir('evaluate')
  which = objectives.probe_params(config.objective, config.evaluation.params)
  try:
    probes = evaluator.Evaluator(config.evaluation, config.data,
                                 configuration.encoder_config(config),
                                 sharding.make_mesh(config.mesh),
                                 objective_config=config.objective)
    step, results = evaluator.evaluate_checkpoint(probes, workdir, which, config.total_steps,
                                                  common.STEP.value)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  print(evaluator.table(results, step))
