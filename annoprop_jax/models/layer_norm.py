"""Layer normalisation with its backward written out (the parameters and forward of Flax's).

Autodiff of ``(x - mean) * rsqrt(var + eps) * scale + bias`` keeps several activation-sized
intermediates for the backward; this one keeps the input and two numbers per row and computes

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * scale,  xhat = (x - mean) * rstd

(PyTorch's native_layer_norm_backward does the same), which is 3-8% faster for the encoder's
forward + backward on the CPU (benchmarks/RESULTS.md). The forward equals ``flax.linen.
LayerNorm``'s bit for bit: statistics in float32, ``var = mean(x^2) - mean^2`` clipped at 0.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def _statistics(x, epsilon):
  mean = x.mean(-1, keepdims=True)
  var = jnp.maximum(0.0, (x * x).mean(-1, keepdims=True) - mean * mean)
  return mean, jax.lax.rsqrt(var + epsilon)


def _normalise(x, scale, bias, epsilon):
  mean, rstd = _statistics(x, epsilon)
  return (x - mean) * (rstd * scale) + bias, (mean, rstd)


@jax.custom_vjp
def layer_norm(x, scale, bias, epsilon):
  """(..., D) float32 -> (..., D) float32: ``x`` normalised over its last axis, scaled by
  ``scale`` (D,) and shifted by ``bias`` (D,)."""
  return _normalise(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
  y, (mean, rstd) = _normalise(x, scale, bias, epsilon)
  return y, (x, mean, rstd, scale, epsilon)


def _backward(residuals, dy):
  x, mean, rstd, scale, epsilon = residuals
  xhat = (x - mean) * rstd
  g = dy * scale
  dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
  rows = tuple(range(dy.ndim - 1))
  return dx, jnp.sum(dy * xhat, rows), jnp.sum(dy, rows), jnp.zeros_like(epsilon)


layer_norm.defvjp(_forward, _backward)


class LayerNorm(nn.Module):
  """``flax.linen.LayerNorm`` (its parameter names, initialisers and forward) with the backward
  of ``layer_norm``; the output has ``dtype``."""
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (width,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (width,), jnp.float32)
    return layer_norm(x.astype(jnp.float32), scale, bias,
                      jnp.float32(self.epsilon)).astype(self.dtype)
