"""The one network of every objective, in one parameter tree.

    encoder              ViT: images -> (pooled vector, patch tokens)
    head                 the method's head on the pooled vector (projection, prototypes, classes)
                         or on the patch tokens (MAE's pixel decoder)
    annotation_encoder   annotations that are not images (CLIP's captions) -> (psi(l), their
                         features, logit scale); optional
    decoder              the box-conditioned annotation decoder: phi_AB(x, a)      } annotation
    ab_head              the method's head on phi_AB                               } bootstrapping
    ab_candidate_head    candidate features -> psi_AB(l), for contrastive methods  } only

The candidate features are the annotation encoder's, or the pooled images when the candidates
are views (SimCLR).

A plain method has ``{'encoder', 'head'}`` (plus its ``annotation_encoder``); the same method
with annotation bootstrapping adds the decoder and the AB heads, and nothing else changes.
"""
from typing import Optional

import flax.linen as nn

from annoprop_jax.models import decoder as decoder_lib
from annoprop_jax.models import vit


class Network(nn.Module):
  encoder_config: vit.EncoderConfig
  head: nn.Module
  annotation_encoder: Optional[nn.Module] = None
  decoder_kwargs: Optional[dict] = None  # AnnotationDecoder keyword arguments (AB only)
  ab_head: Optional[nn.Module] = None
  ab_candidate_head: Optional[nn.Module] = None
  head_reads: str = 'pooled'     # what the head reads: the pooled vector, or 'tokens' (MAE)

  def setup(self):
    self.encoder = vit.ViT(self.encoder_config)
    if self.decoder_kwargs is not None:
      self.decoder = decoder_lib.AnnotationDecoder(**self.decoder_kwargs)

  def encode(self, images, keep=None, kept=None):
    return self.encoder(images, keep, kept)

  def base(self, features, *extra):
    return self.head(features, *extra)

  def embed_annotations(self, annotations):
    return self.annotation_encoder(annotations)

  def decode(self, patch_tokens, moves):
    return self.decoder(patch_tokens, moves)

  def ab(self, phi):
    return self.ab_head(phi)

  def ab_candidates(self, features):
    return self.ab_candidate_head(features)

  def __call__(self, images, moves=None, annotations=None):
    """Touches every submodule (for init)."""
    pooled, tokens = self.encode(images)
    outputs, features = [self.base(tokens if self.head_reads == 'tokens' else pooled)], pooled
    if self.annotation_encoder is not None:
      outputs.append(self.embed_annotations(annotations))
      features = outputs[-1][1]
    if self.decoder_kwargs is not None:
      outputs.append(self.ab(self.decode(tokens, moves)))
    if self.ab_candidate_head is not None:
      outputs.append(self.ab_candidates(features))
    return outputs


def apply(net, params, method, *inputs, rng=None):
  """``net.method(*inputs)`` under ``params``; ``rng``: the key of stochastic depth (a training
  pass of the online network; without it every block is kept)."""
  rngs = {vit.DROP_PATH_RNG: rng} if rng is not None else None
  return net.apply({'params': params}, *inputs, method=method, rngs=rngs)


def encode_views(net, params, images, rng=None):
  """(B, V, S, S, 3) -> pooled (B, V, D), patch tokens (B * V, N, D)."""
  b, v = images.shape[:2]
  pooled, tokens = apply(net, params, Network.encode, images.reshape(b * v, *images.shape[2:]),
                         rng=rng)
  return pooled.reshape(b, v, -1), tokens
