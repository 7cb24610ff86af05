"""SimCLR on the embedded scenes dataset, CPU size.

  python -m annoprop_jax.main train --config=configs/simclr_scenes.py --workdir=workdirs/simclr
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('simclr')
  config.batch_size = 128
  config.total_steps = 2000
  config.data.annotation.views.update(num=2, size=32, scale=(0.2, 1.0), colour_jitter=0.4,
                                      grayscale=0.2)
  config.optimizer.update(learning_rate=1e-3, warmup_steps=200, weight_decay=0.04,
                          weight_decay_end=0.4)
  return configuration.apply_variant(config, variant)
