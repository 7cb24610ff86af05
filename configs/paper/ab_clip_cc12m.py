"""AB_CLIP at paper scale on CC12M (docs/method.md: CLIP 69.5 -> AB_CLIP 74.1 ImageNet probe).

Table 7 of the preprint: CLIP's batch is 8,192 images x 1 view of RandomResizedCrop 0.5-1 (no
flips, no colour jitter); AB takes half of its images with captions for the annotation stream
and an eighth for the bootstrap stream: 4,096 x 1 + 1,024 x 4 = 8,192 views per step. ViT-S/16,
224 px, bf16; 800M views; warm-up one CC12M epoch (12.4M pairs) at CLIP's batch; WD 0.1, beta2
0.98; no clipping; EMA rate 0.004 fixed.
CC12M as img2dataset downloads it (webdataset tar shards of key.jpg + key.txt + key.json),
prepared once into ~/tensorflow_datasets/cc12m/1.0.0 (one output shard per tar; the caption
feature holds the .txt caption):

  python -m annoprop_jax.main prepare --format=webdataset --input=/data/cc12m \
      --output=~/tensorflow_datasets --name=cc12m
  python -m annoprop_jax.main train --config=configs/paper/ab_clip_cc12m.py --workdir=gs://BUCKET/ab_clip

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed, control=weight0|noaction.
"""
from annoprop_jax import configuration

CC12M_PAIRS = 12_423_374        # Conceptual 12M's image-text pairs (one epoch)


def get_config(variant=''):
  config = configuration.base_config('ab_clip')
  configuration.paper_scale(config, annotation_images=4096, annotation_views=1,
                            bootstrap_images=1024, warmup_steps=CC12M_PAIRS // 8192)
  for stream in (config.data.annotation, config.data.bootstrap):
    stream.update(dataset='cc12m', split='train', max_caption_bytes=254, max_objects=1)
  config.data.annotation.views.update(scale=(0.5, 1.0), flip=False)
  config.objective.update(embed_dim=512, text_width=384, text_depth=12, text_num_heads=6,
                          text_max_len=256)
  config.optimizer.update(b2=0.98, weight_decay=0.1, weight_decay_end=0.1)
  config.target_network.update(rate=0.004, schedule='constant')
  # The preprint's Alg. 2 sums CLIP's two directions and adds AB at ratio 1.0; CLIP's loss here
  # is their mean, so AB at 0.5 is the same objective up to a factor 2 (AdamW, no clipping:
  # the same updates).
  config.objective.bootstrap.weight = 0.5
  return configuration.apply_variant(config, variant)
