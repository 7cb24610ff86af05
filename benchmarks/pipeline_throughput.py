"""Images per second of each input stream alone (host pipeline only, no model).

  python benchmarks/pipeline_throughput.py [--config=configs/ab_dino_scenes.py] [--batches=50]

Both streams are the config's (an AB config has both; the bootstrap stream is the AB recipe of
docs/method.md: 4 views of RandomResizedCrop(0.05-1), no flips, no colour jitter). Rates are per
core: one read thread and no worker processes is one core's work.

JPEG sources at paper resolution (224 px views), with grain worker processes:

  python benchmarks/pipeline_throughput.py --jpeg=2000 --size=224 --batch_size=32 \
      --batches=20 --num_workers=0,1,2 --resize=0,256

renders 2,000 scenes upscaled to 480 px JPEGs in COCO layout (benchmarks/jpeg_scenes.py),
prepares them with ``prepare --format=coco`` and measures JPEG decoding alone, then each
stream for every worker count and ``resize`` setting.

``--together`` reads both streams of an AB config together, as training reads them, for each
``--num_workers`` (-1: sized for this host by ``pipeline.reading_plan``), and prints views/s per
core of this process (its CPU affinity).

Beside it, what one accelerator's train step consumes: ``--demand=configs/paper/ab_dino_coco.py``
counts the FLOPs of that config's step per view (XLA's cost analysis of the lowered step, at a
small batch: per-view work) and turns a device's peak (``--device_tflops``, default an H100
SXM's 989 dense bf16 TFLOP/s) at an assumed ``--mfu`` (default 0.4) into views/s per device,
and so into the host cores per device that each stream needs.
"""
import argparse
import os
import time

from annoprop_jax import aot
from annoprop_jax import configuration
from annoprop_jax.data import pipeline
from annoprop_jax.data import stream_spec


def measure(config, stream, batch_size, batches, warmup=5):
  source = pipeline.open_source(config.data, stream.dataset, stream.split)
  it = iter(pipeline.build_stream(source, stream, global_batch_size=batch_size, seed=0))
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  rate = batches * batch_size / (time.perf_counter() - start)
  if hasattr(it, 'close'):
    it.close()
  return rate


def read_together(config, names, batches, warmup=3, reading=None):
  """Steps per second of reading one batch of every stream in ``names`` per step, as the
  training loop reads them (``pipeline.build_streams``, the config's reading or ``reading``)."""
  iterators = [iter(ds) for ds in pipeline.build_streams(config.data, names, config.seed,
                                                         reading=reading).values()]
  try:
    for _ in range(warmup):
      for it in iterators:
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
      for it in iterators:
        next(it)
    return batches / (time.perf_counter() - start)
  finally:
    for it in iterators:
      if hasattr(it, 'close'):
        it.close()


def measure_decoding(config, dataset, resize, images=300):
  """JPEG decoding alone, one thread: images per second."""
  source = pipeline.open_source(config.data, dataset, 'train')
  records = [source[i]['image'] for i in range(min(images, len(source)))]
  start = time.perf_counter()
  for data in records:
    pipeline.decode_image(data, resize)
  return len(records) / (time.perf_counter() - start)


def flops_per_view(config_file, images=4):
  """FLOPs of ``config_file``'s train step per view (all streams' views), at ``images`` images
  per stream (the bootstrap stream half of that), one CPU device, no micro-batches."""
  config = configuration.load(config_file)
  config.microbatches = 1
  config.mesh.update(data=1, fsdp=1, tensor=1)
  views = 0
  for name in ('annotation', 'bootstrap'):
    if name in config.data:
      stream = config.data[name]
      stream.batch_size = images if name == 'annotation' else max(1, images // 2)
      views += stream.batch_size * (stream.views.num + stream.local_views.num)
  return aot.flops_per_step(config) / views


def together(config, streams, args, demand):
  """Both streams read together, for each of --num_workers (-1: sized by the pipeline for this
  host, threads too) and --resize: views/s, per core, and the cores one device needs."""
  names = tuple(streams)
  if args.batch_size:
    for name, stream in streams.items():
      stream.batch_size = args.batch_size if name == 'annotation' else max(1, args.batch_size // 2)
  views = sum(s.batch_size * (s.views.num + s.local_views.num) for s in streams.values())
  cores = pipeline.host_cores()
  for num_workers in _ints(args.num_workers):
    for resize in _ints(args.resize):
      for stream in streams.values():
        stream.update(num_workers=num_workers, resize=resize)
        if num_workers == stream_spec.AUTO:
          stream.num_threads = stream_spec.AUTO
      reading = pipeline.reading_plan(config.data, names)
      rate = read_together(config, names, args.batches) * views
      plan = ', '.join(f'{n} {w} workers x {t} threads' for n, (w, t) in reading.items())
      print(f'together: {rate:7.0f} views/s = {rate / cores:6.0f} per core ({views} views per '
            f'step; {plan}; resize {resize})', flush=True)
      if demand:
        print(f'          one device needs {demand / (rate / cores):.1f} cores', flush=True)


def _ints(text):
  return [int(v) for v in text.split(',')]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', default='configs/ab_dino_scenes.py')
  parser.add_argument('--batches', type=int, default=50)
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--jpeg', type=int, default=0,
                      help='use a prepared dataset of this many 480 px JPEG scenes')
  parser.add_argument('--jpeg_dir', default='/tmp/jpeg_scenes')
  parser.add_argument('--size', type=int, default=0, help='view size (0: the config\'s)')
  parser.add_argument('--batch_size', type=int, default=0, help='0: the config\'s')
  parser.add_argument('--num_workers', default='0', help='grain worker processes, e.g. 0,1,2')
  parser.add_argument('--resize', default='0', help='shorter side after decoding, e.g. 0,256')
  parser.add_argument('--threads', type=int, default=0, help='grain read threads (0: config)')
  parser.add_argument('--demand', default='', help='a config whose step sets the demand')
  parser.add_argument('--device_tflops', type=float, default=989.0)
  parser.add_argument('--mfu', type=float, default=0.4)
  parser.add_argument('--together', action='store_true',
                      help='read the streams together, as training does (-1 workers: auto)')
  args = parser.parse_args()
  demand = 0.0
  if args.demand:
    flops = flops_per_view(args.demand)
    demand = args.device_tflops * 1e12 * args.mfu / flops
    print(f'{args.demand}: {flops / 1e9:.1f} GFLOPs per view per step; a {args.device_tflops:g} '
          f'TFLOP/s device at MFU {args.mfu:g} consumes {demand:,.0f} views/s', flush=True)
  config = configuration.load(args.config)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  batch_size = args.batch_size or config.data.annotation.batch_size
  annotation = config.data.annotation
  if args.jpeg:
    import jpeg_scenes  # pylint: disable=g-import-not-at-top  # benchmarks/jpeg_scenes.py
    annotation.dataset = jpeg_scenes.make(args.jpeg_dir, args.jpeg)
    for resize in _ints(args.resize):
      rate = measure_decoding(config, annotation.dataset, resize)
      print(f'JPEG decode only, 1 thread, resize {resize}: {rate:7.0f} images/s', flush=True)
  streams = {name: config.data[name] for name in ('annotation', 'bootstrap')
             if name in config.data}
  for stream in streams.values():
    stream.dataset = annotation.dataset
    if args.size:
      stream.views.size = args.size
      stream.local_views.size = max(8, args.size * 3 // 7)
    if args.threads:
      stream.num_threads = args.threads
  print(f'{pipeline.host_cores()} CPU cores for this process', flush=True)
  if args.together:
    together(config, streams, args, demand)
    return
  for num_workers in _ints(args.num_workers):
    for resize in _ints(args.resize):
      for name, stream in streams.items():
        stream.update(num_workers=num_workers, resize=resize)
        rate = measure(config, stream, batch_size, args.batches)
        v = stream.views
        print(f'{name:10s} stream: {rate:7.0f} images/s  ({rate * v.num:7.0f} views/s; {v.num} '
              f'views of {v.size}px, scale {tuple(v.scale)}, flip {v.flip}, jitter '
              f'{v.colour_jitter}/hue {v.hue_jitter}/grey {v.grayscale}, '
              f'{stream.num_threads} threads, {num_workers} workers, resize {resize}, '
              f'batch {batch_size})', flush=True)
        if demand:
          print(f'{"":10s}   one device needs {demand / (rate * v.num):.1f} cores of this stream',
                flush=True)


if __name__ == '__main__':
  main()
