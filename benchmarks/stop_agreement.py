"""Host time per step that the stop agreement costs a 2-process run, measured in one run.

Two JAX processes on this machine (127.0.0.1 coordinator, CPU devices) train the tiny AB_DINO
config; every run's processes agree on a stop (a tiny all-gather that waits for the step to
finish) after every ``AGREE_EVERY``-th step. Runs with an agreement after every step (what the
loop did before) alternate with runs at the default (10): A B A B. Each run's steps/s is read
from its metrics.jsonl, the log records past the first (compilation) window.

  python benchmarks/stop_agreement.py [--steps=120] [--repeats=2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each process: set the agreement interval, then run the CLI as `python -m annoprop_jax.main`.
LAUNCH = ('import runpy, sys; from annoprop_jax import stop_request; '
          'stop_request.AGREE_EVERY = int(sys.argv.pop(1)); '
          "runpy.run_module('annoprop_jax.main', run_name='__main__')")


def run(every, steps, root, data_dir, port):
  workdir = os.path.join(root, f'every{every}_{port}')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  args = ['train', '--config=configs/ab_dino_scenes.py:tiny', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', f'--config.total_steps={steps}',
          f'--config.checkpoint_every={steps}', '--config.log_every=10',
          '--config.evaluation.every_steps=0', f'--coordinator_address=127.0.0.1:{port}',
          '--num_processes=2']
  processes = [subprocess.Popen([sys.executable, '-c', LAUNCH, str(every), *args,
                                 f'--process_id={i}'], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
  for p in processes:
    _, err = p.communicate(timeout=1800)
    if p.returncode:
      raise SystemExit(f'a run with AGREE_EVERY={every} failed:\n{err[-3000:]}')
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f if 'images_per_sec' in line]
  rates = [r['images_per_sec'] for r in records[1:]]
  return sum(rates) / len(rates)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=120)
  parser.add_argument('--repeats', type=int, default=2)
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix='annoprop_stop_agreement_')
  data_dir = os.path.join(root, 'data')
  port = 12400
  images = {1: [], 10: []}
  run(10, 20, root, data_dir, port)           # writes the dataset, warms the disk cache
  for _ in range(args.repeats):
    for every in (1, 10):
      port += 1
      images[every].append(run(every, args.steps, root, data_dir, port))
      print(f'AGREE_EVERY={every}: {images[every][-1]:.1f} images/s', flush=True)
  sys.path.insert(0, REPO)
  from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top
  config = configuration.load(os.path.join(REPO, 'configs', 'ab_dino_scenes.py:tiny'))
  per_step = config.data.annotation.batch_size + config.data.bootstrap.batch_size
  ms = {k: 1000 * per_step * len(v) / sum(v) for k, v in images.items()}
  print(f'ms per step: agreement after every step {ms[1]:.1f}, every 10 steps {ms[10]:.1f}: '
        f'{ms[1] - ms[10]:.1f} ms of host time per step saved ({ms[1] / ms[10]:.3f}x)')


if __name__ == '__main__':
  main()
