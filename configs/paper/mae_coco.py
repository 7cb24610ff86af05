"""MAE at paper scale on COCO (a baseline of the paper; no AB variant).

Table 7 of the preprint: 8,192 images x 1 view of RandomResizedCrop 0.2-1 with flips and
nothing else; ViT-S/16, 224 px, bf16; 800M views; AdamW at 2.4e-3 with beta2 0.95, weight decay
0.05, warm-up 10,000 steps, no clipping; 75% of the patches masked; the decoder of the public
MAE (512 wide, 8 blocks, 16 heads). COCO 2017 train, prepared as configs/paper/ab_dino_coco.py
says:

  python -m annoprop_jax.main train --config=configs/paper/mae_coco.py --workdir=gs://BUCKET/mae

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('mae')
  configuration.paper_scale(config, annotation_images=8192, annotation_views=1,
                            warmup_steps=10_000)
  config.data.annotation.update(dataset='coco2017', split='train', max_objects=100)
  config.data.annotation.views.update(scale=(0.2, 1.0), flip=True, colour_jitter=0.0,
                                      grayscale=0.0)
  config.objective.update(decoder_width=512, decoder_depth=8, decoder_num_heads=16)
  config.optimizer.update(learning_rate=2.4e-3, b2=0.95, weight_decay=0.05,
                          weight_decay_end=0.05, grad_clip_norm=0.0)
  return configuration.apply_variant(config, variant)
