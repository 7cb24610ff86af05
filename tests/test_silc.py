"""SiLC: CLIP's loss plus distillation_weight x DINO's, each part reading its own inputs (the
caption and first global view; the global views through the EMA teacher and every view through
the student), DINO's centre and prototype freeze kept, and a short run that lowers the loss."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import errors
from annoprop_jax import objectives
from conftest import random_loss_inputs
from conftest import short_run_losses
from conftest import tiny_config


def _objective(**overrides):
  # The distillation on every image of a 6-image batch unless the overrides say otherwise.
  config = tiny_config('silc_scenes', **{'objective.distillation_images': 0, **overrides})
  return random_loss_inputs(config)


def _run(objective, inputs, **changes):
  annotation = {k: v for k, v in changes.items() if k in inputs.batch['annotation']}
  rest = {k: v for k, v in changes.items() if k not in annotation}
  inputs = dataclasses.replace(inputs, batch={'annotation': {**inputs.batch['annotation'],
                                                             **annotation}}, **rest)
  loss, (metrics, state) = objective.loss(inputs)
  return float(loss), float(metrics['clip_loss']), float(metrics['dino_loss']), state


def test_the_loss_adds_distillation_at_its_weight_and_each_part_reads_its_inputs():
  objective, inputs = _objective()
  loss, clip_loss, dino_loss, state = _run(objective, inputs)
  np.testing.assert_allclose(loss, clip_loss + dino_loss, rtol=1e-6)
  half, _ = _objective(**{'objective.distillation_weight': 0.5})
  np.testing.assert_allclose(_run(half, inputs)[0], clip_loss + 0.5 * dino_loss, rtol=1e-6)
  assert not np.allclose(state['center'], inputs.method_state['center'])   # the centre moves
  annotation = inputs.batch['annotation']
  # Other local views: the student's only; another caption: CLIP's only.
  _, clip2, dino2, _ = _run(objective, inputs, local_images=255 - annotation['local_images'])
  assert clip2 == clip_loss and abs(dino2 - dino_loss) > 1e-5
  caption = np.roll(annotation['caption'], 1, axis=1)
  _, clip3, dino3, _ = _run(objective, inputs, caption=caption)
  assert dino3 == dino_loss and abs(clip3 - clip_loss) > 1e-5
  # Another teacher (target network): DINO's part only.
  other = jax.tree.map(lambda p: p * 1.5, inputs.params)
  _, clip4, dino4, _ = _run(objective, inputs, target_params=other)
  assert clip4 == clip_loss and abs(dino4 - dino_loss) > 1e-5


def test_the_prototypes_are_frozen_for_the_first_steps():
  objective, inputs = _objective(**{'objective.freeze_prototypes_steps': 10})
  grad = lambda step: jax.grad(lambda p: objective.loss(dataclasses.replace(
      inputs, params=p, step=jnp.int32(step)))[0])(inputs.params)['head']['parts_dino']
  assert not np.any(grad(0)['prototypes']) and np.any(grad(0)['MLP_0']['out']['kernel'])
  assert np.any(grad(10)['prototypes'])


def test_the_distillation_reads_every_eighth_image_when_given_an_eighth_of_the_batch():
  objective, inputs = _objective()
  eighth, _ = _objective(**{'objective.distillation_images': 2})   # rows 0 and 3 of 6
  annotation = inputs.batch['annotation']
  _, clip_loss, dino_loss, _ = _run(objective, inputs)
  # DINO's part and centre on images 0 and 3 alone; CLIP's on all 6.
  _, _, dino_of_two, centre_of_two = _run(objective, inputs,
                                          **{k: v[::3] for k, v in annotation.items()})
  _, clip_sub, dino_sub, centre_sub = _run(eighth, inputs)
  np.testing.assert_allclose(dino_sub, dino_of_two, rtol=1e-6)
  np.testing.assert_allclose(centre_sub['center'], centre_of_two['center'], rtol=1e-6)
  assert clip_sub == clip_loss and abs(dino_sub - dino_loss) > 1e-5
  # The other images' second global view and local views are not read.
  other = {k: annotation[k].copy() for k in ('images', 'local_images')}
  for array in other.values():
    array[[1, 2, 4, 5], -1] = 255 - array[[1, 2, 4, 5], -1]
  assert _run(eighth, inputs, **other)[2] == dino_sub
  with pytest.raises(errors.ConfigError, match='distillation_images must be 0'):
    objectives.validate(tiny_config('silc_scenes', **{'objective.distillation_images': 5}))


def test_a_short_silc_run_lowers_its_loss(tmp_path, tiny_data_dir):
  _, losses = short_run_losses('silc_scenes', tiny_data_dir, tmp_path)
  assert losses[-1] < losses[0] - 0.3, losses
