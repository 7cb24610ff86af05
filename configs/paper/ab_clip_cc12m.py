"""AB_CLIP at paper scale on CC12M (docs/method.md: CLIP 69.5 -> AB_CLIP 74.1 ImageNet probe).

ViT-S/16, 224 px, bf16; 4096 images x 1 view with captions (CLIP) + 1024 images x 4 views
(bootstrap) = 8192 views per step; 800M views; WD 0.1, beta2 0.98; EMA rate 0.004 fixed.
CC12M as img2dataset downloads it (webdataset tar shards of key.jpg + key.txt + key.json),
prepared once into ~/tensorflow_datasets/cc12m/1.0.0 (one output shard per tar; the caption
feature holds the .txt caption):

  python -m annoprop_jax.main prepare --format=webdataset --input=/data/cc12m \
      --output=~/tensorflow_datasets --name=cc12m
  python -m annoprop_jax.main train --config=configs/paper/ab_clip_cc12m.py --workdir=gs://BUCKET/ab_clip
"""
from annoprop_jax import configuration


def get_config(variant=''):
  config = configuration.base_config('ab_clip')
  configuration.paper_scale(config, annotation_images=4096, annotation_views=1)
  for stream in (config.data.annotation, config.data.bootstrap):
    stream.update(dataset='cc12m', split='train', max_caption_bytes=254, max_objects=1)
  config.data.annotation.views.update(scale=(0.5, 1.0), flip=False)
  config.objective.update(embed_dim=512, text_width=384, text_depth=12, text_num_heads=6,
                          text_max_len=256)
  config.optimizer.update(b2=0.98, weight_decay=0.1, weight_decay_end=0.1)
  config.target_network.update(rate=0.004, schedule='constant')
  return configuration.apply_variant(config, variant)
