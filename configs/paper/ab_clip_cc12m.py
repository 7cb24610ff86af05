"""AB_CLIP at paper scale on CC12M (docs/method.md: CLIP 69.5 -> AB_CLIP 74.1 ImageNet probe).

Table 7 of the preprint: CLIP's batch is 8,192 images x 1 view of RandomResizedCrop 0.5-1 (no
flips, no colour jitter); AB takes half of its images with captions for the annotation stream
and an eighth for the bootstrap stream: 4,096 x 1 + 1,024 x 4 = 8,192 views per step. ViT-S/16,
224 px, bf16; 800M views; warm-up one CC12M epoch (12.4M pairs) at CLIP's batch; WD 0.1, beta2
0.98; no clipping; EMA rate 0.004 fixed: configs/paper/clip_cc12m.py's recipe (and how CC12M is
prepared) with AB beside it.

  python -m annoprop_jax.main train --config=configs/paper/ab_clip_cc12m.py --workdir=gs://BUCKET/ab_clip

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed, control=weight0|noaction.
"""
import os

from annoprop_jax import configuration

clip_cc12m = configuration.config_module(os.path.join(os.path.dirname(__file__),
                                                      'clip_cc12m.py'))


def get_config(variant=''):
  config = clip_cc12m.recipe('ab_clip', annotation_images=4096, bootstrap_images=1024)
  config.target_network.update(rate=0.004, schedule='constant')
  # The preprint's Alg. 2 sums CLIP's two directions and adds AB at ratio 1.0; CLIP's loss here
  # is their mean, so AB at 0.5 is the same objective up to a factor 2 (AdamW, no clipping:
  # the same updates).
  config.objective.bootstrap.weight = 0.5
  return configuration.apply_variant(config, variant)
