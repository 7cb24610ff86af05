"""Calibration: does a supervised ViT of the demo size learn the scenes objects on this CPU?

Trains ``configs/supervised_objects.py`` (the demo encoder, supervised on the ``objects`` split)
and prints top-1 accuracy on ``objects_validation`` (whole image, resized to the view size)
after each chunk of steps, with wall-clock time. The issue's bar: >= 80% within 10 minutes.

  python benchmarks/supervised_reference.py --steps=3000 --eval_every=500 --workdir=/tmp/supref
"""
import argparse
import json
import time

import jax
import numpy as np

from annoprop_jax import configuration
from annoprop_jax import objectives
from annoprop_jax import train
from annoprop_jax.data import pipeline


def whole_images(config, split, size):
  """All images of ``split`` resized to ``size`` (uint8) and their first labels."""
  decode = pipeline.Decoder(max_objects=1, max_caption_bytes=1)
  source = pipeline.open_source(config.data, 'scenes', split)
  images, labels = [], []
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for i in range(len(source)):
    ex = decode(source[i])
    images.append(np.asarray(Image.fromarray(ex['image']).resize((size, size), Image.BILINEAR)))
    labels.append(ex['labels'][0])
  return np.stack(images), np.array(labels)


def accuracy(objective, params, images, labels, batch=500):
  logits_fn = jax.jit(objective.logits)
  correct = 0
  for i in range(0, len(images), batch):
    correct += int((np.argmax(logits_fn(params, images[i:i + batch]), -1)
                    == labels[i:i + batch]).sum())
  return correct / len(images)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', default='configs/supervised_objects.py')
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--eval_every', type=int, default=250)
  parser.add_argument('--workdir', default='/tmp/supervised_reference')
  parser.add_argument('--data_dir', default='~/annoprop_data')
  parser.add_argument('--set', action='append', default=[],
                      help='config overrides KEY=VALUE (python literal), e.g. model.width=96')
  args = parser.parse_args()
  config = configuration.load(args.config)
  config.data.data_dir = args.data_dir
  config.total_steps = args.steps
  config.log_every = min(50, args.eval_every)
  config.checkpoint_every = args.eval_every
  for item in args.set:
    key, value = item.split('=', 1)
    node = config
    *path, leaf = key.split('.')
    for part in path:
      node = node[part]
    node[leaf] = type(node[leaf])(eval(value))  # pylint: disable=eval-used
  size = config.data.annotation.views.size
  images, labels = whole_images(config, 'objects_validation', size)
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  results, start, eval_seconds = [], time.time(), [0.0]

  def evaluate(step, state):
    if step % args.eval_every and step != args.steps:
      return
    eval_start = time.time()
    acc = accuracy(objective, state.params, images, labels)
    trained = eval_start - start - eval_seconds[0]
    eval_seconds[0] += time.time() - eval_start
    results.append({'step': step, 'train_seconds': round(trained, 1), 'accuracy': acc})
    print(f'step {step}: objects_validation accuracy {100 * acc:.1f}% after {trained:.0f}s '
          f'of training (compile included, evaluation excluded)', flush=True)

  train.train(config, args.workdir, print_fn=lambda line: None, on_step=evaluate)
  print(json.dumps({'config': args.config, 'overrides': args.set,
                    'results': results}))


if __name__ == '__main__':
  main()
