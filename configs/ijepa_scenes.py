"""I-JEPA on the embedded scenes dataset, CPU size (a baseline of the paper; no AB variant).

128 images x 1 view of RandomResizedCrop 0.3-1 and nothing else (Table 7 and the public code:
no flips, no colour), 4 target blocks of 0.15-0.2 of the 4 x 4 patch grid and a context block of
0.85-1 without them, a 2-block predictor 64 wide; the EMA target encoder's rate from 0.01 by a
cosine to 0 (the public code: 0.004 -> 0 over ~100k steps; a 2k-step run needs a faster start);
AdamW at 1e-3 with weight decay 0.04 -> 0.4 (Table 7), no gradient clipping; mean pooling (the
I-JEPA ViT has no class token; its probes read the target encoder's mean patch token).

  python -m annoprop_jax.main train --config=configs/ijepa_scenes.py --workdir=workdirs/ijepa

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
from annoprop_jax import configuration


def recipe():
  config = configuration.base_config('ijepa')
  config.data.annotation.batch_size = 128
  config.total_steps = 2000
  config.model.pool = 'mean'
  config.data.annotation.views.update(num=1, size=32, scale=(0.3, 1.0), flip=False,
                                      colour_jitter=0.0, grayscale=0.0)
  config.optimizer.update(learning_rate=1e-3, warmup_steps=200, weight_decay=0.04,
                          weight_decay_end=0.4, grad_clip_norm=0.0)
  config.target_network.update(rate=0.01, schedule='cosine')
  return config


def get_config(variant=''):
  return configuration.apply_variant(recipe(), variant)
