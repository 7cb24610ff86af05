"""SimCLR: NT-Xent over the annotation batch's augmented views (online parameters only).

With annotation bootstrapping the candidates are the annotation batch's views: p(l | x) is the
target network's softmax over them, Q_AB scores them with a query head (docs/method.md).
"""
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax import errors
from annoprop_jax.models import heads
from annoprop_jax.models import network as network_lib
from annoprop_jax.objectives import method

Network = network_lib.Network


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


class SimCLR(method.Method):
  ab_name = 'ab_simclr'
  probe_params = 'online'

  @staticmethod
  def default_config():
    return ml_collections.ConfigDict(dict(
        name='simclr',
        temperature=0.1,           # fixed, docs/method.md
        head_hidden_dim=512,
        head_dim=128,
        head_layers=2,
    ))

  @staticmethod
  def tiny(config):
    config.update(head_hidden_dim=64, head_dim=32)

  @staticmethod
  def validate(config):
    if config.data.annotation.views.num != 2:
      raise errors.ConfigError(f'simclr needs data.annotation.views.num=2, got '
                               f'{config.data.annotation.views.num}')

  def modules(self, bootstrap):
    c = self.config
    projection = lambda: heads.ProjectionHead(hidden_dim=c.head_hidden_dim, out_dim=c.head_dim,
                                              num_layers=c.head_layers)
    if not bootstrap:
      return dict(head=projection())
    return dict(head=projection(), ab_head=heads.ScaledQueryHead(c.head_dim, 1 / c.temperature),
                ab_candidate_head=projection())

  def base_loss(self, inputs, bootstrap):
    images = inputs.annotation['images']
    pooled = self.encode_views(inputs.params, images,
                               method.online_rng(inputs, 'annotation'))[0]   # (B, 2, D)
    z = self.apply(inputs.params, Network.base, pooled)
    loss, accuracy = nt_xent(z, self.config.temperature)
    metrics = {'simclr_loss': loss, 'simclr_accuracy': accuracy}
    if not bootstrap:
      return method.BaseResult(loss, metrics, inputs.method_state)
    target_pooled = jax.lax.stop_gradient(self.encode_views(inputs.target_params, images)[0])
    return method.BaseResult(
        loss, metrics, inputs.method_state,
        candidates=self._candidates(inputs.params, pooled, z),
        target_candidates=self._candidates(inputs.target_params, target_pooled))

  def _candidates(self, params, pooled, z=None):
    """Every view of the annotation batch is a candidate: (2B, D) embeddings."""
    flat = lambda x: x.reshape(-1, x.shape[-1])
    if z is None:
      z = self.apply(params, Network.base, pooled)
    return method.Candidates(base=flat(z), ab=flat(self.apply(params, Network.ab_candidates,
                                                              pooled)))

  ab_log_probs = method.contrastive_ab_log_probs

  def target_probs(self, inputs, pooled, candidates):
    z = self.apply(inputs.target_params, Network.base, pooled)
    return jax.nn.softmax(z @ candidates.base.T / self.config.temperature, axis=-1)
