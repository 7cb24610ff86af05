"""I-JEPA at paper scale on COCO (a baseline of the paper; no AB variant).

Table 7 of the preprint: 4,096 images x 1 view of RandomResizedCrop 0.3-1 and nothing else;
ViT-S/16, 224 px, bf16 (a 14 x 14 patch grid); 800M views; AdamW at 1e-3, weight decay
0.04 -> 0.4, warm-up 40 ImageNet epochs at this batch, no clipping; EMA target rate 0.004 -> 0
(cosine). The public code's masks (4 target blocks of 0.15-0.2, aspect 0.75-1.5; a context
block of 0.85-1 keeping more than 10 patches) and its predictor (384 wide, 12 blocks; the
encoder's 6 heads); mean pooling (the I-JEPA ViT has no class token). COCO 2017 train, prepared
as configs/paper/ab_dino_coco.py says:

  python -m annoprop_jax.main train --config=configs/paper/ijepa_coco.py --workdir=gs://BUCKET/ijepa

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('ijepa')
  configuration.paper_scale(config, annotation_images=4096, annotation_views=1,
                            warmup_steps=40 * configuration.IMAGENET_TRAIN_IMAGES // 4096)
  config.model.pool = 'mean'
  config.data.annotation.update(dataset='coco2017', split='train', max_objects=100)
  config.data.annotation.views.update(scale=(0.3, 1.0), flip=False, colour_jitter=0.0,
                                      grayscale=0.0)
  config.objective.update(min_context=10, predictor_width=384, predictor_depth=12,
                          predictor_num_heads=6)
  config.optimizer.update(weight_decay=0.04, weight_decay_end=0.4, grad_clip_norm=0.0)
  config.target_network.update(rate=0.004, schedule='cosine')
  return configuration.apply_variant(config, variant)
