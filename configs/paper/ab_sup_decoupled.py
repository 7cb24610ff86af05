"""AB_Sup (our extension) at paper scale, decoupled: supervised base loss on ImageNet labels,
annotation bootstrapping over the 1000 classes on COCO images.

ViT-S/16, 224 px, bf16; 4096 ImageNet images x 1 view + 1024 COCO images x 4 views = 8192
views per step; 800M views. ImageNet as an ImageFolder tree (INPUT/train/n01440764/*.JPEG,
INPUT/val/<class>/*.JPEG; the class folder is the image-level label, feature ``labels``) and
COCO 2017 from the official download, each prepared once:

  python -m annoprop_jax.main prepare --format=imagefolder --input=/data/imagenet \
      --output=~/tensorflow_datasets --name=imagenet
  python -m annoprop_jax.main prepare --format=coco --input=/data/coco \
      --output=~/tensorflow_datasets --name=coco2017
  python -m annoprop_jax.main train --config=configs/paper/ab_sup_decoupled.py --workdir=gs://BUCKET/ab_sup

tfds's catalogue imagenet2012 (a scalar ``label``, no boxes or captions) works too: add
--config.data.annotation.dataset=imagenet2012 --config.data.annotation.features.labels=label
--config.data.annotation.features.boxes= --config.data.annotation.features.caption=

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed, control=weight0|noaction.
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('ab_sup')
  configuration.paper_scale(config, annotation_images=4096, annotation_views=1,
                            bootstrap_images=1024, warmup_steps=5000)   # not in Table 7
  config.data.annotation.update(dataset='imagenet', split='train', max_objects=1)
  config.data.annotation.features.update(labels='labels', boxes='')
  config.data.annotation.views.update(scale=(0.08, 1.0))
  config.data.bootstrap.update(dataset='coco2017', split='train', max_objects=100)
  config.objective.update(num_classes=1000)
  config.optimizer.update(weight_decay=0.05, weight_decay_end=0.05)
  return configuration.apply_variant(config, variant)
