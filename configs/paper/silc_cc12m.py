"""SiLC at paper scale on CC12M (a baseline of the paper; no AB variant).

Table 7 of the preprint: CLIP on 4,096 images x 1 view, DINO's self-distillation on 512 of them
x (2 global views of 224 px + 8 local views of 96 px, RandomResizedCrop 0.4-1 and 0.05-0.4), the
losses added at ratio 1.0, the EMA teacher at rate 0.004 fixed. Table 7 leaves SiLC's optimiser
blank: CLIP's here (AdamW 1e-3, WD 0.1, beta2 0.98, warm-up one CC12M epoch, no clipping), with
DINO's head of configs/paper/ab_dino_coco.py. ViT-S/16, bf16; 800M views.

Two departures, both from reading one batch: CLIP's view is the first global view (crops of
0.4-1 rather than CLIP's 0.5-1, no colour jitter or flips: captions name colours and sides), so
a step reads 4,096 + 512 x 9 = 8,704 distinct views where Table 7 counts 9,216 (the online
network still encodes 9,216: CLIP's pass and the student's); and the host makes every image's
views, of which the self-distillation reads every eighth image's (objective.distillation_images).
configs/paper/clip_cc12m.py's recipe, and CC12M prepared as it says:

  python -m annoprop_jax.main train --config=configs/paper/silc_cc12m.py --workdir=gs://BUCKET/silc

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
import os

from annoprop_jax import configuration

clip_cc12m = configuration.config_module(os.path.join(os.path.dirname(__file__),
                                                      'clip_cc12m.py'))


def get_config(variant=''):
  config = clip_cc12m.recipe(
      'silc', annotation_images=4096, annotation_views=2, local_views=8,
      objective_settings=dict(distillation_images=512, num_prototypes=65536,
                              head_hidden_dim=2048, head_bottleneck_dim=256,
                              warmup_teacher_temperature_steps=3000,
                              freeze_prototypes_steps=1000))
  annotation = config.data.annotation
  annotation.views.update(scale=(0.4, 1.0))          # DINO's global crops; CLIP reads the first
  annotation.local_views.update(scale=(0.05, 0.4), flip=True, colour_jitter=0.4, grayscale=0.2)
  config.target_network.update(rate=0.004, schedule='constant')
  return configuration.apply_variant(config, variant)
