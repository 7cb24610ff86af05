"""``prepare-data``: write the embedded scenes dataset that ``--config`` describes into its
``data.data_dir`` (once; training does it on first use too) and print where."""
from annoprop_jax import configuration
from annoprop_jax.commands import experiment
from annoprop_jax.data import pipeline


def main(argv):
  del argv
  config = experiment.config()
  experiment.join_processes()
  for stream in configuration.streams(config).values():
    if stream.dataset == 'scenes':
      print(pipeline.dataset_directory(config.data, 'scenes'))
      return
