"""The core of multi-head attention, softmax(q k^T / sqrt(d) + mask) v, by one of several
implementations (``model.attention``), for ``flax.linen.MultiHeadDotProductAttention``:

  plain   Flax's ``dot_product_attention``: the scores (B, heads, T, S) materialised in the
          compute dtype, softmax in that dtype (bf16 under ``model.dtype='bfloat16'``)
  xla     ``jax.nn.dot_product_attention``'s XLA path: scores accumulated and soft-maxed in
          float32, then cast back; XLA fuses what it can (every backend)
  cudnn   ``jax.nn.dot_product_attention``'s cuDNN flash attention: the scores never leave
          on-chip memory (NVIDIA GPUs; bf16 or fp16 inputs; head dim a multiple of 8, at most
          128, or 256 from Hopper on)
  auto    cudnn where it applies (an NVIDIA GPU, bf16/fp16, a supported head dim, no mask: the
          encoder's attention and the decoder's cross-attention), else plain:
          on this project's 2-core CPU the xla path took 1-4% longer than plain for the demo
          DINO and AB_DINO steps in float32 (alternating runs, benchmarks/RESULTS.md)

All four take the same parameters (the projections are Flax's), so a checkpoint trained with one
runs with any other; they agree to float rounding (tests/test_attention.py).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ('auto', 'plain', 'xla', 'cudnn')
_CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def cudnn_supports(dtype, head_dim, backend=None):
  """Whether cuDNN's flash attention takes inputs of ``dtype`` and ``head_dim`` on ``backend``
  (default: JAX's default backend), as ``jax.nn.dot_product_attention`` checks them."""
  if (backend or jax.default_backend()) != 'gpu':
    return False
  device = jax.devices('gpu')[0]
  if 'nvidia' not in device.device_kind.lower() or jnp.dtype(dtype) not in _CUDNN_DTYPES:
    return False                                      # ROCm has no cuDNN; cuDNN takes bf16/fp16
  head_max = 256 if float(getattr(device, 'compute_capability', '0')) >= 9.0 else 128
  return head_dim % 8 == 0 and head_dim <= head_max


def resolve(implementation, dtype, head_dim, masked=False, backend=None):
  """The implementation ``auto`` stands for here, or ``implementation`` itself; a ValueError
  (one line) for cudnn where cuDNN cannot run it."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'unknown attention implementation {implementation!r}: use one of '
                     f'{IMPLEMENTATIONS}')
  supported = cudnn_supports(dtype, head_dim, backend)
  if implementation == 'auto':
    return 'cudnn' if supported and not masked else 'plain'
  if implementation == 'cudnn' and not supported:
    raise ValueError(
        f"attention='cudnn' needs an NVIDIA GPU, bfloat16 or float16 (model.dtype) and a head "
        f"dim that is a multiple of 8 and at most 128 (256 on Hopper); got backend "
        f"{backend or jax.default_backend()!r}, {jnp.dtype(dtype).name}, head dim {head_dim}")
  return implementation


def attention_fn(implementation):
  """An ``attention_fn`` for ``nn.MultiHeadDotProductAttention``: (query, key, value) of shape
  (B, T or S, heads, head dim) and an optional boolean mask broadcastable to (B, heads, T, S)
  -> (B, T, heads, head dim)."""

  def attend(query, key, value, mask=None, dtype=None, precision=None):
    chosen = resolve(implementation, query.dtype, query.shape[-1], masked=mask is not None)
    if chosen == 'plain':
      return nn.dot_product_attention(query, key, value, mask=mask, dtype=dtype,
                                      precision=precision)
    if mask is not None:
      mask = mask.astype(jnp.bool_)          # Flax's masks are 0/1 in any dtype
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=chosen)

  return attend
