"""SLIP at paper scale on CC12M (a baseline of the paper; no AB variant).

Table 7 of the preprint: CLIP on 4,096 images x 1 view of RandomResizedCrop 0.5-1 (no flips or
colour jitter), SimCLR on 2,048 of them x 2 views with SimCLR's augmentations (RandomResizedCrop
0.08-1, flips, colour jitter, grey): 4,096 + 2,048 x 2 = 8,192 views per step; the losses added
at ratio 1.0. Table 7 leaves SLIP's optimiser blank: CLIP's here (AdamW 1e-3, WD 0.1, beta2
0.98, warm-up one CC12M epoch, no clipping). ViT-S/16, 224 px, bf16; 800M views. SimCLR reads
every other image of the batch (objective.simclr_images); the host makes the SimCLR views of all
4,096 (a third more augmentation work than the model reads). CC12M prepared as
configs/paper/ab_clip_cc12m.py says:

  python -m annoprop_jax.main train --config=configs/paper/slip_cc12m.py --workdir=gs://BUCKET/slip

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
from annoprop_jax import configuration

CC12M_PAIRS = 12_423_374        # Conceptual 12M's image-text pairs (one epoch)


def get_config(variant=''):
  config = configuration.base_config('slip')
  config.objective.update(simclr_images=2048, embed_dim=512, text_width=384, text_depth=12,
                          text_num_heads=6, text_max_len=256, simclr_hidden_dim=2048,
                          simclr_dim=256)
  configuration.paper_scale(config, annotation_images=4096, annotation_views=1, local_views=2,
                            warmup_steps=CC12M_PAIRS // 8192)
  annotation = config.data.annotation
  annotation.update(dataset='cc12m', split='train', max_caption_bytes=254, max_objects=1)
  annotation.views.update(scale=(0.5, 1.0), flip=False, colour_jitter=0.0, grayscale=0.0)
  annotation.local_views.update(size=224, scale=(0.08, 1.0), flip=True, colour_jitter=0.4,
                                grayscale=0.2)
  config.optimizer.update(b2=0.98, weight_decay=0.1, weight_decay_end=0.1)
  return configuration.apply_variant(config, variant)
