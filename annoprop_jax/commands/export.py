"""``export``: write the encoder of ``--workdir``'s latest (or ``--step``) checkpoint to
``--output``: ``--format=orbax`` (default; ``evaluation.encoder.load_encoder`` reads it) or
``safetensors`` (timm's names and model config, for timm.create_model + load_state_dict)."""
from absl import logging

from annoprop_jax import checkpoint
from annoprop_jax import configuration
from annoprop_jax import objectives
from annoprop_jax.commands import common
from annoprop_jax.commands import experiment
from annoprop_jax.evaluation import encoder
from annoprop_jax.evaluation import evaluator
from annoprop_jax.evaluation import timm_format

WRITERS = {'orbax': encoder.export, 'safetensors': timm_format.export}


def main(argv):
  del argv
  config = experiment.config(run_config=True)
  logging.set_verbosity(logging.WARNING)
  experiment.join_processes()
  workdir = common.workdir('export')
  if not common.OUTPUT.value:
    common.fail('export needs --output=DIR (a new folder for the encoder)')
  export_format = common.FORMAT.value or 'orbax'
  if export_format not in WRITERS:
    common.fail(f'export --format={export_format}: use orbax (params for load_encoder) or '
                'safetensors (timm)')
  which = objectives.probe_params(config.objective, config.evaluation.params)
  try:
    step, params, target_params = checkpoint.load_params(workdir, common.STEP.value)
    path = WRITERS[export_format](evaluator.probed_encoder(which, params, target_params),
                                  configuration.encoder_config(config), common.OUTPUT.value)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  print(f'exported the {which} encoder of step {step} to {path} ({export_format})')
