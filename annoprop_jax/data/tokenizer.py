"""Offline byte-level tokenizer for captions (no vocabulary file, no download).

Token ids: 0 = padding, 1 = BOS, 2 = EOS, and byte ``b`` -> ``b + 3`` (vocabulary 259).
A sequence is BOS, the caption's UTF-8 bytes, EOS, then zero padding.

Two entry points produce the same ids:
* :func:`encode` (numpy, host side) for a single string or bytes object;
* :func:`tokens_from_caption_bytes` (jnp, jit-able) for the pipeline's ``caption`` arrays,
  (..., C) uint8 zero padded, so the batch can be tokenised inside the train step.

A SentencePiece model file could be supported later behind the same two functions; the
byte-level scheme is the default because it needs nothing but the caption itself.
"""
import jax.numpy as jnp
import numpy as np

PAD = 0
BOS = 1
EOS = 2
BYTE_OFFSET = 3
VOCAB_SIZE = 256 + BYTE_OFFSET


def encode(text, max_len):
  """``text`` (str or bytes) -> int32 (max_len,): BOS, bytes + 3, EOS, zero padding.

  Longer captions are truncated so that EOS is always the last non-padding token.
  """
  if max_len < 2:
    raise ValueError(f'max_len must leave room for BOS and EOS, got {max_len}')
  data = text.encode('utf-8') if isinstance(text, str) else bytes(text)
  body = np.frombuffer(data[:max_len - 2], np.uint8).astype(np.int32) + BYTE_OFFSET
  tokens = np.zeros((max_len,), np.int32)
  tokens[0] = BOS
  tokens[1:1 + len(body)] = body
  tokens[1 + len(body)] = EOS
  return tokens


def decode(tokens, as_bytes=False):
  """Token ids -> the caption (for debugging): drops BOS, stops at EOS or padding."""
  out = bytearray()
  for t in np.asarray(tokens).reshape(-1).tolist():
    if t == BOS:
      continue
    if t in (EOS, PAD):
      break
    out.append(t - BYTE_OFFSET)
  return bytes(out) if as_bytes else out.decode('utf-8', errors='replace')


def tokens_from_caption_bytes(caption):
  """(..., C) uint8 zero-padded caption bytes -> (..., C + 2) int32 tokens, in jnp.

  Nonzero bytes map to ``b + 3``, BOS is prepended and EOS goes right after the last nonzero
  byte, so for captions without interior zero bytes the result equals ``encode(caption, C + 2)``.
  Works inside ``jit``.
  """
  caption = jnp.asarray(caption)
  if caption.dtype != jnp.uint8:
    raise ValueError(f'caption must be uint8 bytes, got {caption.dtype}')
  c = caption.shape[-1]
  present = caption != 0
  ids = jnp.where(present, caption.astype(jnp.int32) + BYTE_OFFSET, PAD)
  # Number of bytes up to and including the last nonzero one.
  length = jnp.max(jnp.where(present, jnp.arange(1, c + 1), 0), axis=-1)
  lead = jnp.full(caption.shape[:-1] + (1,), BOS, jnp.int32)
  tail = jnp.zeros(caption.shape[:-1] + (1,), jnp.int32)
  tokens = jnp.concatenate([lead, ids, tail], axis=-1)
  return jnp.where(jnp.arange(c + 2) == length[..., None] + 1, EOS, tokens)
