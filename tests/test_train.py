"""The train step: DINO multi-crop and its state, the loop (meshes: test_scale_out.py)."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import configuration
from annoprop_jax import metrics as metrics_lib
from annoprop_jax import objectives
from annoprop_jax import optimizer
from annoprop_jax import sharding
from annoprop_jax import state as state_lib
from annoprop_jax import train
from annoprop_jax.data import pipeline
from conftest import assert_same_update, first_batches, tiny_config


def _setup(config, data_dir):
  config.data.data_dir = data_dir
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  batch = first_batches(config, objective.streams)
  tx, schedules = optimizer.make(config.optimizer, config.total_steps)
  params, method_state = objective.init(jax.random.PRNGKey(0), batch)
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               target_params=params, opt_state=tx.init(params),
                               rng=jax.random.PRNGKey(1), method_state=method_state)
  step_fn = train.make_train_step(objective, tx, schedules, config)
  return state, batch, step_fn


def test_dino_step_updates_centre_target_and_uses_local_views(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.annotation.local_views.num': 2,
                                          'optimizer.warmup_steps': 0})
  config.target_network.update(rate=0.5, schedule='constant')
  state, batch, step_fn = _setup(config, tiny_data_dir)
  assert batch['annotation']['local_images'].shape[1] == 2
  new_state, metrics = jax.jit(step_fn)(state, batch)
  # The centre moves toward the teacher's mean logits: c1 = 0.9 * 0 + 0.1 * mean.
  teacher = objectives.build(config.objective, configuration.encoder_config(config))
  images = batch['annotation']['images']
  logits = teacher.method.net.apply({'params': state.target_params},
                             images.reshape(-1, *images.shape[2:]))[0]     # [base head]
  np.testing.assert_allclose(new_state.method_state['center'], 0.1 * logits.mean(0), rtol=1e-4,
                             atol=1e-6)
  # EMA with momentum 0.5: target = (old + new) / 2, once (twice: a quarter update away).
  expected = jax.tree.map(lambda t, p: 0.5 * t + 0.5 * p, state.params, new_state.params)
  assert_same_update(state.params, expected, new_state.target_params, 1e-3, 'target')
  assert np.isfinite(metrics['loss']) and 0 < metrics['teacher_entropy']


def test_train_loop_in_process(tmp_path, tiny_data_dir):
  config = tiny_config('supervised_objects', **{'data.data_dir': tiny_data_dir})
  config.total_steps = 6
  config.log_every = 3
  seen = []
  state = train.train(config, str(tmp_path), print_fn=seen.append,
                      on_step=lambda step, s: seen.append(step))
  assert int(state.step) == 6
  assert [r['step'] for r in metrics_lib.read_metrics(str(tmp_path))] == [3, 6]
  assert [x for x in seen if isinstance(x, int)] == list(range(1, 7))


def test_deterministic_compiles_gpu_steps_with_xla_deterministic_ops():
  """``deterministic`` reaches the compiler on GPUs only (CPU and TPU need nothing)."""
  config = tiny_config()
  cpu_mesh = sharding.make_mesh(config.mesh)
  gpu_mesh = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform='gpu')]))
  assert train.compiler_options(config, cpu_mesh) is None
  assert train.compiler_options(config, gpu_mesh) == {'xla_gpu_deterministic_ops': True}
  config.deterministic = False
  assert train.compiler_options(config, gpu_mesh) is None
  # XLA knows the option (a misspelt one is an error: "No such compile option").
  config.deterministic = True
  step = jax.jit(lambda x: x + 1, compiler_options=train.compiler_options(config, gpu_mesh))
  assert step(1.0) == 2.0
