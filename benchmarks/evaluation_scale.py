"""Evaluation at scale (issue 34): the streamed, cached evaluation on an ImageFolder dataset of
100,000 generated images, against the training forward and the in-RAM path.

  python benchmarks/evaluation_scale.py [--images=100000] [--small=10000] [--test=2000]
      [--workdir=~/annoprop_eval_scale] [--config=configs/dino_scenes.py] [--out=FILE.json]

1. Writes an ImageFolder of single-object scenes images (64 px JPEGs, class = the object's
   shape, 16 classes): --images under train/, --test under val/; then ``prepare
   --format=imagefolder`` makes it a dataset (both kept in --workdir; a rerun reuses them).
2. The training forward: the config's encoder (fresh init) jitted on a batch of
   ``evaluation.batch_size`` images held on the device, images/s (median of 5 windows); and
   the streamed read alone (decoding and cropping 20,000 train images, no encoding).
3. ``evaluate``'s path (``Evaluator``, the task ``DIR:classes``, centre crops, the train split
   streamed: ``images_in_memory=1000``) with kNN, linear and few-shot probes, once on --small
   and once on --images train images, each in its own process: the images/s of the feature
   extraction (decoding, cropping and encoding, grain's read threads; the encoder's forward
   included), the seconds of the probes, the scores, and the process's peak RSS.
4. The scenes tasks (objects, presence, count; kNN and linear) read held in RAM and streamed,
   the same encoder: the scores must be equal.

The goals it prints: extraction at least 0.8x the training forward's images/s, peak RSS at
--images at most 1.2x that at --small, scenes scores equal. The encoder is a fresh init (seed 0):
the scores measure the path, not a pretrained model.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CLASSES_DATASET = 'scale_objects'
MARK = 'complete'


def _render(job):
  """Writes images [start, stop) of one split as ROOT/SPLIT/SHAPE/INDEX.jpg."""
  # pylint: disable=g-import-not-at-top
  from PIL import Image
  from annoprop_jax.data import scenes
  root, split, start, stop, seed = job
  spec = scenes.SceneSpec(resolution=64)
  for index in range(start, stop):
    example = scenes.render_single_object(spec, seed, index)
    folder = os.path.join(root, split, scenes.SHAPES[int(example['labels'][0])])
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(example['image']).save(os.path.join(folder, f'{index:07d}.jpg'),
                                           quality=90)
  return stop - start


def make_imagefolder(root, num_train, num_test, workers):
  """The ImageFolder of single objects (reused when complete)."""
  if os.path.exists(os.path.join(root, MARK)):
    return
  import multiprocessing  # pylint: disable=g-import-not-at-top
  jobs = [(root, split, start, min(start + 2000, count), seed)
          for split, count, seed in (('train', num_train, 0), ('val', num_test, 1))
          for start in range(0, count, 2000)]
  start, done = time.perf_counter(), 0
  with multiprocessing.get_context('fork').Pool(workers) as pool:
    for n in pool.imap_unordered(_render, jobs):
      done += n
      print(f'  images written {done}/{num_train + num_test} '
            f'({time.perf_counter() - start:.0f} s)', flush=True)
  open(os.path.join(root, MARK), 'w').close()


def prepare_dataset(root, output):
  """``prepare --format=imagefolder`` of ``root`` into ``output`` (reused when done)."""
  from annoprop_jax.data import prepare  # pylint: disable=g-import-not-at-top
  return str(prepare.prepare(prepare.Options('imagefolder', root, output, CLASSES_DATASET),
                             log=lambda line: print(' ', line, flush=True)))


def _config(config_path, overrides):
  # pylint: disable=g-import-not-at-top
  from annoprop_jax import configuration
  config = configuration.load(config_path).unlock()
  return configuration.override(config, list(overrides.items()))


def _fresh(config):
  """(Evaluator, encoder params of a fresh init of the config's objective, seed 0)."""
  # pylint: disable=g-import-not-at-top
  import jax
  from annoprop_jax import configuration, objectives, sharding
  from annoprop_jax.data import pipeline
  from annoprop_jax.evaluation import evaluator
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  example = {name: pipeline.zeros_batch(config.data[name]) for name in objective.streams}
  params, _ = objective.init(jax.random.PRNGKey(0), example)
  return evaluator.Evaluator(config.evaluation, config.data,
                             configuration.encoder_config(config),
                             sharding.make_mesh(config.mesh), print_fn=lambda line: None,
                             objective_config=config.objective), params['encoder']


def training_forward(config_path):
  """Images/s of the encoder's forward on a device-resident batch, median of 5 windows."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from annoprop_jax import configuration
  from annoprop_jax.models import vit
  config = _config(config_path, {})
  encoder_config = configuration.encoder_config(config)
  batch = config.evaluation.batch_size
  images = jax.device_put(np.random.default_rng(0).integers(
      0, 256, (batch, encoder_config.image_size, encoder_config.image_size, 3), np.uint8))
  model = vit.ViT(encoder_config)
  params = model.init(jax.random.PRNGKey(0), images[:1])['params']
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x))
  jax.block_until_ready(forward(params, images))
  rates = []
  for _ in range(5):
    start, repeats = time.perf_counter(), 20
    for _ in range(repeats):
      out = forward(params, images)
    jax.block_until_ready(out)
    rates.append(repeats * batch / (time.perf_counter() - start))
  return statistics.median(rates)


def reading_rate(config_path, dataset, images=20_000):
  """Images/s of the streamed read alone (decode and centre crop, ``evaluation.read_threads``
  threads, no encoding), over the first ``images`` train images."""
  # pylint: disable=g-import-not-at-top
  from annoprop_jax import configuration
  from annoprop_jax.data import pipeline
  from annoprop_jax.evaluation import task_data, tasks
  config = _config(config_path, {})
  _, task, _ = tasks.resolve(f'{dataset}:classes', config.evaluation.dataset)
  size = configuration.encoder_config(config).image_size
  split = task_data.load(config.data, dataset, task, task.train_split, size, images,
                         preprocess='centre_crop', images_in_memory=1).images
  threads = config.evaluation.read_threads
  threads = pipeline.host_cores() if threads == -1 else threads
  start = time.perf_counter()
  for _ in split.local_batches(config.evaluation.batch_size, num_threads=threads):
    pass
  return len(split) / (time.perf_counter() - start), threads


def evaluate_child(spec):
  """One evaluation in this process (run by ``--child``): a JSON line of its measurements."""
  # pylint: disable=g-import-not-at-top
  from annoprop_jax.evaluation import encoder as encoder_lib
  config = _config(spec['config'], spec['overrides'])
  evaluator, params = _fresh(config)
  timing = {'seconds': 0.0, 'images': 0}
  features = encoder_lib.features

  def timed(*args, **kwargs):
    start = time.perf_counter()
    out = features(*args, **kwargs)
    timing['seconds'] += time.perf_counter() - start
    timing['images'] += len(out[0])
    return out

  encoder_lib.features = timed
  start = time.perf_counter()
  data = {entry: evaluator._task_data(entry)  # pylint: disable=protected-access
          for entry in config.evaluation.tasks}
  load_seconds = time.perf_counter() - start
  start = time.perf_counter()
  results = evaluator(params)
  total = time.perf_counter() - start
  peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
  print(json.dumps(dict(
      train_images=sum(len(train.targets) for train, _ in data.values()),
      load_s=load_seconds, extraction_s=timing['seconds'], extracted=timing['images'],
      extraction_img_per_s=timing['images'] / timing['seconds'],
      probes_s=total - timing['seconds'], peak_rss_mb=peak_kb / 1024, results=results)))


def run_child(spec):
  out = subprocess.run([sys.executable, __file__, '--child', json.dumps(spec)], cwd=REPO,
                       capture_output=True, text=True, check=False)
  if out.returncode:
    sys.exit(f'the evaluation failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', type=int, default=100_000)
  parser.add_argument('--small', type=int, default=10_000)
  parser.add_argument('--test', type=int, default=2_000)
  parser.add_argument('--workdir', default=os.path.expanduser('~/annoprop_eval_scale'))
  parser.add_argument('--config', default=os.path.join(REPO, 'configs', 'dino_scenes.py'))
  parser.add_argument('--out', default='')
  parser.add_argument('--child', default='')
  args = parser.parse_args()
  if args.child:
    return evaluate_child(json.loads(args.child))

  root = os.path.join(args.workdir, f'imagefolder_{args.images}_{args.test}')
  print(f'1. the ImageFolder ({args.images:,} + {args.test:,} images) and its dataset', flush=True)
  start = time.perf_counter()
  make_imagefolder(root, args.images, args.test, os.cpu_count())
  dataset = prepare_dataset(root, os.path.join(args.workdir, 'prepared'))
  print(f'  ready in {time.perf_counter() - start:.0f} s: {dataset}', flush=True)

  print('2. the training forward', flush=True)
  forward = training_forward(args.config)
  print(f'  {forward:,.0f} images/s', flush=True)

  read, threads = reading_rate(args.config, dataset)
  print(f'  reading alone: {read:,.0f} images/s ({threads} read threads, no encoding)',
        flush=True)
  report = dict(config=os.path.relpath(args.config, REPO), images=args.images, small=args.small,
                test=args.test, training_forward_img_per_s=forward, reading_img_per_s=read,
                read_threads=threads)
  common = {'evaluation.probes': ('knn', 'linear', 'fewshot'),
            'evaluation.preprocess': 'centre_crop', 'evaluation.images_in_memory': 1000,
            'evaluation.test_examples': args.test, 'evaluation.feature_cache': False,
            'evaluation.tasks': (f'{dataset}:classes',)}
  for name, count in (('small', args.small), ('large', args.images)):
    print(f'3. evaluate on {count:,} train images (its own process)', flush=True)
    report[name] = run_child(dict(config=args.config, overrides={
        **common, 'evaluation.train_examples': count}))
    r = report[name]
    print(f'  extraction {r["extraction_img_per_s"]:,.0f} images/s ({r["extracted"]:,} train '
          f'and test images in '
          f'{r["extraction_s"]:.0f} s), probes {r["probes_s"]:.0f} s, labels read in '
          f'{r["load_s"]:.0f} s, peak RSS {r["peak_rss_mb"]:,.0f} MB', flush=True)
    for key, value in sorted(r['results'].items()):
      print(f'    {key} {value:.4f}')

  print('4. the scenes tasks held in RAM and streamed', flush=True)
  scenes = {'evaluation.tasks': ('objects', 'presence', 'count'),
            'evaluation.probes': ('knn', 'linear'), 'evaluation.feature_cache': False}
  report['scenes_held'] = run_child(dict(config=args.config, overrides={
      **scenes, 'evaluation.images_in_memory': 0}))
  report['scenes_streamed'] = run_child(dict(config=args.config, overrides={
      **scenes, 'evaluation.images_in_memory': 1}))

  held, streamed = report['scenes_held']['results'], report['scenes_streamed']['results']
  ratio = report['large']['extraction_img_per_s'] / forward
  rss = report['large']['peak_rss_mb'] / report['small']['peak_rss_mb']
  print('\n| measure | value | goal |\n|---|---|---|')
  print(f'| training forward | {forward:,.0f} images/s | |')
  print(f'| reading alone (decode, crop; {threads} threads) | {read:,.0f} images/s | |')
  print(f'| extraction, {args.images:,} images | '
        f'{report["large"]["extraction_img_per_s"]:,.0f} images/s ({ratio:.2f}x the forward) '
        f'| >= 0.8x: {"met" if ratio >= 0.8 else "NOT met"} |')
  print(f'| peak RSS, {args.small:,} / {args.images:,} images | '
        f'{report["small"]["peak_rss_mb"]:,.0f} / {report["large"]["peak_rss_mb"]:,.0f} MB '
        f'({rss:.2f}x) | <= 1.2x: {"met" if rss <= 1.2 else "NOT met"} |')
  for key in sorted(held):
    print(f'| scenes {key}, held / streamed | {held[key]:.4f} / {streamed[key]:.4f} | '
          f'{"equal" if held[key] == streamed[key] else "DIFFERENT"} |')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(report, f, indent=1, sort_keys=True)
      f.write('\n')


if __name__ == '__main__':
  main()
