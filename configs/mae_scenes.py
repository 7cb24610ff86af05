"""MAE on the embedded scenes dataset, CPU size (a baseline of the paper; no AB variant).

128 images x 1 view of RandomResizedCrop 0.2-1 with flips and nothing else (Table 7), 75% of
the 16 patches masked, a 2-block decoder 128 wide; AdamW with beta2 0.95 and weight decay 0.05
(Table 7's lr 2.4e-3 is for batch 8192: 1e-3 here, as the other scenes configs).

  python -m annoprop_jax.main train --config=configs/mae_scenes.py --workdir=workdirs/mae

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
from annoprop_jax import configuration


def recipe():
  config = configuration.base_config('mae')
  config.data.annotation.batch_size = 128
  config.total_steps = 2000
  config.data.annotation.views.update(num=1, size=32, scale=(0.2, 1.0), colour_jitter=0.0,
                                      grayscale=0.0)
  config.optimizer.update(learning_rate=1e-3, warmup_steps=200, b2=0.95, weight_decay=0.05,
                          weight_decay_end=0.05, grad_clip_norm=0.0)
  return config


def get_config(variant=''):
  return configuration.apply_variant(recipe(), variant)
