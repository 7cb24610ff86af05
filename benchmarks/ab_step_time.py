"""Train-step time of AB_DINO over DINO and AB_SimCLR over SimCLR, measured in one run.

Same encoder, same number of views per step: the AB configs split the baseline's views half
and half between the annotation stream and the bootstrap stream (the paper's split, e.g.
4096 annotation images x 1 view + 1024 bootstrap images x 4 views for AB_CLIP at 8192).
Only the jitted train step is timed (synthetic batches, no input pipeline), the base and the AB
step alternating step by step, a ratio per round (--rounds). Goal: <= 1.2x (issue 20).

  python benchmarks/ab_step_time.py [--steps=15] [--rounds=3] [--gamma=0.0] [--breakdown]

``--breakdown`` also times each part of the AB step alone (jitted, same batch): the base loss
on the annotation stream (forward + backward, with its candidates), the online encoder on the
bootstrap views (forward + backward), the decoder and AB head over all V x V pairs (forward +
backward), the target network on the bootstrap views (p(l | x_j), forward), with gamma > 0 the
target decoder over all pairs (forward), and the AB loss with its target and diagnostics.
"""
import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from annoprop_jax import configuration
from annoprop_jax import objectives
from annoprop_jax import optimizer
from annoprop_jax import state as state_lib
from annoprop_jax import train
from annoprop_jax.data import boxes
from annoprop_jax.objectives import bootstrap as bootstrap_lib
from annoprop_jax.objectives import method as method_lib

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def synthetic_stream(rng, images, stream):
  v = stream.views
  boxes_ = np.sort(rng.uniform(size=(images, v.num, 2, 2)), axis=2)
  view_boxes = np.stack([boxes_[..., 0, 0], boxes_[..., 0, 1], boxes_[..., 1, 0],
                         boxes_[..., 1, 1]], -1).astype(np.float32)
  out = {
      'images': rng.integers(0, 256, (images, v.num, v.size, v.size, 3), dtype=np.uint8),
      'boxes': view_boxes,
      'flips': np.zeros((images, v.num), bool),
      'moves': np.stack([boxes.moves(b) for b in view_boxes]),
      'labels': rng.integers(0, 13, (images, stream.max_objects)).astype(np.int32),
      'object_boxes': np.zeros((images, stream.max_objects, 4), np.float32),
      'caption': rng.integers(97, 123, (images, stream.max_caption_bytes), dtype=np.uint8),
  }
  if stream.local_views.num:
    lv = stream.local_views
    out['local_images'] = rng.integers(0, 256, (images, lv.num, lv.size, lv.size, 3),
                                       dtype=np.uint8)
  return out


def median_ms(fn, *args, steps):
  """Median ms of ``fn(*args)`` over ``steps`` calls after a first (compiling) one."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


class StepTimer:
  """One config's jitted train step on a synthetic batch, ready to time again and again; with
  ``donate`` the step consumes the state it is given (call it on copies of ``state``)."""

  def __init__(self, config, donate=False):
    self.config = config
    self.objective = objectives.build(config.objective, configuration.encoder_config(config))
    rng = np.random.default_rng(0)
    self.batch = {name: synthetic_stream(rng, config.data[name].batch_size, config.data[name])
                  for name in self.objective.streams}
    self.tx, schedules = optimizer.make(config.optimizer, config.total_steps)
    params, method_state = self.objective.init(jax.random.PRNGKey(0), self.batch)
    self.state = state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        target_params=jax.tree.map(jnp.copy, params), opt_state=self.tx.init(params),
        rng=jax.random.PRNGKey(1), method_state=method_state)
    self.step = jax.jit(train.make_train_step(self.objective, self.tx, schedules, config),
                        donate_argnums=0 if donate else ())
    self.batch = jax.device_put(self.batch)
    self.views = sum(config.data[n].batch_size * config.data[n].views.num
                     for n in self.objective.streams)

  def time(self, steps):
    return median_ms(self.step, self.state, self.batch, steps=steps)

  def once(self):
    start = time.perf_counter()
    jax.block_until_ready(self.step(self.state, self.batch))
    return time.perf_counter() - start

  def steps_per_sec(self, steps):
    """``steps`` steps in a row from a copy of the state (a donating step consumes it), after
    one untimed step."""
    state = jax.tree.map(jnp.copy, self.state)
    state, metrics = self.step(state, self.batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = self.step(state, self.batch)
    jax.block_until_ready(metrics)
    return steps / (time.perf_counter() - start)


def alternating_ms(timers, steps):
  """Median ms of each timer's step, the steps run A B A B so that both see the same load."""
  for timer in timers:
    timer.once()
  times = [[timer.once() for timer in timers] for _ in range(steps)]
  return [1000 * float(np.median(t)) for t in zip(*times)]


def breakdown(timer, steps):
  """{part: median ms} of the AB step's parts, each jitted alone (see the module docstring)."""
  objective, state, batch = timer.objective, timer.state, timer.batch
  method, cfg = objective.method, objective.config
  params, target = state.params, state.target_params
  inputs = objectives.LossInputs(params=params, target_params=target,
                                 method_state=state.method_state, batch=batch, step=state.step,
                                 rng=state.rng, training=True)
  boot = batch['bootstrap']
  v = boot['images'].shape[1]
  pairs, nexts = bootstrap_lib.pair_masks(v, cfg.include_diagonal, cfg.next_include_identity,
                                          cfg.next_include_source)
  targets = bootstrap_lib.target_views(v, cfg.include_diagonal)
  next_targets = bootstrap_lib.target_views(v, cfg.next_include_identity)
  total = lambda tree: sum(jnp.sum(x) for x in jax.tree.leaves(tree))

  def base(params):
    return method.base_loss(dataclasses.replace(inputs, params=params), bootstrap=True).loss

  result = method.base_loss(inputs, bootstrap=True)   # eager
  candidates, target_candidates = result.candidates, result.target_candidates
  _, tokens = method.encode_views(params, boot['images'])
  log_q = bootstrap_lib.pair_log_probs(method, params, tokens, boot['moves'], targets,
                                       candidates)
  y = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(2), log_q.shape), -1)

  def online_encoder(params):
    return total(method.encode_views(params, boot['images']))

  def decoder(params, tokens):
    return jnp.sum(y * bootstrap_lib.pair_log_probs(method, params, tokens, boot['moves'],
                                                    targets, candidates))

  def target_network(target):
    pooled, target_tokens = method.encode_views(target, boot['images'])
    return (method.target_probs(dataclasses.replace(inputs, target_params=target), pooled,
                                target_candidates), target_tokens)

  def target_decoder(target, target_tokens):
    return jnp.exp(bootstrap_lib.pair_log_probs(method, target, target_tokens, boot['moves'],
                                                next_targets, target_candidates))

  def loss_and_diagnostics(log_q, p_next, q_next):
    y = bootstrap_lib.bootstrapped_target(p_next, q_next, cfg.gamma, cfg.aggregate, nexts)
    return (bootstrap_lib.ab_loss(log_q, y, pairs), method_lib.entropy(y).mean(),
            bootstrap_lib.diagnostics(log_q, y, pairs, boot['boxes'], boot['moves'], cfg.box))

  p_next, target_tokens = jax.jit(target_network)(target)
  q_next = jax.jit(target_decoder)(target, target_tokens) if cfg.gamma else None
  parts = {
      'base loss, annotation stream (fwd + bwd)': (jax.grad(base), params),
      'online encoder, bootstrap views (fwd + bwd)': (jax.grad(online_encoder), params),
      'decoder + AB head, all pairs (fwd + bwd)': (jax.grad(decoder, (0, 1)), params, tokens),
      'target network, bootstrap views (fwd)': (target_network, target),
  }
  if cfg.gamma:
    parts['target decoder, all pairs (gamma > 0, fwd)'] = (target_decoder, target, target_tokens)
  parts['AB loss, target y, diagnostics (fwd)'] = (
      lambda *a: loss_and_diagnostics(*a), log_q, p_next, q_next)
  return {name: median_ms(jax.jit(fn), *args, steps=steps)
          for name, (fn, *args) in parts.items()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=15)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--gamma', type=float, default=0.0)
  parser.add_argument('--breakdown', action='store_true')
  args = parser.parse_args()
  print(f'backend {jax.default_backend()}, {jax.device_count()} device(s); median of '
        f'{args.steps} steps after compilation, base and AB alternating')
  for base, ab in (('dino_scenes', 'ab_dino_scenes'), ('simclr_scenes', 'ab_simclr_scenes')):
    base_cfg = configuration.load(os.path.join(CONFIGS, base + '.py'))
    ab_cfg = configuration.load(os.path.join(CONFIGS, ab + '.py'))
    ab_cfg.objective.bootstrap.gamma = args.gamma
    base_timer, ab_timer = StepTimer(base_cfg), StepTimer(ab_cfg)
    split = (f'{ab_cfg.data.annotation.batch_size}x{ab_cfg.data.annotation.views.num} annotation + '
             f'{ab_cfg.data.bootstrap.batch_size}x{ab_cfg.data.bootstrap.views.num} bootstrap')
    for r in range(args.rounds):
      t_base, t_ab = alternating_ms((base_timer, ab_timer), args.steps)
      print(f'round {r + 1}: {ab:18s} {t_ab:7.1f} ms ({ab_timer.views} views: {split}) | '
            f'{base:14s} {t_base:7.1f} ms ({base_timer.views} views) | ratio '
            f'{t_ab / t_base:.2f}x (gamma {args.gamma})', flush=True)
    if args.breakdown:
      parts = breakdown(ab_timer, args.steps)
      for name, ms in parts.items():
        print(f'  {ab} part: {name:48s} {ms:7.1f} ms', flush=True)
      print(f'  {ab} parts summed {sum(parts.values()):.1f} ms; whole AB step '
            f'{ab_timer.time(args.steps):.1f} ms; whole {base} step '
            f'{base_timer.time(args.steps):.1f} ms', flush=True)


if __name__ == '__main__':
  main()
