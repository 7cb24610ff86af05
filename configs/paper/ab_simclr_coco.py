"""AB_SimCLR at paper scale on COCO (docs/method.md: COCO SimCLR 56.2 -> AB_SimCLR 60.2).

Table 7 of the preprint: SimCLR's batch is 4,096 images x 2 views of RandomResizedCrop 0.08-1
with flips and colour jitter (grey 0.2 as SimCLR's own colour distortion; the table is silent);
AB takes half of its images for the annotation stream and an eighth for the bootstrap stream:
2,048 x 2 + 512 x 4 = 6,144 views per step. ViT-S/16, 224 px, bf16, temperature 0.1; 800M
views; warm-up 10 ImageNet epochs at SimCLR's batch; WD 0.04 -> 0.4; no clipping; EMA 0.004 -> 0
(cosine).
Both streams read COCO 2017 train, prepared once (see configs/paper/ab_dino_coco.py for the
catalogue coco/2017 alternative):

  python -m annoprop_jax.main prepare --format=coco --input=/data/coco \
      --output=~/tensorflow_datasets --name=coco2017
  python -m annoprop_jax.main train --config=configs/paper/ab_simclr_coco.py --workdir=gs://BUCKET/ab_simclr

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed, control=weight0|noaction.
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('ab_simclr')
  configuration.paper_scale(config, annotation_images=2048, annotation_views=2,
                            bootstrap_images=512,
                            warmup_steps=10 * configuration.IMAGENET_TRAIN_IMAGES // 4096)
  for stream in (config.data.annotation, config.data.bootstrap):
    stream.update(dataset='coco2017', split='train', max_objects=100)
  config.data.annotation.views.update(scale=(0.08, 1.0), colour_jitter=0.4, grayscale=0.2)
  config.objective.update(head_hidden_dim=2048, head_dim=256)
  config.optimizer.update(weight_decay=0.04, weight_decay_end=0.4)
  config.target_network.update(rate=0.004, schedule='cosine')
  return configuration.apply_variant(config, variant)
