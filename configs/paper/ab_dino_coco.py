"""AB_DINO at paper scale on COCO (docs/method.md: COCO DINO 56.1 -> AB_DINO 59.7).

Table 7 of the preprint: DINO's batch is 1,024 images x (2 global views of RandomResizedCrop
0.4-1 + 8 local views of 0.05-0.4, flips, colour jitter, grey); AB takes half of its images for
the annotation stream, as DINO augments them, and an eighth for the bootstrap stream: 512 x
(2 x 224 px + 8 x 96 px) + 128 x 4 x 224 px = 5,632 views per step (the batch row; the table's
"8,192" for AB does not follow from it). ViT-S/16, bf16; 800M views; warm-up 10 ImageNet epochs
at DINO's batch; 65,536 prototypes; WD 0.04 -> 0.4; grad clip 1; EMA rate 0.004 -> 0 (cosine). Both streams read COCO 2017 train (118,287 images), prepared
once from the official download (INPUT/train2017/, val2017/, annotations/*_train2017.json):

  python -m annoprop_jax.main prepare --format=coco --input=/data/coco \
      --output=~/tensorflow_datasets --name=coco2017
  python -m annoprop_jax.main train --config=configs/paper/ab_dino_coco.py --workdir=gs://BUCKET/ab_dino

tfds's catalogue coco/2017 (built with TensorFlow, array_record) works too; it has no captions:
add --config.data.annotation.dataset=coco/2017 --config.data.annotation.features.caption=
--config.data.bootstrap.dataset=coco/2017 --config.data.bootstrap.features.caption=

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed, control=weight0|noaction.
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('ab_dino')
  configuration.paper_scale(config, annotation_images=512, annotation_views=2, local_views=8,
                            bootstrap_images=128,
                            warmup_steps=10 * configuration.IMAGENET_TRAIN_IMAGES // 1024)
  for stream in (config.data.annotation, config.data.bootstrap):
    stream.update(dataset='coco2017', split='train', max_objects=100)
  config.data.annotation.views.update(scale=(0.4, 1.0), colour_jitter=0.4, grayscale=0.2)
  config.data.annotation.local_views.update(scale=(0.05, 0.4), colour_jitter=0.4, grayscale=0.2)
  config.objective.update(num_prototypes=65536, head_hidden_dim=2048, head_bottleneck_dim=256,
                          warmup_teacher_temperature_steps=3000,
                          freeze_prototypes_steps=1000)
  config.optimizer.update(weight_decay=0.04, weight_decay_end=0.4, grad_clip_norm=1.0)
  config.target_network.update(rate=0.004, schedule='cosine')
  return configuration.apply_variant(config, variant)
