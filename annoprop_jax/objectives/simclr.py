"""SimCLR: NT-Xent over the annotation batch's augmented views (online parameters only)."""
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax.models import heads
from annoprop_jax.models import network


def default_config():
  return ml_collections.ConfigDict(dict(
      name='simclr',
      temperature=0.1,           # fixed, METHOD.md
      head_hidden_dim=512,
      head_dim=128,
      head_layers=2,
  ))


def nt_xent(z, temperature):
  """NT-Xent loss for ``z`` of shape (B, 2, D), L2-normalised.

  Every one of the 2B views is an anchor; its positive is the other view of the same image and
  its negatives the 2B - 2 views of other images. Returns (loss, accuracy of picking the positive).
  """
  b, v, d = z.shape
  if v != 2:
    raise ValueError(f'SimCLR needs exactly 2 views per image, got {v}')
  flat = z.reshape(b * 2, d).astype(jnp.float32)
  logits = flat @ flat.T / temperature
  logits = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, logits)
  positive = jnp.arange(2 * b) ^ 1      # view 2i <-> 2i + 1
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  loss = -jnp.take_along_axis(log_probs, positive[:, None], axis=-1).mean()
  accuracy = (jnp.argmax(logits, axis=-1) == positive).mean()
  return loss, accuracy


class SimCLR:
  """Objective: pure ``init`` and ``loss`` over parameter pytrees."""
  streams = ('annotation',)

  def __init__(self, config, encoder_config):
    self.config = config
    self.net = network.EncoderWithHead(encoder_config, heads.ProjectionHead(
        hidden_dim=config.head_hidden_dim, out_dim=config.head_dim,
        num_layers=config.head_layers))

  def init(self, rng, batch):
    images = batch['annotation']['images']
    params = self.net.init(rng, images[:1, 0])['params']
    return params, {}

  def loss(self, params, target_params, extras, batch, rng, step):
    del target_params, rng, step
    images = batch['annotation']['images']          # (B, 2, S, S, 3)
    b, v = images.shape[:2]
    z = self.net.apply({'params': params}, images.reshape(b * v, *images.shape[2:]))
    loss, accuracy = nt_xent(z.reshape(b, v, -1), self.config.temperature)
    return loss, ({'simclr_loss': loss, 'simclr_accuracy': accuracy}, extras)
