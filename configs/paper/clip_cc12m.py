"""CLIP at paper scale on CC12M (docs/method.md: 69.5 ImageNet probe), the base of
configs/paper/ab_clip_cc12m.py, slip_cc12m.py and silc_cc12m.py.

Table 7 of the preprint: 8,192 images x 1 view of RandomResizedCrop 0.5-1 (no flips, no colour
jitter) with their captions; ViT-S/16, 224 px, bf16, a text tower of 12 blocks 384 wide, 512-d
embeddings; AdamW 1e-3, WD 0.1, beta2 0.98, warm-up one CC12M epoch (12.4M pairs) at this batch,
no clipping; 800M views. CC12M as img2dataset downloads it (webdataset tar shards of key.jpg +
key.txt + key.json), prepared once into ~/tensorflow_datasets/cc12m/1.0.0 (one output shard per
tar; the caption feature holds the .txt caption):

  python -m annoprop_jax.main prepare --format=webdataset --input=/data/cc12m \
      --output=~/tensorflow_datasets --name=cc12m
  python -m annoprop_jax.main train --config=configs/paper/clip_cc12m.py --workdir=gs://BUCKET/clip

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
from annoprop_jax import configuration

CC12M_PAIRS = 12_423_374        # Conceptual 12M's image-text pairs (one epoch)
CLIP_BATCH = 8192               # Table 7: CLIP's images a step; its warm-up is counted in these


def recipe(objective='clip', annotation_images=CLIP_BATCH, annotation_views=1,
           objective_settings=None, **scale):
  """CLIP's recipe on CC12M for ``objective`` (a caption method), ``annotation_images`` x
  ``annotation_views`` a step; ``objective_settings`` (set before the schedule is sized: they
  may change the views a step) and ``scale`` (``configuration.paper_scale``'s bootstrap_images,
  local_views) for the methods that build on it."""
  config = configuration.base_config(objective)
  config.objective.update(embed_dim=512, text_width=384, text_depth=12, text_num_heads=6,
                          text_max_len=256, **(objective_settings or {}))
  configuration.paper_scale(config, annotation_images=annotation_images,
                            annotation_views=annotation_views,
                            warmup_steps=CC12M_PAIRS // CLIP_BATCH, **scale)
  for stream in configuration.streams(config).values():
    stream.update(dataset='cc12m', split='train', max_caption_bytes=254, max_objects=1)
  config.data.annotation.views.update(scale=(0.5, 1.0), flip=False, colour_jitter=0.0,
                                      grayscale=0.0)
  config.optimizer.update(b2=0.98, weight_decay=0.1, weight_decay_end=0.1)
  return config


def get_config(variant=''):
  return configuration.apply_variant(recipe(), variant)
