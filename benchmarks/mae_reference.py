"""MAE's masks and loss against the official PyTorch MAE (facebookresearch/mae) on the same
inputs: the same noise, images and predictions go through its ``random_masking``,
``patchify`` and ``forward_loss`` and through ``objectives/mae.py``; prints the largest
differences.

  PEER_MAE=MAE_DIR python benchmarks/mae_reference.py

MAE_DIR holds the official ``models_mae.py`` and ``util/pos_embed.py`` (from a snapshot of the
public repository: ``git --git-dir=SNAPSHOT show HEAD:models_mae.py > MAE_DIR/models_mae.py``);
torch comes from the test extra. The official functions are run as they are (as
methods of a stand-in for the model, which is never built), never copied.
"""
import argparse
import importlib.util
import os
import sys
import types

import jax.numpy as jnp
import numpy as np
import torch

from annoprop_jax.objectives import mae


def official_module(directory):
  """The official MaskedAutoencoderViT class. Its timm imports (the encoder blocks, used only
  when the model is built) are stand-ins: the functions compared here do not use them."""
  sys.path.insert(0, directory)                # its `util.pos_embed`
  stand_in = types.ModuleType('timm.models.vision_transformer')
  stand_in.PatchEmbed = stand_in.Block = None
  for name in ('timm', 'timm.models'):
    sys.modules.setdefault(name, types.ModuleType(name))
  sys.modules['timm.models.vision_transformer'] = stand_in
  spec = importlib.util.spec_from_file_location('models_mae', os.path.join(directory,
                                                                           'models_mae.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.MaskedAutoencoderViT


def compare(model_class, batch, size, patch, mask_ratio, norm_pix_loss, seed):
  rng = np.random.default_rng(seed)
  n = (size // patch) ** 2
  noise = rng.random((batch, n), dtype=np.float32)
  images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  predicted = rng.normal(size=(batch, n, patch * patch * 3)).astype(np.float32)

  stand_in = types.SimpleNamespace(patch_embed=types.SimpleNamespace(patch_size=(patch, patch)),
                                   norm_pix_loss=norm_pix_loss)
  stand_in.patchify = lambda imgs: model_class.patchify(stand_in, imgs)
  original_rand = torch.rand
  torch.rand = lambda *shape, **kwargs: torch.from_numpy(noise)     # its noise is ours
  try:
    tokens = torch.arange(n, dtype=torch.float32)[None, :, None].repeat(batch, 1, 1)
    kept_tokens, mask, restore = model_class.random_masking(stand_in, tokens, mask_ratio)
  finally:
    torch.rand = original_rand
  nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  official_patches = model_class.patchify(stand_in, nchw).numpy()
  official_loss = float(model_class.forward_loss(stand_in, nchw, torch.from_numpy(predicted),
                                                 mask))

  keep, ours_restore, masked = mae.masks_from_noise(jnp.asarray(noise), mask_ratio)
  ours_loss = float(mae.mae_loss(jnp.asarray(predicted), jnp.asarray(images), masked, patch,
                                 norm_pix_loss))
  return dict(
      keep_equal=bool(np.array_equal(np.asarray(keep), kept_tokens[..., 0].long().numpy())),
      restore_equal=bool(np.array_equal(np.asarray(ours_restore), restore.numpy())),
      mask_equal=bool(np.array_equal(np.asarray(masked), mask.numpy().astype(bool))),
      patches_max_diff=float(np.abs(np.asarray(mae.patchify(jnp.asarray(images), patch))
                                    - official_patches).max()),
      loss_official=official_loss, loss_ours=ours_loss,
      loss_relative_diff=abs(ours_loss - official_loss) / abs(official_loss))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--peer', default=os.environ.get('PEER_MAE'),
                      help='the folder of the official models_mae.py (or PEER_MAE)')
  args = parser.parse_args(argv)
  if not args.peer or not os.path.exists(os.path.join(args.peer, 'models_mae.py')):
    parser.error('PEER_MAE (or --peer) must name a folder with the official models_mae.py')
  model_class = official_module(args.peer)
  for batch, size, patch, ratio, norm in ((4, 32, 8, 0.75, True), (3, 224, 16, 0.75, True),
                                          (2, 64, 8, 0.6, False), (5, 48, 16, 0.9, True)):
    result = compare(model_class, batch, size, patch, ratio, norm, seed=batch)
    print(f'batch {batch}, {size} px, patch {patch}, mask_ratio {ratio}, norm_pix_loss {norm}: '
          + ', '.join(f'{k} {v:.3g}' if isinstance(v, float) else f'{k} {v}'
                      for k, v in result.items()), flush=True)


if __name__ == '__main__':
  main()
