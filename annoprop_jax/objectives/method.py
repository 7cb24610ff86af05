"""What a method is, what its loss reads, and the objective the training loop calls.

A method (one module each: ``simclr``, ``dino``, ``supervised``, ``clip``) is a ``Method``: it
holds its network (``net``: the ViT, its heads and, with annotation bootstrapping, the annotation
decoder and AB heads) and writes its base loss once. Its plain objective (``PlainObjective``)
trains the encoder and head with that loss on the annotation batch; with annotation bootstrapping
(``bootstrap.AnnotationBootstrapping``) the same method also scores the candidate annotations
with Q_AB and gives the target network's p(l | x).

The training loop sees an ``Objective``: the streams it reads and pure functions,
``init(rng, batch) -> (params, method_state)`` and ``loss_terms(LossInputs) -> ({loss name:
loss}, (metrics, method_state))``, whose sum is ``loss``. The *method state* is what a method
carries beside its parameters from step to step (DINO's centre), in ``TrainState.method_state``.
"""
import abc
import dataclasses
from typing import Any, ClassVar, Optional, Protocol

import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax import errors
from annoprop_jax.models import network as network_lib
from annoprop_jax.models import vit

Array = Any
MethodState = dict          # {name: array}; {} for a method without one


@dataclasses.dataclass(frozen=True)
class LossInputs:
  """What the loss of one step reads."""
  params: Any                 # the online network
  target_params: Any          # the EMA target network
  method_state: MethodState
  batch: dict                 # {stream: batch of arrays}
  step: Array                 # optimizer steps taken before this one
  rng: Array                  # this step's key, for methods that sample (masks, noise)
  training: bool = False      # True: a training step (stochastic depth on); evaluations of the
                              # loss (diagnose, value maps) keep the default

  @property
  def annotation(self):
    return self.batch['annotation']


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
  method_state: MethodState                     # after this step
  candidates: Optional[Candidates] = None       # online network's (None: a fixed label set)
  target_candidates: Optional[Candidates] = None


class Objective(Protocol):
  """What the training loop, ``compile``, the evaluations and the benchmarks call."""
  streams: tuple            # the batches a step reads: ('annotation',) or with 'bootstrap'
  method: 'Method'

  def init(self, rng: Array, batch: dict) -> tuple:
    """(params, method state) for batches shaped like ``batch`` (any batch size)."""

  def loss_terms(self, inputs: LossInputs) -> tuple:
    """({loss name: loss}, (metrics, method state after the step)); they add up to the loss
    (clipping per loss clips each one's gradient apart)."""

  def loss(self, inputs: LossInputs) -> tuple:
    """(loss, (metrics, method state after the step))."""


def total_loss(objective, inputs):
  """``objective.loss``: (the sum of the loss terms, (metrics, method state))."""
  terms, aux = objective.loss_terms(inputs)
  return sum(terms.values()), aux


class Method(abc.ABC):
  """One base method and its network; ``objectives.METHODS`` maps names to subclasses.

  ``decoder`` (the annotation decoder's keyword arguments) builds the network of the method's
  AB variant: the decoder and the AB heads join the encoder and the head.
  """
  ab_name: ClassVar[Optional[str]]   # its AB variant's objective name ('ab_' + name; AB_Sup:
                                     # ab_sup); None: none (MAE)
  probe_params: ClassVar[str]   # the encoder its probes read by default: 'online' or 'target'
  tiny_grid: ClassVar[int] = 2  # patches per side of the ``:tiny`` variant's 16 px views

  def __init__(self, config: ml_collections.ConfigDict, encoder_config: vit.EncoderConfig,
               decoder: Optional[dict] = None):
    self.config = config                  # the ``objective`` block
    self.encoder_config = encoder_config
    self.net = network_lib.Network(encoder_config=encoder_config, decoder_kwargs=decoder,
                                   **self.modules(bootstrap=decoder is not None))

  @staticmethod
  @abc.abstractmethod
  def default_config() -> ml_collections.ConfigDict:
    """The ``objective`` block (with ``name``)."""

  @abc.abstractmethod
  def modules(self, bootstrap: bool) -> dict:
    """The network's modules beside the encoder: ``head`` (and ``annotation_encoder``); with
    ``bootstrap`` also ``ab_head`` (and ``ab_candidate_head``)."""

  @abc.abstractmethod
  def base_loss(self, inputs: LossInputs, bootstrap: bool) -> BaseResult:
    """The base loss on ``inputs.annotation``; with ``bootstrap`` also the online and target
    networks' candidates (contrastive methods)."""

  @abc.abstractmethod
  def ab_log_probs(self, params, phi: Array, candidates: Optional[Candidates]) -> Array:
    """phi_AB (..., W) -> log Q_AB(l | x, a) (..., L) over the candidates."""

  @abc.abstractmethod
  def target_probs(self, inputs: LossInputs, pooled: Array,
                   candidates: Optional[Candidates]) -> Array:
    """The target network's pooled features (B, V, D) -> p(l | x) (B, V, L), under
    ``inputs.target_params``."""

  @staticmethod
  def tiny(config: ml_collections.ConfigDict) -> None:
    """Shrinks the ``objective`` block for the ``:tiny`` config variant."""

  @staticmethod
  def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole experiment config for this method; raises errors.ConfigError."""

  @staticmethod
  def annotation_views(config: ml_collections.ConfigDict) -> int:
    """The annotation stream's views one step reads, each counted once (the paper's
    accounting of views seen): every image's views and local views, unless the method reads
    some of them for only a subset of the images (SLIP, SiLC)."""
    annotation = config.data.annotation
    return annotation.batch_size * (annotation.views.num + annotation.local_views.num)

  def check_data(self, streams_info: dict) -> None:
    """Checks what the streams read ({stream: pipeline.StreamInfo}) before training starts;
    raises errors.ConfigError."""

  def check_batch(self, annotation: dict) -> None:
    """Checks a host batch of the annotation stream; raises errors.DataError."""

  def init_state(self) -> MethodState:
    return {}

  def init_inputs(self, annotation: dict) -> dict:
    """Extra ``Network.__call__`` inputs for init, from a one-image annotation batch."""
    del annotation
    return {}

  def step_params(self, params, step):
    """The parameters every loss of ``step`` reads (DINO freezes its prototypes early)."""
    del step
    return params

  def apply(self, params, function, *inputs, rng=None):
    """``net.function(*inputs)`` under ``params`` (function: a ``Network`` method); ``rng``:
    stochastic depth's key."""
    return network_lib.apply(self.net, params, function, *inputs, rng=rng)

  def encode_views(self, params, images, rng=None):
    """(B, V, S, S, 3) -> pooled (B, V, D), patch tokens (B * V, N, D); ``rng``: stochastic
    depth's key (``online_rng``) in the online network's training passes."""
    return network_lib.encode_views(self.net, params, images, rng)


# The online network's passes of a step, one stochastic-depth key each.
ONLINE_PASSES = ('annotation', 'local', 'bootstrap', 'caption_view')


def online_rng(inputs, view_set):
  """The stochastic-depth key of the online network's pass over ``view_set`` (ONLINE_PASSES):
  this step's key folded with it; None outside training."""
  return jax.random.fold_in(inputs.rng, ONLINE_PASSES.index(view_set)) if inputs.training else None


def image_subset(batch, count):
  """Every key's rows 0, s, 2s, ... (s = B // ``count``) of a stream's batch: the ``count``
  images a second loss reads when Table 7 gives it a smaller batch than the first (SLIP's
  SimCLR, SiLC's self-distillation); 0: the whole batch. Strided, not the first ``count``:
  the rows are laid out contiguously over the data shards, so each shard keeps an even share
  of the subset, where its images already are."""
  if not count:
    return batch
  def rows(array):
    return array.reshape(count, array.shape[0] // count, *array.shape[1:])[:, 0]
  return jax.tree.map(rows, batch)


def check_image_subset(config, key):
  """errors.ConfigError unless ``objective.<key>`` (an ``image_subset`` count) is 0 or divides
  the annotation stream's batch."""
  count, batch_size = config.objective[key], config.data.annotation.batch_size
  if count < 0 or (count and batch_size % count):
    raise errors.ConfigError(f'objective.{key} must be 0 (every image) or divide '
                             f'data.annotation.batch_size ({batch_size}), got {count}')


def entropy(p):
  """Entropy of distributions over the last axis, in nats."""
  return -jnp.sum(p * jnp.log(jnp.clip(p, 1e-12)), axis=-1)


def contrastive_ab_log_probs(method, params, phi, candidates):
  """Q_AB of the contrastive methods: softmax over l of scale * query(phi) . psi_AB(l)."""
  query, scale = method.apply(params, network_lib.Network.ab, phi)
  return jax.nn.log_softmax(scale * query @ candidates.ab.T, axis=-1)


class PlainObjective:
  """A method's base loss alone, on the annotation stream."""
  streams = ('annotation',)

  def __init__(self, method: Method):
    self.method = method

  def init(self, rng, batch):
    annotation = batch['annotation']
    params = self.method.net.init(rng, annotation['images'][:1, 0],
                                  **self.method.init_inputs(annotation))['params']
    return params, self.method.init_state()

  def loss_terms(self, inputs):
    inputs = dataclasses.replace(inputs, params=self.method.step_params(inputs.params,
                                                                        inputs.step))
    result = self.method.base_loss(inputs, bootstrap=False)
    return {'base': result.loss}, (result.metrics, result.method_state)

  loss = total_loss
