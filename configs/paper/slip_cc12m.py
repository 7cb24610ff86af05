"""SLIP at paper scale on CC12M (a baseline of the paper; no AB variant).

Table 7 of the preprint: CLIP on 4,096 images x 1 view of RandomResizedCrop 0.5-1 (no flips or
colour jitter), SimCLR on 2,048 of them x 2 views with SimCLR's augmentations (RandomResizedCrop
0.08-1, flips, colour jitter, grey): 4,096 + 2,048 x 2 = 8,192 views per step; the losses added
at ratio 1.0. Table 7 leaves SLIP's optimiser blank: CLIP's here (AdamW 1e-3, WD 0.1, beta2
0.98, warm-up one CC12M epoch, no clipping). ViT-S/16, 224 px, bf16; 800M views. SimCLR reads
every other image of the batch (objective.simclr_images); the host makes the SimCLR views of all
4,096 (a third more augmentation work than the model reads). configs/paper/clip_cc12m.py's
recipe, and CC12M prepared as it says:

  python -m annoprop_jax.main train --config=configs/paper/slip_cc12m.py --workdir=gs://BUCKET/slip

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
import os

from annoprop_jax import configuration

clip_cc12m = configuration.config_module(os.path.join(os.path.dirname(__file__),
                                                      'clip_cc12m.py'))


def get_config(variant=''):
  config = clip_cc12m.recipe('slip', annotation_images=4096, local_views=2,
                             objective_settings=dict(simclr_images=2048,
                                                     simclr_hidden_dim=2048, simclr_dim=256))
  config.data.annotation.local_views.update(size=224, scale=(0.08, 1.0), flip=True,
                                            colour_jitter=0.4, grayscale=0.2)
  return configuration.apply_variant(config, variant)
