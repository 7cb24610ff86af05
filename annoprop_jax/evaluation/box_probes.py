"""Probes of localised semantics: each object of a scene classified from the frozen patch
tokens of its box (the analogue of the paper's COCO small-object classification).

Features of one object, from its image's tokens (N, P, D) on a g x g patch grid:
  pooled  the tokens averaged over the box, each patch weighted by the part of it inside the box
          (for the linear and kNN probes)
  marked  every token with one more channel, the part of its patch inside the box, so that an
          attentive or decoder probe can find the box (the box conditions the attention);
          a cls-pooled encoder's CLS token first, with 0 in that channel
Scores are the accuracy over all objects and by object size (``SIZE_BINS``, box area).
"""
import numpy as np

# Box area as a fraction of the image: the scenes' objects span ~0.04-0.3.
SIZE_BINS = (('small', 0.0, 0.1), ('medium', 0.1, 0.2), ('large', 0.2, 1.01))


def patch_overlap(boxes, grid):
  """(N, 4) boxes (ymin, xmin, ymax, xmax in [0, 1]) -> (N, grid * grid): the fraction of each
  patch (row-major) inside the box."""
  edges = np.arange(grid + 1) / grid

  def along(lo, hi):                                     # (N,) -> (N, grid)
    return np.clip(np.minimum(hi[:, None], edges[1:]) - np.maximum(lo[:, None], edges[:-1]),
                   0.0, None) * grid

  rows, cols = along(boxes[:, 0], boxes[:, 2]), along(boxes[:, 1], boxes[:, 3])
  return (rows[:, :, None] * cols[:, None, :]).reshape(len(boxes), grid * grid)


def object_features(tokens, image_index, boxes, cls=None):
  """Per-object (pooled (M, D), marked tokens (M, P, D + 1)) of the objects' images' tokens;
  with the images' ``cls`` tokens (N, D) the marked tokens start with it (overlap 0)."""
  grid = int(round(np.sqrt(tokens.shape[1])))
  if grid * grid != tokens.shape[1]:
    raise ValueError(f'{tokens.shape[1]} tokens are not a square grid of patches')
  overlap = patch_overlap(boxes, grid).astype(np.float32)
  tokens = tokens[image_index].astype(np.float32, copy=False)     # also bfloat16 tokens
  weights = overlap / np.maximum(overlap.sum(axis=1, keepdims=True), 1e-9)
  pooled = np.einsum('mp,mpd->md', weights, tokens)
  marked = np.concatenate([tokens, overlap[..., None]], axis=-1)
  if cls is not None:
    first = np.concatenate([cls[image_index], np.zeros((len(image_index), 1), cls.dtype)], -1)
    marked = np.concatenate([first[:, None], marked], axis=1)
  return pooled, marked


def accuracy_by_size(logits, targets, boxes):
  """{'': overall accuracy, '_small': ..., '_medium': ..., '_large': ...}; a bin without
  objects is left out."""
  correct = np.argmax(logits, axis=-1) == targets
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  scores = {'': float(correct.mean())}
  for name, lo, hi in SIZE_BINS:
    in_bin = (area >= lo) & (area < hi)
    if in_bin.any():
      scores[f'_{name}'] = float(correct[in_bin].mean())
  return scores
