"""CLIP on the embedded scenes dataset's captions (train split), CPU size.

  python -m annoprop_jax.main train --config=configs/clip_scenes.py --workdir=workdirs/clip
  python -m annoprop_jax.main train --config=configs/clip_scenes.py:tiny --workdir=/tmp/t

One view per image, mild crops, no colour jitter (captions name colours) and no flips (captions
say "left of" / "right of"). AdamW with beta2 0.98 and weight decay 0.1 (docs/method.md, CLIP).

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
from annoprop_jax import configuration


def recipe(objective='clip'):
  """The CLIP recipe at CPU size; ``configs/ab_clip_scenes.py`` builds on it."""
  config = configuration.base_config(objective)
  config.data.annotation.batch_size = 128
  config.total_steps = 2000
  config.data.annotation.views.update(num=1, size=32, scale=(0.5, 1.0), colour_jitter=0.0,
                                      grayscale=0.0, flip=False)
  # Captions cut to 48 bytes (one byte = one text token): the scenes' captions run to ~130 bytes
  # (median 116), and with 160 tokens a CLIP step took 6.7x a supervised step of the same batch
  # on the 2-core CPU (0.92 against 6.2 steps/s); with 48, 2.4 steps/s. 48 bytes keep the first
  # object or two ("a medium purple cross above a large grey cross").
  config.data.annotation.max_caption_bytes = 48
  config.objective.update(embed_dim=128, text_width=128, text_depth=2, text_num_heads=4,
                          text_max_len=config.data.annotation.max_caption_bytes + 2)
  config.optimizer.update(learning_rate=1e-3, warmup_steps=200, b2=0.98, weight_decay=0.1,
                          weight_decay_end=0.1)
  config.target_network.update(rate=0.004, schedule='constant')   # fixed for AB_CLIP
  return config


def get_config(variant=''):
  return configuration.apply_variant(recipe(), variant)
