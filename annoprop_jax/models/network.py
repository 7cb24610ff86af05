"""A ViT encoder with one head on its pooled output: params ``{'encoder': ..., 'head': ...}``."""
import flax.linen as nn

from annoprop_jax.models import vit


class EncoderWithHead(nn.Module):
  encoder: dict          # ViT keyword arguments
  head: nn.Module        # applied to the pooled vector

  @nn.compact
  def __call__(self, images):
    pooled, _ = vit.ViT(**self.encoder, name='encoder')(images)
    return self.head(pooled)
