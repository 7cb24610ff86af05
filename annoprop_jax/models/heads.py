"""Heads on the encoder's pooled vector and on phi_AB: projections, prototypes, queries."""
import flax.linen as nn
import jax.numpy as jnp


def l2_normalize(x, axis=-1, eps=1e-6):
  return x * jnp.reciprocal(jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps))


class MLP(nn.Module):
  """Dense-GELU layers; the last layer is linear."""
  hidden_dim: int
  out_dim: int
  num_layers: int = 2

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers - 1):
      x = nn.gelu(nn.Dense(self.hidden_dim, name=f'hidden{i}')(x))
    return nn.Dense(self.out_dim, name='out')(x)


class ProjectionHead(nn.Module):
  """SimCLR projection: MLP then L2 normalisation."""
  hidden_dim: int = 512
  out_dim: int = 128
  num_layers: int = 2

  @nn.compact
  def __call__(self, x):
    return l2_normalize(MLP(self.hidden_dim, self.out_dim, self.num_layers)(x))


class PrototypeHead(nn.Module):
  """DINO head: MLP to a bottleneck, L2 normalise, then cosine logits against K prototypes.

  The prototype matrix is weight-normalised with a fixed unit norm (DINO's norm_last_layer).
  """
  num_prototypes: int = 4096
  hidden_dim: int = 512
  bottleneck_dim: int = 128
  num_layers: int = 3

  @nn.compact
  def __call__(self, x):
    z = l2_normalize(MLP(self.hidden_dim, self.bottleneck_dim, self.num_layers)(x))
    prototypes = self.param('prototypes', nn.initializers.normal(0.02),
                            (self.bottleneck_dim, self.num_prototypes), jnp.float32)
    return z @ l2_normalize(prototypes, axis=0)


class Projection(nn.Module):
  """A linear map without bias, then L2 normalisation (CLIP's joint-space projections)."""
  dim: int

  @nn.compact
  def __call__(self, x):
    return l2_normalize(nn.Dense(self.dim, use_bias=False, name='projection')(x))


class ScaledQueryHead(nn.Module):
  """phi_AB -> L2-normalised query and its learned logit scale (fp32, clamped <= max_scale)."""
  dim: int
  init_scale: float = 10.0
  max_scale: float = 100.0

  @nn.compact
  def __call__(self, phi):
    query = l2_normalize(nn.Dense(self.dim, name='projection')(phi))
    log_scale = self.param('logit_scale', lambda _: jnp.log(jnp.float32(self.init_scale)))
    return query, jnp.minimum(jnp.exp(log_scale), self.max_scale)


class Heads(nn.Module):
  """Several heads on one input, by name (methods that add two losses: SLIP, SiLC):
  ``Heads({'clip': ..., 'simclr': ...})(x, 'clip')``; without a name, every head's output in
  the dict's order (init)."""
  parts: dict

  def __call__(self, x, part=None):
    if part is not None:
      return self.parts[part](x)
    return tuple(head(x) for head in self.parts.values())
