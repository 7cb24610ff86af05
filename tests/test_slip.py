"""SLIP: CLIP's loss on the CLIP view plus simclr_weight x SimCLR's on the two SimCLR views,
each part reading only its own views, and a short run that lowers the loss."""
import dataclasses

import numpy as np
import pytest

from annoprop_jax import errors
from annoprop_jax import objectives
from conftest import random_loss_inputs
from conftest import short_run_losses
from conftest import tiny_config


def _objective(weight=1.0, **overrides):
  # SimCLR on every image of a 6-image batch unless the overrides say otherwise.
  config = tiny_config('slip_scenes', **{'objective.simclr_weight': weight,
                                         'objective.simclr_images': 0, **overrides})
  return random_loss_inputs(config)


def _terms(objective, inputs, **annotation):
  batch = {'annotation': {**inputs.batch['annotation'], **annotation}}
  loss, (metrics, _) = objective.loss(dataclasses.replace(inputs, batch=batch))
  return float(loss), float(metrics['clip_loss']), float(metrics['simclr_loss'])


def test_the_loss_adds_simclr_at_its_weight_and_each_part_reads_its_own_views():
  objective, inputs = _objective(weight=1.0)
  loss, clip_loss, simclr_loss = _terms(objective, inputs)
  np.testing.assert_allclose(loss, clip_loss + simclr_loss, rtol=1e-6)
  half, _ = _objective(weight=0.5)
  np.testing.assert_allclose(_terms(half, inputs)[0], clip_loss + 0.5 * simclr_loss, rtol=1e-6)
  # Other SimCLR pairs (each image's second view from the next image): only the SimCLR part
  # moves; another CLIP view: only the CLIP part.
  annotation = inputs.batch['annotation']
  local = annotation['local_images'].copy()
  local[:, 1] = np.roll(local[:, 1], 1, axis=0)
  _, clip2, simclr2 = _terms(objective, inputs, local_images=local)
  assert clip2 == clip_loss and abs(simclr2 - simclr_loss) > 1e-4
  _, clip3, simclr3 = _terms(objective, inputs, images=255 - annotation['images'])
  assert simclr3 == simclr_loss and abs(clip3 - clip_loss) > 1e-4


def test_simclr_reads_every_other_image_when_given_half_the_batch():
  objective, inputs = _objective()
  half, _ = _objective(**{'objective.simclr_images': 3})
  annotation = inputs.batch['annotation']
  _, clip_loss, _ = _terms(objective, inputs)
  # SimCLR on images 0, 2, 4 alone (a batch of 3 SimCLR pairs), CLIP on all 6.
  _, _, simclr_of_three = _terms(objective, inputs, local_images=annotation['local_images'][::2])
  _, clip_half, simclr_half = _terms(half, inputs)
  np.testing.assert_allclose(simclr_half, simclr_of_three, rtol=1e-6)
  assert clip_half == clip_loss and abs(simclr_half - _terms(objective, inputs)[2]) > 1e-4
  # The other images' SimCLR views are not read.
  local = annotation['local_images'].copy()
  local[1::2] = 255 - local[1::2]
  assert _terms(half, inputs, local_images=local)[2] == simclr_half
  with pytest.raises(errors.ConfigError, match='simclr_images must be 0'):
    objectives.validate(tiny_config('slip_scenes', **{'objective.simclr_images': 5}))


def test_a_short_slip_run_lowers_its_loss(tmp_path, tiny_data_dir):
  _, losses = short_run_losses('slip_scenes', tiny_data_dir, tmp_path)
  assert losses[-1] < losses[0] - 0.3, losses
