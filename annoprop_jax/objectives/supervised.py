"""Supervised classification from the annotation batch's labels.

Single-label: softmax cross-entropy on the first label. Multi-label (scenes with several
objects): softmax cross-entropy against the normalised multi-hot vector of present classes.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax.models import network


def default_config():
  return ml_collections.ConfigDict(dict(
      name='supervised',
      num_classes=13,             # must equal the dataset's number of classes (checked)
      multi_label=False,
  ))


def label_targets(labels, num_classes, multi_label):
  """(B, M) labels padded with -1 -> (B, num_classes) target distributions."""
  if multi_label:
    hot = jax.nn.one_hot(labels, num_classes).max(axis=1)     # padding (-1) one-hots to zeros
    return hot / jnp.maximum(hot.sum(-1, keepdims=True), 1.0)
  return jax.nn.one_hot(labels[:, 0], num_classes)


class Supervised:
  streams = ('annotation',)

  def __init__(self, config, encoder_config):
    self.config = config
    self.net = network.EncoderWithHead(encoder_config, nn.Dense(
        config.num_classes, kernel_init=nn.initializers.zeros))

  def init(self, rng, batch):
    return self.net.init(rng, batch['annotation']['images'][:1, 0])['params'], {}

  def logits(self, params, images):
    return self.net.apply({'params': params}, images)

  def loss(self, params, target_params, extras, batch, rng, step):
    del target_params, rng, step
    data = batch['annotation']
    images = data['images']
    b, v = images.shape[:2]
    logits = self.logits(params, images.reshape(b * v, *images.shape[2:])).reshape(b, v, -1)
    targets = label_targets(data['labels'], self.config.num_classes, self.config.multi_label)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.einsum('bk,bvk->bv', targets, log_probs).mean()
    accuracy = (jnp.argmax(logits, -1) == jnp.argmax(targets, -1)[:, None]).mean()
    return loss, ({'supervised_loss': loss, 'train_accuracy': accuracy}, extras)
