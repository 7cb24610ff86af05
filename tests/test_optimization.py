"""Optimizer schedules, weight-decay mask, gradient clipping, and the EMA target network."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from annoprop_jax import configuration
from annoprop_jax import objectives
from annoprop_jax import optimizer
from annoprop_jax import state as state_lib
from annoprop_jax import target_network
from annoprop_jax import train
from annoprop_jax.models import vit
from conftest import first_batches, loss_inputs, tiny_config


def test_constant_and_cosine_ema_momentum():
  cfg = target_network.default_config()
  assert float(target_network.momentum(cfg, 500, 1000)) == pytest.approx(0.996)
  cfg.schedule = 'cosine'
  assert float(target_network.momentum(cfg, 0, 1000)) == pytest.approx(0.996)
  assert float(target_network.momentum(cfg, 500, 1000)) == pytest.approx(0.998)
  assert float(target_network.momentum(cfg, 1000, 1000)) == pytest.approx(1.0)


def test_an_ema_horizon_sizes_the_rate_to_the_run():
  cfg = target_network.default_config()
  cfg.update(horizon=0.02, rate=0.5)           # the horizon wins over the rate
  # 2% of a 1,500-step run is 30 steps: rate 1/30; of a 100k-step run, 2,000 steps.
  assert float(target_network.momentum(cfg, 7, 1500)) == pytest.approx(1 - 1 / 30)
  assert float(target_network.momentum(cfg, 7, 100_000)) == pytest.approx(1 - 1 / 2000)
  cfg.schedule = 'cosine'
  assert float(target_network.momentum(cfg, 750, 1500)) == pytest.approx(1 - 0.5 / 30)
  cfg.horizon = 1e-6                            # shorter than a step: the rate is at most 1
  assert float(target_network.momentum(cfg, 0, 1500)) == pytest.approx(0.0)


def test_ema_update():
  target = {'w': jnp.ones(3), 'b': jnp.zeros(2)}
  online = {'w': jnp.zeros(3), 'b': jnp.full(2, 10.0)}
  new = target_network.update(target, online, 0.9)
  np.testing.assert_allclose(new['w'], 0.9)
  np.testing.assert_allclose(new['b'], 1.0)


def test_no_weight_decay_on_biases_norms_posemb_cls():
  params = vit.ViT(vit.EncoderConfig(patch_size=4, width=8, depth=1, num_heads=2)).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3), jnp.uint8))['params']
  mask = optimizer.decay_mask(params)
  assert mask['embedding']['kernel'] and not mask['embedding']['bias']
  assert not mask['pos_embedding'] and not mask['cls']
  assert not mask['encoder_norm']['scale']
  assert mask['block0']['MlpBlock_0']['Dense_0']['kernel']


def test_decay_applies_only_where_masked():
  cfg = optimizer.default_config()
  cfg.update(learning_rate=0.1, warmup_steps=0, weight_decay=0.5, weight_decay_end=0.5)
  tx, _ = optimizer.make(cfg, total_steps=10)
  params = {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}}
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates['dense']['bias'], 0.0)
  np.testing.assert_allclose(updates['dense']['kernel'], -0.1 * 0.5, rtol=1e-5)


def test_learning_rate_and_weight_decay_schedules():
  cfg = optimizer.default_config()
  cfg.update(learning_rate=1e-3, warmup_steps=10, min_learning_rate=0.0, weight_decay=0.04,
             weight_decay_end=0.4)
  lr = optimizer.learning_rate_schedule(cfg, 110)
  assert float(lr(0)) == 0.0
  assert float(lr(5)) == pytest.approx(5e-4)
  assert float(lr(10)) == pytest.approx(1e-3)
  assert float(lr(60)) == pytest.approx(5e-4, rel=1e-4)
  wd = optimizer.weight_decay_schedule(cfg, 100)
  assert float(wd(0)) == pytest.approx(0.04)
  assert float(wd(50)) == pytest.approx(0.22)
  assert float(wd(100)) == pytest.approx(0.4)


def test_per_parameter_clipping_equals_a_naive_per_leaf_reference():
  rng = np.random.default_rng(0)
  grads = {'a': rng.normal(size=(3, 4)) * 5, 'b': {'c': rng.normal(size=(7,)) * 0.01,
                                                   'd': rng.normal(size=(2, 2)) * 2}}
  max_norm = 1.0
  got, _ = optimizer.clip_each_parameter(max_norm).update(
      jax.tree.map(jnp.asarray, grads), optax.EmptyState())
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    norm = np.sqrt((g ** 2).sum())
    want = g * max_norm / norm if norm > max_norm else g
    np.testing.assert_allclose(np.asarray(_at(got, path)), want, rtol=1e-5)
  assert np.sqrt((grads['a'] ** 2).sum()) > max_norm > np.sqrt((grads['b']['c'] ** 2).sum())


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_per_loss_clipping_clips_each_losss_gradient_before_the_sum(tiny_data_dir):
  config = tiny_config('ab_sup_scenes', **{'data.data_dir': tiny_data_dir})
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  batch = first_batches(config, objective.streams)
  params, method_state = objective.init(jax.random.PRNGKey(0), batch)
  target = jax.tree.map(lambda x: x + 0.3 * jnp.cos(jnp.arange(x.size).reshape(x.shape)), params)
  state = state_lib.TrainState(step=jnp.int32(3), params=params, target_params=target,
                               opt_state=None, rng=jax.random.PRNGKey(1), method_state=method_state)
  # Naive: each loss's gradient alone, clipped to max_norm by its own norm, then the sum.
  term_grad = lambda name: jax.jit(jax.grad(lambda p: objective.loss_terms(
      loss_inputs(p, target, method_state, batch, 3))[0][name]))(params)
  norm = lambda g: np.sqrt(sum((np.asarray(x, np.float64) ** 2).sum() for x in jax.tree.leaves(g)))
  alone = {name: term_grad(name) for name in ('base', 'ab')}
  max_norm = 0.5 * min(norm(g) for g in alone.values())         # both get clipped
  want = jax.tree.map(lambda *g: sum(x * max_norm / norm(t) for x, t in zip(g, alone.values())),
                      *alone.values())
  config.optimizer.update(grad_clip_norm=max_norm, grad_clip_mode='per_loss')
  grads, (_, metrics, _) = jax.jit(train.make_gradients(objective, config))(
      state, batch, jax.random.PRNGKey(2))
  for got_leaf, want_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-4, atol=1e-7)
  assert float(metrics['grad_norm_ab']) == pytest.approx(norm(alone['ab']), rel=1e-4)
