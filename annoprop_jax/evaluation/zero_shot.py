"""Zero-shot classification for the caption methods (CLIP, AB_CLIP, SLIP, SiLC): each class is
the mean of its prompts' caption embeddings (``templates`` with the class name, e.g. 'a {}'),
renormalised; an image's class is the one whose embedding is nearest its image embedding
(cosine), with no training on the task. Retrieval: each image's nearest captions among the
split's, and each caption's nearest images (recall@k). The method gives ``embed_images(params,
images)`` and ``embed_captions(params, caption_bytes)``, both L2-normalised
(``objectives.clip.CLIP``).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=16)
def _jitted(function):
  """One jitted ``function`` per bound method (equal bound methods hash alike), so a later
  evaluation reuses the compilation instead of tracing a new bound method again."""
  return jax.jit(function)


def prompt_bytes(class_names, templates, max_bytes):
  """(C x T, max_bytes) uint8: every template filled with every class name (class-major), as
  the pipeline gives captions (UTF-8, cut to ``max_bytes``, zero-padded)."""
  out = np.zeros((len(class_names) * len(templates), max_bytes), np.uint8)
  for i, text in enumerate(t.format(name) for name in class_names for t in templates):
    encoded = text.encode('utf-8')[:max_bytes]
    out[i, :len(encoded)] = np.frombuffer(encoded, np.uint8)
  return out


def class_embeddings(method, params, class_names, templates, max_bytes):
  """(C, E): each class's prompt embeddings averaged, renormalised."""
  if not class_names or not templates or any('{}' not in t for t in templates):
    raise ValueError(f'zero-shot needs class names and templates with a {{}} for the name; '
                     f'got {len(class_names or ())} names, templates {tuple(templates)}')
  prompts = jnp.asarray(prompt_bytes(class_names, templates, max_bytes))
  embeddings = _jitted(method.embed_captions)(params, prompts)
  mean = embeddings.reshape(len(class_names), len(templates), -1).mean(1)
  return np.asarray(mean / jnp.linalg.norm(mean, axis=-1, keepdims=True))


def logits(method, params, images, classes, batch_size=256):
  """(N, C) cosines of the images (N, S, S, 3) uint8 to the ``class_embeddings``."""
  return embed(method.embed_images, params, images, batch_size) @ classes.T


def embed(function, params, array, batch_size=256):
  """``function(params, batch)`` (a method's ``embed_images`` or ``embed_captions``) over the
  rows of ``array`` (an array, or ``task_data.StreamedImages``) in slices, the last one padded
  (one compilation)."""
  batch, jitted, out = min(batch_size, len(array)), _jitted(function), []
  for start in range(0, len(array), batch):
    rows = np.asarray(array[start:start + batch])        # a slice: StreamedImages read it
    rows = np.pad(rows, ((0, batch - len(rows)),) + ((0, 0),) * (rows.ndim - 1))
    out.append(np.asarray(jitted(params, jnp.asarray(rows))))
  return np.concatenate(out)[:len(array)]


def retrieval_recall(images, captions, caption_bytes, ks=(1, 5)):
  """Recall@k of image -> caption and caption -> image retrieval over N paired rows of
  normalised embeddings: a query is a hit when one of its k nearest (cosine) is its pair, or
  has the same caption text (the scenes repeat captions: 'a large red cross'). Returns
  {'i2t_r<k>': ..., 't2i_r<k>': ...}."""
  similarity = np.asarray(images) @ np.asarray(captions).T          # (images, captions)
  text = np.asarray(caption_bytes)
  same = (text[:, None, :] == text[None, :, :]).all(-1)               # same caption text
  out = {}
  for k in ks:
    nearest_captions = np.argsort(-similarity, axis=1, kind='stable')[:, :k]
    nearest_images = np.argsort(-similarity.T, axis=1, kind='stable')[:, :k]
    rows = np.arange(len(text))[:, None]
    out[f'i2t_r{k}'] = float(same[rows, nearest_captions].any(1).mean())
    out[f't2i_r{k}'] = float(same[rows, nearest_images].any(1).mean())
  return out
