"""Optimizer schedules, weight-decay mask, and the EMA target network."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import optimizer
from annoprop_jax import target_network
from annoprop_jax.models import vit


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
