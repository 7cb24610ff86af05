"""The LayerNorm with a written-out backward against Flax's LayerNorm and its autodiff."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax.models import layer_norm


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_forward_and_gradients_are_flax_layernorm_s(dtype):
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = (3 * jax.random.normal(keys[0], (4, 7, 48)) + 1).astype(dtype)
  params = {'scale': 1 + jax.random.normal(keys[1], (48,)),
            'bias': jax.random.normal(keys[2], (48,))}
  probe = jax.random.normal(keys[3], (4, 7, 48))       # a loss whose gradient is not uniform
  ours, theirs = layer_norm.LayerNorm(dtype=dtype), nn.LayerNorm(dtype=dtype)

  def loss(module, p, x):
    return jnp.sum(jnp.sin(module.apply({'params': p}, x).astype(jnp.float32)) * probe)

  assert jax.tree.map(jnp.shape, ours.init(keys[0], x)) == jax.tree.map(
      jnp.shape, theirs.init(keys[0], x))
  y, want = ours.apply({'params': params}, x), theirs.apply({'params': params}, x)
  assert y.dtype == want.dtype == dtype
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(want, np.float32))
  got = jax.grad(lambda p, x: loss(ours, p, x), (0, 1))(params, x)
  expected = jax.grad(lambda p, x: loss(theirs, p, x), (0, 1))(params, x)
  tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert g.dtype == e.dtype
    assert float(jnp.abs(e.astype(jnp.float32)).max()) > 0.1            # the check can fail
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(e, np.float32),
                               rtol=tolerance, atol=tolerance)
