"""This codebase's DINO train step beside the official PyTorch DINO step, on this CPU, in one run.

At the size of the peer timer (ViT width 192, depth 4, 3 heads, patch 8, 64 px, 64 images x 2
global views, no local views, 4,096 prototypes, head 2048 -> 256, AdamW, EMA teacher, float32,
2 threads). With ``PEER_SCRIPT`` (a script, kept outside this repository, that times the official
step at that size and prints "...: N steps/s"), ``PEER_DINO`` (the three files of
facebookresearch/dino it imports) and ``PEER_PYTHON`` (a Python with the CPU build of torch)
set, the official step runs too, alternating with ours (A B A B, ``--rounds``), and the ratio
of each round is printed. ``--breakdown`` also times the parts of both steps (each part alone,
jitted; medians; the official parts by ``peer_dino_breakdown.py``):

  PEER_SCRIPT=FILE PEER_DINO=DIR PEER_PYTHON=VENV/bin/python python benchmarks/dino_step_time.py

Speed knobs of ours under test: ``--set KEY=VALUE`` (config overrides, e.g.
``model.gelu=exact``) and the XLA flags of the environment.
"""
import argparse
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab_step_time  # pylint: disable=g-import-not-at-top,wrong-import-position

from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import objectives  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import target_network  # pylint: disable=g-import-not-at-top,wrong-import-position

PEER_SIZE = {'model.width': 192, 'model.depth': 4, 'model.num_heads': 3, 'model.patch_size': 8,
             'data.annotation.views.size': 64, 'data.annotation.batch_size': 64,
             'data.annotation.local_views.num': 0, 'objective.num_prototypes': 4096,
             'objective.head_hidden_dim': 2048, 'objective.head_bottleneck_dim': 256}
PEER_BREAKDOWN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              'peer_dino_breakdown.py')


def config_at_peer_size(overrides=()):
  """dino_scenes at the peer's size, then ``overrides`` ((dotted key, value text) pairs)."""
  config = configuration.load(os.path.join(ab_step_time.CONFIGS, 'dino_scenes.py'))
  for key, value in list(PEER_SIZE.items()) + list(overrides):
    node, *path = config, *key.split('.')
    for part in path[:-1]:
      node = node[part]
    old = node[path[-1]]
    node[path[-1]] = value if not isinstance(value, str) or isinstance(old, str) else (
        value.lower() == 'true' if isinstance(old, bool) else type(old)(value))
  return configuration.validate(config)


class OurStep(ab_step_time.StepTimer):
  """The jitted train step (donating its state) and its parts on one synthetic batch."""

  def __init__(self, config):
    super().__init__(config, donate=True)

  def breakdown(self, steps):
    """{part: median ms}, each part jitted alone."""
    obj, s, batch = self.objective, self.state, self.batch
    images = batch['annotation']['images']
    # Every input is an argument (a closed-over array would be a constant XLA folds).
    loss = lambda p, t, b: obj.loss(objectives.LossInputs(
        params=p, target_params=t, method_state=s.method_state, batch=b, step=s.step,
        rng=s.rng, training=True))[0]
    encoder = lambda p, x: obj.method.encode_views(p, x)[0]
    grads = jax.grad(loss)(s.params, s.target_params, batch)
    parts = {
        'encoder forward (teacher: 128 views, no grad)': (jax.jit(encoder),
                                                          (s.target_params, images)),
        'encoder forward + backward': (jax.jit(jax.grad(lambda p, x: jnp.sum(encoder(p, x)))),
                                       (s.params, images)),
        'loss forward (teacher + student + head + loss)': (
            jax.jit(loss), (s.params, s.target_params, batch)),
        'loss forward + backward': (jax.jit(jax.grad(loss)), (s.params, s.target_params, batch)),
        'optimizer (AdamW, weight-decay mask)': (jax.jit(lambda g, o, p: optax.apply_updates(
            p, self.tx.update(g, o, p)[0])), (grads, s.opt_state, s.params)),
        'EMA update': (jax.jit(lambda t, p: target_network.update(t, p, 0.996)),
                       (s.target_params, s.params)),
    }
    out = {name: ab_step_time.median_ms(fn, *args, steps=steps)
           for name, (fn, args) in parts.items()}
    state, times = jax.tree.map(jnp.copy, s), []
    for _ in range(steps + 1):             # the first call only compiles
      start = time.perf_counter()
      state, metrics = self.step(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
    out['whole train step'] = 1000 * float(np.median(times[1:]))
    return out


def peer(script, steps):
  """The official step's printed line (steps/s or its breakdown), or None without a peer."""
  if not all(os.environ.get(v) for v in ('PEER_SCRIPT', 'PEER_DINO', 'PEER_PYTHON')):
    return None
  result = subprocess.run([os.environ['PEER_PYTHON'], script, '--steps', str(steps)],
                          capture_output=True, text=True, check=True)
  return result.stdout.rstrip()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=15)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--breakdown', action='store_true')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
  args = parser.parse_args()
  overrides = [item.split('=', 1) for item in args.set]
  ours = OurStep(config_at_peer_size(overrides))
  print(f'backend {jax.default_backend()}, XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}, '
        f'overrides {dict(overrides)}', flush=True)
  for r in range(args.rounds):
    line = peer(os.environ.get('PEER_SCRIPT'), args.steps)
    official = float(line.split(': ')[1].split(' steps/s')[0]) if line else None
    rate = ours.steps_per_sec(args.steps)
    ratio = f' | ours / official {rate / official:.2f}x' if official else ''
    print(f'round {r + 1}: official {official or "-"} steps/s, ours {rate:.2f} steps/s{ratio}',
          flush=True)
  if args.breakdown:
    print('ours, ms per call (median):')
    for name, ms in ours.breakdown(args.steps).items():
      print(f'  {name:48s} {ms:8.1f}')
    line = peer(PEER_BREAKDOWN, args.steps)
    if line:
      print('official, ms per call (median):\n' + line)


if __name__ == '__main__':
  main()
