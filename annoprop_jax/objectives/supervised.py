"""Supervised classification from the annotation batch's labels.

Single-label: softmax cross-entropy on the first label. Multi-label (scenes with several
objects): softmax cross-entropy against the normalised multi-hot vector of present classes.
With annotation bootstrapping (AB_Sup) the candidates are the classes: p(l | x) is the target
network's classifier softmax, Q_AB a second classifier on phi_AB.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax.models import network as network_lib
from annoprop_jax.objectives import method

Network = network_lib.Network


def label_targets(labels, num_classes, multi_label):
  """(B, M) labels padded with -1 -> (B, num_classes) target distributions."""
  if multi_label:
    hot = jax.nn.one_hot(labels, num_classes).max(axis=1)     # padding (-1) one-hots to zeros
    return hot / jnp.maximum(hot.sum(-1, keepdims=True), 1.0)
  return jax.nn.one_hot(labels[:, 0], num_classes)


class Supervised(method.Method):
  ab_name = 'ab_sup'
  probe_params = 'online'

  @staticmethod
  def default_config():
    return ml_collections.ConfigDict(dict(
        name='supervised',
        num_classes=13,             # must equal the dataset's number of classes (checked)
        multi_label=False,
    ))

  def modules(self, encoder_config, bootstrap):
    del encoder_config
    classifier = lambda: nn.Dense(self.config.num_classes, kernel_init=nn.initializers.zeros)
    return dict(head=classifier(), ab_head=classifier()) if bootstrap else dict(head=classifier())

  def base_loss(self, net, params, target_params, state, annotation, step, bootstrap):
    del target_params, step, bootstrap      # the candidates are the classes
    pooled = network_lib.encode_views(net, params, annotation['images'])[0]
    logits = network_lib.apply(net, params, Network.base, pooled)           # (B, V, K)
    targets = label_targets(annotation['labels'], self.config.num_classes,
                            self.config.multi_label)
    loss = -jnp.einsum('bk,bvk->bv', targets, jax.nn.log_softmax(logits, axis=-1)).mean()
    accuracy = (jnp.argmax(logits, -1) == jnp.argmax(targets, -1)[:, None]).mean()
    return method.BaseResult(loss, {'supervised_loss': loss, 'train_accuracy': accuracy}, state)

  def ab_log_probs(self, net, params, phi, candidates):
    del candidates
    return jax.nn.log_softmax(network_lib.apply(net, params, Network.ab, phi), axis=-1)

  def target_probs(self, net, target_params, pooled, candidates, state, step):
    del candidates, state, step
    return jax.nn.softmax(network_lib.apply(net, target_params, Network.base, pooled), axis=-1)
