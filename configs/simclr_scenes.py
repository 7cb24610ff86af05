"""SimCLR on the embedded scenes dataset, CPU size.

  python -m annoprop_jax.main train --config=configs/simclr_scenes.py --workdir=workdirs/simclr

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
from annoprop_jax import configuration


def recipe(objective='simclr'):
  """The SimCLR recipe at CPU size; ``configs/ab_simclr_scenes.py`` builds on it."""
  config = configuration.base_config(objective)
  config.data.annotation.batch_size = 128
  config.total_steps = 2000
  # Hue jitter 0.5 (any hue): the scenes paint shapes in a few palette colours, and without it
  # two crops of a scene match on colour alone (objects_linear 0.175 -> 0.202 at 192k views).
  # Crops RRC(0.35, 1): chosen on validation (RESULTS.md, issue 33: 0.298; 0.2-1 0.285; the
  # paper's 0.08-1 0.276: small crops of a 64 px scene often miss every object).
  config.data.annotation.views.update(num=2, size=32, scale=(0.35, 1.0), colour_jitter=0.4,
                                      hue_jitter=0.5, grayscale=0.2)
  config.optimizer.update(learning_rate=1e-3, warmup_steps=200, weight_decay=0.04,
                          weight_decay_end=0.4)
  config.target_network.update(rate=0.004, schedule='cosine')
  return config


def get_config(variant=''):
  return configuration.apply_variant(recipe(), variant)
