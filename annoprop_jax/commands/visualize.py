"""``visualize``: pictures of ``--workdir``'s latest (or ``--step``) checkpoint in ``--out``
(default WORKDIR/visualize): value maps (AB runs), attention maps, the views, training charts,
and an index.html showing them (``--images=A.png,B.jpg``: other images)."""
from absl import flags
from absl import logging

from annoprop_jax import checkpoint_integrity
from annoprop_jax import configuration
from annoprop_jax.commands import common
from annoprop_jax.commands import experiment
from annoprop_jax.evaluation import visualize

OUT = flags.DEFINE_string('out', None, 'The folder for the pictures and index.html (default: '
                          'WORKDIR/visualize).')
IMAGES = flags.DEFINE_list('images', [], "Image files to draw instead of the run's validation "
                           'images.')
NUM_IMAGES = flags.DEFINE_integer('num_images', 4, 'Validation images to draw.')
ANNOTATION = flags.DEFINE_integer('annotation', None, "The annotation l of the value maps "
                                  "(default: the target network's top one of the source view).")


def main(argv):
  del argv
  config = experiment.config(run_config=True)
  logging.set_verbosity(logging.WARNING)
  experiment.join_processes()
  workdir = common.workdir('visualize')
  out = OUT.value or f'{workdir.rstrip("/")}/visualize'
  try:
    index = visualize.visualize(config, configuration.encoder_config(config), workdir, out,
                                common.STEP.value, IMAGES.value, NUM_IMAGES.value,
                                ANNOTATION.value)
  except (FileNotFoundError, ValueError, checkpoint_integrity.CheckpointMismatchError) as e:
    common.fail(str(e))
  print(f'wrote {index}')
