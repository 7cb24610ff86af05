"""AB_DINO at paper scale on COCO (docs/method.md: COCO DINO 56.1 -> AB_DINO 59.7).

ViT-S/16, 224 px, bf16; 2048 images x 2 global views (DINO) + 1024 images x 4 views
(bootstrap) = 8192 views per step; 800M views; 65,536 prototypes; WD 0.04 -> 0.4; grad clip 1;
EMA rate 0.004 -> 0 (cosine). Both streams read COCO 2017 train (118,287 images), prepared
once from the official download (INPUT/train2017/, val2017/, annotations/*_train2017.json):

  python -m annoprop_jax.main prepare --format=coco --input=/data/coco \
      --output=~/tensorflow_datasets --name=coco2017
  python -m annoprop_jax.main train --config=configs/paper/ab_dino_coco.py --workdir=gs://BUCKET/ab_dino

tfds's catalogue coco/2017 (built with TensorFlow, array_record) works too; it has no captions:
add --config.data.annotation.dataset=coco/2017 --config.data.annotation.features.caption=
--config.data.bootstrap.dataset=coco/2017 --config.data.bootstrap.features.caption=
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('ab_dino')
  configuration.paper_scale(config, annotation_images=2048, annotation_views=2)
  for stream in (config.data.annotation, config.data.bootstrap):
    stream.update(dataset='coco2017', split='train', max_objects=100)
  config.data.annotation.views.update(scale=(0.25, 1.0), colour_jitter=0.4, grayscale=0.2)
  config.objective.update(num_prototypes=65536, head_hidden_dim=2048, head_bottleneck_dim=256,
                          warmup_teacher_temperature_steps=3000,
                          freeze_prototypes_steps=1000)
  config.optimizer.update(weight_decay=0.04, weight_decay_end=0.4, grad_clip_norm=1.0)
  config.target_network.update(rate=0.004, schedule='cosine')
  return configuration.apply_variant(config, variant)
