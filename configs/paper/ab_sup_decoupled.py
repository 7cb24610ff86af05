"""AB_Sup (our extension) at paper scale, decoupled: supervised base loss on ImageNet labels,
annotation bootstrapping over the 1000 classes on COCO images.

ViT-S/16, 224 px, bf16; 4096 ImageNet images x 1 view + 1024 COCO images x 4 views = 8192
views per step; 800M views.

  python -m annoprop_jax.main train --config=configs/paper/ab_sup_decoupled.py --workdir=gs://BUCKET/ab_sup
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('ab_sup')
  configuration.paper_scale(config, annotation_images=4096, annotation_views=1)
  config.data.annotation.update(dataset='imagenet2012', split='train')
  config.data.annotation.views.update(scale=(0.08, 1.0))
  config.data.bootstrap.update(dataset='coco/2017', split='train', max_objects=100)
  config.objective.update(num_classes=1000)
  config.optimizer.update(weight_decay=0.05, weight_decay_end=0.05)
  return configuration.apply_variant(config, variant)
