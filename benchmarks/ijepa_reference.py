"""I-JEPA's blocks and loss against the public PyTorch code (facebookresearch/ijepa): its
``MaskCollator`` sizes and places the blocks, and ``objectives/ijepa.py`` places its own at the
corners the collator drew; its loss path (``F.layer_norm``, ``apply_masks``,
``repeat_interleave_batch``, ``F.smooth_l1_loss``, the calls of its ``src/train.py``) and ours
read the same tokens, blocks and predictions. Prints what agrees and the largest differences.

  PEER_IJEPA=SNAPSHOT_DIR python benchmarks/ijepa_reference.py

SNAPSHOT_DIR holds the public repository's ``src/`` (``git --git-dir=SNAPSHOT archive HEAD src |
tar -x -C SNAPSHOT_DIR``); torch comes from the test extra. Its functions run as they are, never
copied.
"""
import argparse
import os
import sys

import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from annoprop_jax.objectives import ijepa

TARGET_SCALE, ASPECT, CONTEXT_SCALE = (0.15, 0.2), (0.75, 1.5), (0.85, 1.0)


def official(directory):
  """The public code's collator class and the two tensor helpers its train loop calls."""
  sys.path.insert(0, directory)
  from src.masks import multiblock  # pylint: disable=g-import-not-at-top
  from src.masks import utils  # pylint: disable=g-import-not-at-top
  from src.utils import tensors  # pylint: disable=g-import-not-at-top

  class Recording(multiblock.MaskCollator):
    """The collator as it is, remembering each block it placed (its complement marks it)."""

    def _sample_block_mask(self, b_size, acceptable_regions=None):
      mask, complement = super()._sample_block_mask(b_size, acceptable_regions)
      self.placed.append((mask, complement))
      return mask, complement

  return Recording, utils.apply_masks, tensors.repeat_interleave_batch


def compare_sizes(collator_class, grid, draws=2000):
  """Block sizes from the same uniform numbers: how many of ``draws`` differ."""
  collator = collator_class(input_size=grid, patch_size=1)
  differ = {}
  for scale, aspect in ((TARGET_SCALE, ASPECT), (CONTEXT_SCALE, (1.0, 1.0))):
    want, u = [], []
    for seed in range(draws):
      generator = torch.Generator()
      generator.manual_seed(seed)
      want.append(collator._sample_block_size(generator, scale, aspect))  # pylint: disable=protected-access
      generator.manual_seed(seed)
      u.append(torch.rand(1, generator=generator).item())
    for name, xp, dtype in (('numpy', np, np.float64), ('jax float32', jnp, jnp.float32)):
      h, w = ijepa.block_size(xp.asarray(u, dtype), scale, aspect, grid, xp)
      got = np.stack([np.asarray(h), np.asarray(w)], -1)
      differ[name] = differ.get(name, 0) + int((got != np.array(want)).any(-1).sum())
  return {f'sizes differing ({k}, of {2 * draws})': v for k, v in differ.items()}


def _corner_and_size(complement, grid):
  rows, cols = np.nonzero(complement.numpy().reshape(grid, grid) == 0)
  return (rows.min(), cols.min()), (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)


def compare_masks(collator_class, grid, batch, min_keep, steps=20):
  """Whole steps of the collator (4 target blocks, one context per image): our target blocks
  and contexts at its corners against its masks (the context before its cut to the batch's
  shortest, which is our departure: reported as the patches it drops). Its target blocks too
  must hold more than ``min_keep`` patches, or it draws forever."""
  collator = collator_class(input_size=grid, patch_size=1, enc_mask_scale=CONTEXT_SCALE,
                            pred_mask_scale=TARGET_SCALE, aspect_ratio=ASPECT, nenc=1, npred=4,
                            min_keep=min_keep)
  torch.manual_seed(0)
  equal_targets = equal_contexts = images = relaxed = 0
  dropped = []
  for _ in range(steps):
    collator.placed = []
    _, contexts_cut, _ = collator([torch.zeros(1)] * batch)
    placed = [collator.placed[i * 5:(i + 1) * 5] for i in range(batch)]
    target_corners = [[_corner_and_size(c, grid)[0] for _, c in blocks[:4]] for blocks in placed]
    context_corners = [[_corner_and_size(blocks[4][1], grid)[0]] for blocks in placed]
    target_size = _corner_and_size(placed[0][0][1], grid)[1]
    context_size = _corner_and_size(placed[0][4][1], grid)[1]
    targets, contexts = map(np.asarray, ijepa.place_blocks(
        jnp.array(target_corners), target_size, jnp.array(context_corners), context_size, grid,
        min_keep))
    for i, blocks in enumerate(placed):
      want_targets = np.zeros((4, grid * grid), bool)
      for m, (mask, _) in enumerate(blocks[:4]):
        want_targets[m, mask.reshape(-1).numpy()] = True
      want_context = np.zeros(grid * grid, bool)
      want_context[blocks[4][0].reshape(-1).numpy()] = True
      relaxed += int(want_context.sum()) <= min_keep or (want_context & want_targets.any(0)).any()
      equal_targets += np.array_equal(targets[i], want_targets)
      equal_contexts += np.array_equal(contexts[i], want_context)
      dropped.append(int(want_context.sum()) - contexts_cut[0].shape[-1])
      images += 1
  return {'target blocks equal': f'{equal_targets}/{images}',
          'contexts equal': f'{equal_contexts}/{images}',
          'contexts the collator relaxed': relaxed,
          'context patches its cut drops (mean, max)':
              f'{np.mean(dropped):.1f}, {max(dropped)} of {grid * grid}'}


def compare_loss(collator_class, apply_masks, repeat_interleave_batch, grid, batch, dim, seed):
  """The loss on the same target-encoder tokens, target blocks and predictions."""
  collator = collator_class(input_size=grid, patch_size=1, enc_mask_scale=CONTEXT_SCALE,
                            pred_mask_scale=TARGET_SCALE, aspect_ratio=ASPECT, nenc=1, npred=4,
                            min_keep=2)
  torch.manual_seed(seed)
  collator.placed = []
  _, contexts, masks_pred = collator([torch.zeros(1)] * batch)
  rng = np.random.default_rng(seed)
  tokens = rng.normal(size=(batch, grid * grid, dim)).astype(np.float32) * 3 + 1
  t = masks_pred[0].shape[-1]
  z = rng.normal(size=(4 * batch, t, dim)).astype(np.float32)
  # The public train loop: targets from the layer-normed tokens, one copy per context.
  h = F.layer_norm(torch.from_numpy(tokens), (dim,))
  h = repeat_interleave_batch(apply_masks(h, masks_pred), batch, repeat=len(contexts))
  want = float(F.smooth_l1_loss(torch.from_numpy(z), h))
  targets = jnp.asarray(np.stack([m.numpy() for m in masks_pred], 1))       # (B, M, T)
  wanted = ijepa.target_tokens(jnp.asarray(tokens), targets)
  predicted = jnp.asarray(z.reshape(4, batch, t, dim).transpose(1, 0, 2, 3))
  got = float(ijepa.ijepa_loss(predicted, wanted, jnp.ones(targets.shape, bool)))
  return {'loss official': f'{want:.6g}', 'loss ours': f'{got:.6g}',
          'relative diff': f'{abs(got - want) / want:.1e}'}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--peer', default=os.environ.get('PEER_IJEPA'),
                      help='the folder holding the public code\'s src/ (or PEER_IJEPA)')
  args = parser.parse_args(argv)
  if not args.peer or not os.path.exists(os.path.join(args.peer, 'src', 'masks',
                                                      'multiblock.py')):
    parser.error('PEER_IJEPA (or --peer) must name a folder with the public src/masks/'
                 'multiblock.py')
  collator_class, apply_masks, repeat_interleave_batch = official(args.peer)
  for grid, batch, min_keep in ((4, 16, None), (8, 16, 2), (14, 16, 10), (16, 16, 10)):
    results = compare_sizes(collator_class, grid)
    if min_keep is None:   # it draws 1 x 1 targets here, which the collator cannot hold
      results['blocks and loss'] = 'not compared (a 1-patch block is a 0-d tensor to it)'
    else:
      results.update(**compare_masks(collator_class, grid, batch, min_keep),
                     **compare_loss(collator_class, apply_masks, repeat_interleave_batch, grid,
                                    batch, dim=32, seed=grid))
    print(f'grid {grid} x {grid}, batch {batch}, min_keep {min_keep}: '
          + ', '.join(f'{k} {v}' for k, v in results.items()), flush=True)


if __name__ == '__main__':
  main()
