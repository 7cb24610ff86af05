"""Train-step time of a config against the same config with overrides, alternating in one run.

  python benchmarks/config_ab.py configs/dino_scenes.py --set model.attention=xla [--rounds=3]

Both steps are jitted on one synthetic batch (no input pipeline) and run A B A B, ``--steps``
each per round; each round prints the medians and their ratio (B / A), so that both see the same
machine load. Several ``--set`` give one B.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab_step_time  # pylint: disable=g-import-not-at-top,wrong-import-position
import quality  # pylint: disable=g-import-not-at-top,wrong-import-position

from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top,wrong-import-position


def with_settings(path, settings):
  """``path``'s config with ``settings`` ((dotted key, value) pairs, ``quality.parse_setting``)."""
  config = configuration.load(path).unlock()
  quality.apply_settings(config, settings)
  return configuration.validate(config)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('config')
  parser.add_argument('--set', action='append', default=[], type=quality.parse_setting,
                      dest='settings', help='KEY=VALUE of the B side (repeatable)')
  parser.add_argument('--steps', type=int, default=15)
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()
  a = ab_step_time.StepTimer(with_settings(args.config, []))
  b = ab_step_time.StepTimer(with_settings(args.config, args.settings))
  label = ' '.join(f'{key}={value}' for key, value in args.settings)
  for r in range(args.rounds):
    t_a, t_b = ab_step_time.alternating_ms((a, b), args.steps)
    print(f'round {r + 1}: {args.config} {t_a:7.1f} ms | with {label} {t_b:7.1f} ms | ratio '
          f'{t_b / t_a:.3f}', flush=True)


if __name__ == '__main__':
  main()
