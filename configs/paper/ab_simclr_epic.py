"""AB_SimCLR at paper scale on EpicKitchens frames (docs/method.md: SimCLR 48.1 -> AB 50.6).

The recipe of configs/paper/ab_simclr_coco.py (ViT-S/16, 224 px, 2048 x 2 SimCLR views + 1024 x 4
bootstrap views per step, 800M views) on EPIC-KITCHENS-100 frames at 2 fps, prepared once as in
configs/paper/ab_dino_epic.py:

  python -m annoprop_jax.main prepare --format=video --input=/data/EPIC-KITCHENS --fps=2 \
      --max_image_size=512 --annotations=/data/epic-kitchens-100-annotations/EPIC_100_train.csv \
      --output=~/tensorflow_datasets --name=epic_kitchens
  python -m annoprop_jax.main train --config=configs/paper/ab_simclr_epic.py --workdir=gs://BUCKET/ab_simclr_epic

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed, control=weight0|noaction.
"""
import os

from annoprop_jax import configuration

ab_simclr_coco = configuration.config_module(os.path.join(os.path.dirname(__file__),
                                                          'ab_simclr_coco.py'))


def get_config(variant=''):
  config = ab_simclr_coco.get_config()
  for stream in (config.data.annotation, config.data.bootstrap):
    stream.update(dataset='epic_kitchens', split='train', max_objects=16)
  return configuration.apply_variant(config, variant)
