"""AB_Sup (our extension) in the decoupled setting: supervised base loss on the single-object
``objects`` split, annotation bootstrapping over the class list on multi-object scenes.

  python -m annoprop_jax.main train --config=configs/ab_sup_scenes.py --workdir=workdirs/ab_sup
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('ab_sup')
  config.batch_size = 64
  config.total_steps = 2000
  config.data.annotation.split = 'objects'
  config.data.annotation.views.update(num=1, size=32, scale=(0.85, 1.0))
  config.data.bootstrap.update(dataset='scenes', split='train', batch_size=16)
  config.data.bootstrap.views.update(num=4, size=32, scale=(0.05, 1.0))
  config.optimizer.update(learning_rate=1e-3, warmup_steps=100, weight_decay=0.05,
                          weight_decay_end=0.05)
  return configuration.apply_variant(config, variant)
