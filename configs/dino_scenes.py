"""DINO on the embedded scenes dataset, CPU size.

  python -m annoprop_jax.main train --config=configs/dino_scenes.py --workdir=workdirs/dino
  python -m annoprop_jax.main train --config=configs/dino_scenes.py:tiny --workdir=/tmp/t
"""
from annoprop_jax import configuration


def recipe(objective='dino'):
  """The DINO recipe at CPU size; ``configs/ab_dino_scenes.py`` builds on it."""
  config = configuration.base_config(objective)
  config.batch_size = 64
  config.total_steps = 2000
  config.log_every = 50
  config.checkpoint_every = 500
  config.data.annotation.views.update(num=2, size=32, scale=(0.3, 1.0), colour_jitter=0.4,
                                      grayscale=0.2)
  config.objective.update(num_prototypes=1024, head_hidden_dim=512, head_bottleneck_dim=128,
                          warmup_teacher_temperature_steps=300, freeze_prototypes_steps=100)
  config.optimizer.update(learning_rate=1e-3, warmup_steps=200, weight_decay=0.04,
                          weight_decay_end=0.4, grad_clip_norm=1.0)
  config.target_network.update(rate=0.004, schedule='cosine')
  return config


def get_config(variant=''):
  return configuration.apply_variant(recipe(), variant)
