"""Train-step time of AB_DINO over DINO and AB_SimCLR over SimCLR, measured in one run.

Same encoder, same number of views per step: the AB configs split the baseline's views half
and half between the annotation stream and the bootstrap stream (the paper's split, e.g.
4096 annotation images x 1 view + 1024 bootstrap images x 4 views for AB_CLIP at 8192).
Only the jitted train step is timed (synthetic batches, no input pipeline). Goal: <= 1.5x.

  python benchmarks/ab_step_time.py [--steps=20] [--gamma=0.0]
"""
import argparse
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


def time_step(config, steps):
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  rng = np.random.default_rng(0)
  batch = {name: synthetic_stream(rng, config.data[name].batch_size, config.data[name])
           for name in objective.streams}
  tx, schedules = optimizer.make(config.optimizer, config.total_steps)
  params, extras = objective.init(jax.random.PRNGKey(0), batch)
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               target_params=jax.tree.map(jnp.copy, params),
                               opt_state=tx.init(params), rng=jax.random.PRNGKey(1),
                               extras=extras)
  step = jax.jit(train.make_train_step(objective, tx, schedules, config), donate_argnums=0)
  batch = jax.device_put(batch)
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  views = sum(config.data[n].batch_size * config.data[n].views.num
              for n in objective.streams)
  return float(np.median(times)), views


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--gamma', type=float, default=0.0)
  args = parser.parse_args()
  print(f'backend {jax.default_backend()}, {jax.device_count()} device(s); median of '
        f'{args.steps} steps after compilation')
  for base, ab in (('dino_scenes', 'ab_dino_scenes'), ('simclr_scenes', 'ab_simclr_scenes')):
    base_cfg = configuration.load(os.path.join(CONFIGS, base + '.py'))
    ab_cfg = configuration.load(os.path.join(CONFIGS, ab + '.py'))
    ab_cfg.objective.bootstrap.gamma = args.gamma
    t_base, v_base = time_step(base_cfg, args.steps)
    t_ab, v_ab = time_step(ab_cfg, args.steps)
    split = (f'{ab_cfg.data.annotation.batch_size}x{ab_cfg.data.annotation.views.num} annotation + '
             f'{ab_cfg.data.bootstrap.batch_size}x{ab_cfg.data.bootstrap.views.num} bootstrap')
    print(f'{ab:18s} {1000 * t_ab:7.1f} ms ({v_ab} views: {split}) | {base:14s} '
          f'{1000 * t_base:7.1f} ms ({v_base} views) | ratio {t_ab / t_base:.2f}x '
          f'(gamma {args.gamma})', flush=True)


if __name__ == '__main__':
  main()
