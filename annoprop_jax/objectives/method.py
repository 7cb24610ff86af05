"""What a base method is, and its plain objective.

A method (one module each: ``simclr``, ``dino``, ``supervised``, ``clip``) is written once. Its
plain objective trains the encoder and ``head`` with its base loss on the annotation batch; with
annotation bootstrapping (``bootstrap.py``) the same method also gives the AB heads, the
candidate annotations they score and the two AB hooks, Q_AB and the target's p(l | x).

An objective has ``streams`` (the batches it reads) and pure ``init(rng, batch) -> (params,
state)`` and ``loss(params, target_params, state, batch, rng, step) -> (loss, (metrics,
state))``, where ``state`` is the method's state beside the parameters (DINO's centre).
"""
import dataclasses
from typing import Any, ClassVar, Optional, Protocol

import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax.models import network as network_lib

Array = Any


@dataclasses.dataclass(frozen=True)
class Candidates:
  """Candidate annotations embedded by one network (online or target), for contrastive methods
  whose annotations are the batch's own (SimCLR's views, CLIP's captions): ``base`` = psi(l),
  scored by p(l | x); ``ab`` = psi_AB(l), scored by Q_AB; ``scale`` = their logit scale."""
  base: Array           # (L, D)
  ab: Array             # (L, D)
  scale: Optional[Array] = None


@dataclasses.dataclass(frozen=True)
class BaseResult:
  """The base loss on the annotation batch and what annotation bootstrapping reuses of it."""
  loss: Array
  metrics: dict
  state: dict                                   # the method state after this step
  candidates: Optional[Candidates] = None       # online network's (None: a fixed label set)
  target_candidates: Optional[Candidates] = None


class Method(Protocol):
  """One base method; ``objectives.METHODS`` maps names to classes of this shape. Methods
  subclass it for the defaults: no state, no extra init inputs, no tiny sizes, no checks."""
  ab_name: ClassVar[str]        # its AB variant's objective name ('ab_' + name; AB_Sup: ab_sup)
  probe_params: ClassVar[str]   # the encoder its probes read by default: 'online' or 'target'

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config        # the ``objective`` block

  @staticmethod
  def default_config() -> ml_collections.ConfigDict:
    """The ``objective`` block (with ``name``)."""
    raise NotImplementedError

  @staticmethod
  def tiny(config: ml_collections.ConfigDict) -> None:
    """Shrinks the ``objective`` block for the ``:tiny`` config variant."""

  @staticmethod
  def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole experiment config for this method; raises errors.ConfigError."""

  def modules(self, encoder_config: dict, bootstrap: bool) -> dict:
    """The ``Network``'s head modules on an encoder of ``encoder_config``: ``head`` (and
    ``annotation_encoder``); with bootstrap also ``ab_head`` (and ``ab_candidate_head``)."""
    raise NotImplementedError

  def init_state(self) -> dict:
    return {}

  def step_params(self, params, step):
    """The parameters every loss of ``step`` reads (DINO freezes its prototypes early)."""
    del step
    return params

  def init_inputs(self, annotation: dict) -> dict:
    """Extra ``Network.__call__`` inputs for init, from a one-image annotation batch."""
    del annotation
    return {}

  def base_loss(self, net, params, target_params, state, annotation, step,
                bootstrap: bool) -> BaseResult:
    """The base loss; with ``bootstrap`` also the online and target candidates."""
    raise NotImplementedError

  def ab_log_probs(self, net, params, phi, candidates: Optional[Candidates]) -> Array:
    """phi_AB (..., W) -> log Q_AB(l | x, a) (..., L) over the candidates."""
    raise NotImplementedError

  def target_probs(self, net, target_params, pooled, candidates: Optional[Candidates], state,
                   step) -> Array:
    """Target-network pooled features (B, V, D) -> p(l | x) (B, V, L)."""
    raise NotImplementedError


def entropy(p):
  """Entropy of distributions over the last axis, in nats."""
  return -jnp.sum(p * jnp.log(jnp.clip(p, 1e-12)), axis=-1)


def contrastive_ab_log_probs(net, params, phi, candidates):
  """Q_AB of the contrastive methods: softmax over l of scale * query(phi) . psi_AB(l)."""
  query, scale = network_lib.apply(net, params, network_lib.Network.ab, phi)
  return jax.nn.log_softmax(scale * query @ candidates.ab.T, axis=-1)


class PlainObjective:
  """A method's base loss alone, on the annotation stream."""
  streams = ('annotation',)

  def __init__(self, method, encoder_config):
    self.method = method
    self.net = network_lib.Network(encoder_kwargs=encoder_config,
                                   **method.modules(encoder_config, bootstrap=False))

  def init(self, rng, batch):
    annotation = batch['annotation']
    params = self.net.init(rng, annotation['images'][:1, 0],
                           **self.method.init_inputs(annotation))['params']
    return params, self.method.init_state()

  def loss(self, params, target_params, state, batch, rng, step):
    del rng
    params = self.method.step_params(params, step)
    result = self.method.base_loss(self.net, params, target_params, state, batch['annotation'],
                                   step, bootstrap=False)
    return result.loss, (result.metrics, result.state)
