"""A COCO-layout folder of JPEG images for pipeline benchmarks without a download: rendered scenes
upscaled to ``size`` px (quality 90), with their boxes as COCO (x, y, w, h) pixel boxes under
sparse category ids (2 k + 1) and their captions.

  python benchmarks/jpeg_scenes.py --images=2000 --out=/tmp/jpeg_scenes   # writes and prepares
"""
import argparse
import json
import os
import time

from PIL import Image

from annoprop_jax.data import prepare
from annoprop_jax.data import scenes
from annoprop_jax.data import shapes


def write_coco_layout(root, num_images, size=480, resolution=160, seed=0, split='train2017'):
  """Writes ROOT/<split>/*.jpg and ROOT/annotations/{instances,captions}_<split>.json."""
  os.makedirs(os.path.join(root, split), exist_ok=True)
  os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
  spec = scenes.SceneSpec(resolution=resolution)
  images, boxes, captions = [], [], []
  for i in range(num_images):
    example = scenes.render_scene(spec, seed, i)
    name = f'{i:06d}.jpg'
    Image.fromarray(example['image']).resize((size, size), Image.BICUBIC).save(
        os.path.join(root, split, name), quality=90)
    images.append({'id': i, 'file_name': name, 'width': size, 'height': size})
    for (y0, x0, y1, x1), label in zip(example['boxes'], example['labels']):
      boxes.append({'id': len(boxes), 'image_id': i, 'category_id': 2 * int(label) + 1,
                    'iscrowd': 0, 'bbox': [float(x0 * size), float(y0 * size),
                                           float((x1 - x0) * size), float((y1 - y0) * size)]})
    captions.append({'id': i, 'image_id': i, 'caption': example['caption']})
  categories = [{'id': 2 * k + 1, 'name': name} for k, name in enumerate(shapes.SHAPES)]
  with open(os.path.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
    json.dump({'images': images, 'annotations': boxes, 'categories': categories}, f)
  with open(os.path.join(root, 'annotations', f'captions_{split}.json'), 'w') as f:
    json.dump({'images': images, 'annotations': captions}, f)


def make(out, num_images, size=480, num_workers=0, log=print):
  """Writes the COCO-layout input (once) and prepares it; returns the prepared directory."""
  source = os.path.join(out, f'coco_{size}px_{num_images}')
  if not os.path.exists(os.path.join(source, 'annotations')):
    start = time.time()
    write_coco_layout(source, num_images, size=size)
    log(f'rendered {num_images} JPEG scenes of {size}px in {time.time() - start:.1f}s')
  start = time.time()
  directory = prepare.prepare(prepare.Options(
      format='coco', input=source, output=os.path.join(out, 'prepared'),
      name=f'jpeg_scenes_{size}px_{num_images}', num_workers=num_workers, shard_size=250),
                              log=log)
  log(f'prepare (or reuse) took {time.time() - start:.1f}s')
  return directory


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--images', type=int, default=2000)
  parser.add_argument('--size', type=int, default=480)
  parser.add_argument('--out', default='/tmp/jpeg_scenes')
  parser.add_argument('--num_workers', type=int, default=0)
  args = parser.parse_args()
  print(make(args.out, args.images, args.size, args.num_workers))


if __name__ == '__main__':
  main()
