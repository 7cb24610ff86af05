"""Images per second of each input stream alone (host pipeline only, no model).

  python benchmarks/pipeline_throughput.py [--config=configs/dino_scenes.py] [--batches=50]

The annotation stream uses the config's views; the bootstrap stream is the AB recipe
(METHOD.md): 4 views of RandomResizedCrop(0.05-1), no colour jitter.
"""
import argparse
import time

from annoprop_jax import configuration
from annoprop_jax.data import pipeline


def measure(config, stream, batch_size, batches, warmup=5):
  source = pipeline.open_source(config, stream.dataset, stream.split)
  it = iter(pipeline.build_stream(source, stream, global_batch_size=batch_size, seed=0))
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', default='configs/dino_scenes.py')
  parser.add_argument('--batches', type=int, default=50)
  parser.add_argument('--data_dir', default=None)
  args = parser.parse_args()
  config = configuration.load(args.config)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  annotation = config.data.annotation
  bootstrap = annotation.copy_and_resolve_references()
  bootstrap.views.update(num=4, scale=(0.05, 1.0), colour_jitter=0.0, grayscale=0.0)
  for name, stream in (('annotation', annotation), ('bootstrap', bootstrap)):
    rate = measure(config, stream, config.batch_size, args.batches)
    v = stream.views
    print(f'{name:10s} stream: {rate:7.0f} images/s  ({rate * v.num:7.0f} views/s; {v.num} views '
          f'of {v.size}px, scale {tuple(v.scale)}, jitter {v.colour_jitter}, '
          f'{stream.num_threads} threads, batch {config.batch_size})', flush=True)


if __name__ == '__main__':
  main()
