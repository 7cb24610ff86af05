"""This codebase's MAE train step beside the official PyTorch MAE step, on this CPU, in one run.

At one size (ViT width 192, depth 4, 3 heads, patch 8, 64 px, 64 images, 75% masked, a decoder
128 wide, 2 blocks, 4 heads, float32, 2 threads each): the official step is
facebookresearch/mae's ``MaskedAutoencoderViT`` forward (its masking, encoder, decoder and
loss), backward and ``torch.optim.AdamW`` (betas 0.9, 0.95, as its ``main_pretrain.py``; weight
decay on every parameter, where it spares biases and norms: the same work), without its CUDA
autocast and loss scaler (a CPU has neither). Ours is ``configs/mae_scenes.py`` at that size, the
whole jitted train step. They alternate, A B A B, ``--rounds`` rounds of ``--steps`` steps, and
each round prints both rates and their ratio:

  PEER_MAE=MAE_DIR python benchmarks/mae_step_time.py

MAE_DIR holds the official ``models_mae.py`` and ``util/pos_embed.py``, as for
``benchmarks/mae_reference.py``. Its model is built from timm's ``PatchEmbed`` and ``Block``
(the test extra's timm): today's ``Block`` no longer takes the ``qk_scale=None`` that the
official code passes (the default it always was), so a stand-in module drops that one argument;
and its ``util/pos_embed.py`` uses ``np.float``, gone since numpy 1.24, put back as ``float``.
"""
import argparse
import functools
import importlib.util
import os
import sys
import time
import types

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab_step_time  # pylint: disable=g-import-not-at-top,wrong-import-position

from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax.evaluation import timm_format  # pylint: disable=g-import-not-at-top,wrong-import-position

timm_vit = timm_format.import_timm().models.vision_transformer

SIZE = dict(width=192, depth=4, num_heads=3, patch=8, image=64, batch=64, decoder_width=128,
            decoder_depth=2, decoder_num_heads=4, mask_ratio=0.75)


def official_model_class(directory):
  """The official MaskedAutoencoderViT, its timm imports timm's own (``qk_scale`` dropped)."""
  def block(*args, qk_scale=None, **kwargs):
    assert qk_scale is None                       # the official code passes only None
    return timm_vit.Block(*args, **kwargs)

  np.float = float        # the official util/pos_embed.py uses np.float, gone since numpy 1.24
  stand_in = types.ModuleType('timm.models.vision_transformer')
  stand_in.PatchEmbed, stand_in.Block = timm_vit.PatchEmbed, block
  sys.modules['timm.models.vision_transformer'] = stand_in
  sys.path.insert(0, directory)                # its `util.pos_embed`
  try:
    spec = importlib.util.spec_from_file_location('models_mae',
                                                  os.path.join(directory, 'models_mae.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.modules['timm.models.vision_transformer'] = timm_vit
  return module.MaskedAutoencoderViT


class OfficialStep:
  """The official model's forward, backward and AdamW step on one random batch."""

  def __init__(self, model_class):
    s = SIZE
    self.model = model_class(
        img_size=s['image'], patch_size=s['patch'], embed_dim=s['width'], depth=s['depth'],
        num_heads=s['num_heads'], decoder_embed_dim=s['decoder_width'],
        decoder_depth=s['decoder_depth'], decoder_num_heads=s['decoder_num_heads'], mlp_ratio=4,
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6), norm_pix_loss=True)
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1.5e-4, betas=(0.9, 0.95),
                                       weight_decay=0.05)
    self.images = torch.randn(s['batch'], 3, s['image'], s['image'])

  def step(self):
    loss, _, _ = self.model(self.images, mask_ratio=SIZE['mask_ratio'])
    loss.backward()
    self.optimizer.step()
    self.optimizer.zero_grad()
    return float(loss.detach())

  def steps_per_sec(self, steps):
    self.step()
    start = time.perf_counter()
    for _ in range(steps):
      self.step()
    return steps / (time.perf_counter() - start)


class OurStep(ab_step_time.StepTimer):
  """configs/mae_scenes.py at SIZE: the jitted train step, donating its state."""

  def __init__(self):
    s = SIZE
    config = configuration.load(os.path.join(ab_step_time.CONFIGS, 'mae_scenes.py'))
    config.model.update(width=s['width'], depth=s['depth'], num_heads=s['num_heads'],
                        patch_size=s['patch'])
    config.data.annotation.batch_size = s['batch']
    config.data.annotation.views.size = s['image']
    config.objective.update(decoder_width=s['decoder_width'], decoder_depth=s['decoder_depth'],
                            decoder_num_heads=s['decoder_num_heads'], mask_ratio=s['mask_ratio'])
    super().__init__(configuration.validate(config), donate=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--peer', default=os.environ.get('PEER_MAE'),
                      help='the folder of the official models_mae.py (or PEER_MAE)')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--threads', type=int, default=2, help="torch's intra-op threads")
  args = parser.parse_args(argv)
  if not args.peer or not os.path.exists(os.path.join(args.peer, 'models_mae.py')):
    parser.error('PEER_MAE (or --peer) must name a folder with the official models_mae.py')
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  official, ours = OfficialStep(official_model_class(args.peer)), OurStep()
  print(f'backend {jax.default_backend()}, torch {torch.__version__} ({args.threads} threads), '
        f'size {SIZE}', flush=True)
  for r in range(args.rounds):
    theirs, mine = official.steps_per_sec(args.steps), ours.steps_per_sec(args.steps)
    print(f'round {r + 1}: official {theirs:.2f} steps/s, ours {mine:.2f} steps/s | '
          f'ours / official {mine / theirs:.2f}x', flush=True)


if __name__ == '__main__':
  main()
