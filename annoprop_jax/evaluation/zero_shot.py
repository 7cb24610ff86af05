"""Zero-shot classification for the caption methods (CLIP, AB_CLIP, SLIP, SiLC): each class is
the mean of its prompts' caption embeddings (``templates`` with the class name, e.g. 'a {}'),
renormalised; an image's class is the one whose embedding is nearest its image embedding
(cosine), with no training on the task. The method gives ``embed_images(params, images)`` and
``embed_captions(params, caption_bytes)``, both L2-normalised (``objectives.clip.CLIP``).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np


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
  embeddings = jax.jit(method.embed_captions)(params, prompts)
  mean = embeddings.reshape(len(class_names), len(templates), -1).mean(1)
  return np.asarray(mean / jnp.linalg.norm(mean, axis=-1, keepdims=True))


@functools.partial(jax.jit, static_argnums=0)
def _image_logits(method, params, images, classes):
  return method.embed_images(params, images) @ classes.T


def logits(method, params, images, classes, batch_size=256):
  """(N, C) cosines of the images (N, S, S, 3) uint8 to the ``class_embeddings``, in batches
  (the last one padded, so one compilation)."""
  images = np.asarray(images)
  batch = min(batch_size, len(images))
  padded = np.pad(images, ((0, -len(images) % batch),) + ((0, 0),) * (images.ndim - 1))
  out = [np.asarray(_image_logits(method, params, jnp.asarray(padded[i:i + batch]), classes))
         for i in range(0, len(padded), batch)]
  return np.concatenate(out)[:len(images)]
