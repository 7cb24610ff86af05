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

from annoprop_jax import errors
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

  def modules(self, bootstrap):
    classifier = lambda: nn.Dense(self.config.num_classes, kernel_init=nn.initializers.zeros)
    return dict(head=classifier(), ab_head=classifier()) if bootstrap else dict(head=classifier())

  def check_data(self, streams_info):
    classes = streams_info['annotation'].num_classes
    if classes is not None and classes != self.config.num_classes:
      raise errors.ConfigError(
          f'objective.num_classes={self.config.num_classes} but dataset '
          f'{streams_info["annotation"].dataset!r} has {classes} classes')

  def check_batch(self, annotation):
    """A class id outside [0, num_classes) (datasets that do not declare their class count are
    caught here, not turned into zero targets)."""
    labels = annotation['labels']
    if labels.size and labels.max() >= self.config.num_classes:
      raise errors.DataError(
          f'the annotation stream has class id {int(labels.max())} but objective.num_classes='
          f'{self.config.num_classes}; set num_classes to the dataset\'s class count')

  def base_loss(self, inputs, bootstrap):
    del bootstrap      # the candidates are the classes
    annotation = inputs.annotation
    pooled = self.encode_views(inputs.params, annotation['images'],
                               method.online_rng(inputs, 'annotation'))[0]
    logits = self.apply(inputs.params, Network.base, pooled)                # (B, V, K)
    targets = label_targets(annotation['labels'], self.config.num_classes,
                            self.config.multi_label)
    loss = -jnp.einsum('bk,bvk->bv', targets, jax.nn.log_softmax(logits, axis=-1)).mean()
    accuracy = (jnp.argmax(logits, -1) == jnp.argmax(targets, -1)[:, None]).mean()
    return method.BaseResult(loss, {'supervised_loss': loss, 'train_accuracy': accuracy},
                             inputs.method_state)

  def ab_log_probs(self, params, phi, candidates):
    del candidates
    return jax.nn.log_softmax(self.apply(params, Network.ab, phi), axis=-1)

  def target_probs(self, inputs, pooled, candidates):
    del candidates
    return jax.nn.softmax(self.apply(inputs.target_params, Network.base, pooled), axis=-1)
