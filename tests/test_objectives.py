"""Losses against values worked out by hand."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax.objectives import dino
from annoprop_jax.objectives import simclr
from annoprop_jax.objectives import supervised


def test_nt_xent_closed_form():
  # Two images whose two views coincide, images orthogonal: for every anchor the positive has
  # similarity 1 and the two negatives 0, so loss = log(1 + 2 exp(-1/t)).
  z = jnp.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
  loss, acc = simclr.nt_xent(z, temperature=0.5)
  assert float(loss) == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-5)
  assert float(acc) == 1.0


def test_nt_xent_against_a_naive_loop():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(3, 2, 4))
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  flat = z.reshape(6, 4)
  t = 0.5
  total = 0.0
  for a in range(6):
    pos = a ^ 1
    denom = sum(math.exp(flat[a] @ flat[k] / t) for k in range(6) if k != a)
    total += -math.log(math.exp(flat[a] @ flat[pos] / t) / denom)
  loss, _ = simclr.nt_xent(jnp.asarray(z), temperature=t)
  assert float(loss) == pytest.approx(total / 6, rel=1e-5)


def test_nt_xent_needs_two_views():
  with pytest.raises(ValueError, match='2 views'):
    simclr.nt_xent(jnp.zeros((2, 3, 4)), 0.1)


def test_dino_loss_by_hand():
  # One image, two global views, K = 2, temperatures 1, centre 0.
  teacher = jnp.array([[[0.0, math.log(3.0)], [0.0, 0.0]]])     # p = (1/4, 3/4), (1/2, 1/2)
  student = jnp.array([[[0.0, 0.0], [math.log(3.0), 0.0]]])     # q = (1/2, 1/2), (3/4, 1/4)
  loss, p = dino.dino_loss(student, teacher, jnp.zeros(2), 1.0, 1.0)
  term_t0_s1 = -(0.25 * math.log(0.75) + 0.75 * math.log(0.25))
  term_t1_s0 = math.log(2.0)
  assert float(loss) == pytest.approx((term_t0_s1 + term_t1_s0) / 2, rel=1e-6)
  np.testing.assert_allclose(p[0, 0], [0.25, 0.75], rtol=1e-6)


def test_dino_centre_and_temperature():
  teacher = jnp.array([[[0.0, math.log(3.0)], [0.0, 0.0]]])
  centre = jnp.array([0.0, math.log(3.0)])
  p = dino.teacher_distribution(teacher, centre, 1.0)
  np.testing.assert_allclose(p[0, 0], [0.5, 0.5], rtol=1e-6)
  # Sharpening: temperature 0.5 squares the odds 1:3 -> 1:9.
  p = dino.teacher_distribution(teacher, jnp.zeros(2), 0.5)
  np.testing.assert_allclose(p[0, 0], [0.1, 0.9], rtol=1e-5)


def test_dino_loss_with_local_views_skips_only_same_view_pairs():
  rng = np.random.default_rng(0)
  teacher = jnp.asarray(rng.normal(size=(2, 2, 5)))
  student = jnp.asarray(rng.normal(size=(2, 4, 5)))     # 2 global + 2 local
  loss, _ = dino.dino_loss(student, teacher, jnp.zeros(5), 0.1, 0.04)
  p = jax.nn.softmax(np.asarray(teacher) / 0.04, -1)
  log_q = jax.nn.log_softmax(np.asarray(student) / 0.1, -1)
  terms = [-(p[b, t] * log_q[b, s]).sum() for b in range(2) for t in range(2) for s in range(4)
           if s != t]
  assert float(loss) == pytest.approx(float(np.mean(terms)), rel=1e-5)


def test_teacher_temperature_warmup():
  cfg = dino.DINO.default_config()
  cfg.update(warmup_teacher_temperature=0.04, teacher_temperature=0.07,
             warmup_teacher_temperature_steps=30)
  assert float(dino.teacher_temperature(cfg, 0)) == pytest.approx(0.04)
  assert float(dino.teacher_temperature(cfg, 15)) == pytest.approx(0.055)
  assert float(dino.teacher_temperature(cfg, 100)) == pytest.approx(0.07)


def test_supervised_targets():
  labels = jnp.array([[2, 0, -1], [1, -1, -1]])
  single = supervised.label_targets(labels, 3, multi_label=False)
  np.testing.assert_allclose(single, [[0, 0, 1], [0, 1, 0]])
  multi = supervised.label_targets(labels, 3, multi_label=True)
  np.testing.assert_allclose(multi, [[0.5, 0, 0.5], [0, 1, 0]])
