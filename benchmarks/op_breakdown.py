"""Where a jitted function's time goes, by the model part each XLA op comes from.

Traces a few calls with jax.profiler (the CPU runtime records one event per HLO op), joins each
op with the compiled HLO's ``op_name`` metadata (the Flax module path and the JAX primitive,
with ``transpose(jvp(...))`` marking the backward pass) and sums the time per part:

  python benchmarks/op_breakdown.py encoder      # our DINO encoder fwd + bwd at the peer size
  python benchmarks/op_breakdown.py decoder      # the AB_DINO decoder over all pairs, fwd + bwd

A part is the first of ``PARTS`` whose pattern the op's ``op_name`` contains, then forward or
backward. The shares are of the ops' summed time (the runtime's own overhead is not in them).
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

PARTS = (  # (part, pattern in op_name), first match wins
    ('attention: q.k and weights.v', r'(?i)attention[^ ]*/\.\.\.(qhd,\.\.\.khd|hqk,\.\.\.khd)'),
    ('attention: softmax', r'(?i)attention[^ ]*/(softmax|exp|reduce_max|reduce_sum|div|sub)'),
    ('attention: q, k, v and output projections', r'(?i)attention'),
    ('MLP: GELU', r'(?i)mlp[^ ]*/(tanh|integer_pow|mul|add)$'),
    ('MLP: dense layers', r'(?i)mlp'),
    ('LayerNorm', r'LayerNorm|_norm'),
    ('patch embedding', r'embedding'),
    ('box tokens', r'box_tokens'),
)


def _hlo_op_names(compiled_text):
  """{HLO instruction name: op_name metadata} of a compiled module's text."""
  names = {}
  for line in compiled_text.splitlines():
    m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = .*metadata=\{[^}]*op_name="([^"]*)"', line)
    if m:
      names[m.group(1)] = m.group(2)
  return names


def part_of(op_name):
  backward = 'transpose(' in op_name
  for part, pattern in PARTS:
    if re.search(pattern, op_name):
      return part, backward
  return 'other', backward


def breakdown(fn, args, calls=5):
  """{(part, backward): ms per call} of ``jax.jit(fn)(*args)``, and the summed ms per call."""
  jitted = jax.jit(fn)
  names = _hlo_op_names(jitted.lower(*args).compile().as_text())
  jax.block_until_ready(jitted(*args))
  with tempfile.TemporaryDirectory() as folder:
    jax.profiler.start_trace(folder, create_perfetto_trace=True)
    for _ in range(calls):
      jax.block_until_ready(jitted(*args))
    jax.profiler.stop_trace()
    trace = sorted(glob.glob(os.path.join(folder, '**', '*.trace.json.gz'), recursive=True))[-1]
    with gzip.open(trace) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  parts = collections.Counter()
  for event in events:
    if event.get('ph') == 'X' and event.get('name') in names:
      parts[part_of(names[event['name']])] += event.get('dur', 0) / 1000 / calls
  return parts


def _encoder_case():
  """Our ViT at the official DINO peer's size (dino_step_time.py): 128 views of 64 px."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import dino_step_time  # pylint: disable=g-import-not-at-top
  from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top
  from annoprop_jax.models import vit  # pylint: disable=g-import-not-at-top
  config = dino_step_time.config_at_peer_size()
  model = vit.ViT(configuration.encoder_config(config))
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (128, 64, 64, 3), np.uint8))
  params = model.init(jax.random.PRNGKey(0), images[:1])['params']
  loss = lambda p: sum(jnp.sum(x) for x in model.apply({'params': p}, images))
  return jax.grad(loss), (params,)


def _decoder_case():
  """The AB_DINO demo's decoder: 16 images x 4 views, each decoded for its 3 other views."""
  from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top
  from annoprop_jax.models import decoder  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = configuration.load(os.path.join(repo, 'configs', 'ab_dino_scenes.py'))
  ab = config.objective.bootstrap
  model = decoder.AnnotationDecoder(**ab.decoder.to_dict(), **ab.box.to_dict())
  rng = np.random.default_rng(0)
  views = config.data.bootstrap.batch_size * config.data.bootstrap.views.num
  tokens_per_view = (config.data.bootstrap.views.size // config.model.patch_size) ** 2
  tokens = jnp.asarray(rng.normal(size=(views, tokens_per_view, config.model.width)), jnp.float32)
  targets = config.data.bootstrap.views.num - 1          # the other views of each source view
  moves = jnp.asarray(rng.uniform(-2, 3, (views, targets, 4)), jnp.float32)
  params = model.init(jax.random.PRNGKey(0), tokens, moves)['params']
  loss = lambda p, t: jnp.sum(model.apply({'params': p}, t, moves) ** 2)
  return jax.grad(loss, (0, 1)), (params, tokens)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('case', choices=('encoder', 'decoder'))
  parser.add_argument('--calls', type=int, default=5)
  args = parser.parse_args()
  fn, fn_args = {'encoder': _encoder_case, 'decoder': _decoder_case}[args.case]()
  parts = breakdown(fn, fn_args, args.calls)
  total = sum(parts.values())
  print(f'{args.case}: {total:.1f} ms of XLA ops per call (mean of {args.calls} calls)')
  for (part, backward), ms in sorted(parts.items(), key=lambda kv: -kv[1]):
    print(f'  {part:40s} {"backward" if backward else "forward ":8s} {ms:7.2f} ms  '
          f'{100 * ms / total:5.1f}%')


if __name__ == '__main__':
  main()
