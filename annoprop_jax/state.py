"""The train state: one pytree of arrays (params, EMA target, optimizer state, step, RNG and the
method state)."""
from typing import Any

import flax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray            # optimizer steps taken
  params: Any                  # online network
  target_params: Any           # EMA target network (docs/method.md)
  opt_state: Any
  rng: jnp.ndarray             # raw uint32 PRNG key; per-step keys are fold_in(rng, step)
  method_state: Any            # what the method carries between steps (DINO's centre)


def to_pytree(state):
  """A plain nested dict of arrays (what the checkpoint stores)."""
  return flax.serialization.to_state_dict(state)


def from_pytree(template, tree):
  return flax.serialization.from_state_dict(template, tree)
