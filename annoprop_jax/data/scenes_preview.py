"""A preview of the scenes dataset: 4 x 8 grids of scenes and of single objects, and captions.

  python -m annoprop_jax.data.scenes_preview SCENES.png [OBJECTS.png] [SEED] [SCALE]

Without OBJECTS.png both grids are stacked into SCENES.png; SCALE (default 2) enlarges pixels.
"""
import sys

import numpy as np
from PIL import Image

from annoprop_jax.data import scenes


def grid_image(images, rows, cols, pad=2):
  """The first rows x cols images (H, W, 3) on a white grid with ``pad`` pixels between."""
  h, w = images[0].shape[:2]
  out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
  for k, im in enumerate(images[:rows * cols]):
    r, c = divmod(k, cols)
    y, x = pad + r * (h + pad), pad + c * (w + pad)
    out[y:y + h, x:x + w] = im
  return out


def main(argv):
  if len(argv) < 2:
    raise SystemExit(__doc__.strip())
  spec = scenes.SceneSpec()
  seed = int(argv[3]) if len(argv) > 3 else 0
  scale = int(argv[4]) if len(argv) > 4 else 2
  scene_examples = [scenes.render_scene(spec, seed, i) for i in range(32)]
  objects = [scenes.render_single_object(spec, seed, i) for i in range(32)]
  scene_grid = grid_image([e['image'] for e in scene_examples], 4, 8)
  object_grid = grid_image([e['image'] for e in objects], 4, 8)

  def save(arr, path):
    im = Image.fromarray(arr)
    if scale > 1:
      im = im.resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    im.save(path)

  if len(argv) > 2 and argv[2]:
    save(scene_grid, argv[1])
    save(object_grid, argv[2])
  else:
    gap = np.full((8, scene_grid.shape[1], 3), 255, np.uint8)
    save(np.concatenate([scene_grid, gap, object_grid]), argv[1])
  for k, e in enumerate(scene_examples[:8]):
    print(f"scene {k}: {e['caption']}")
  for k, e in enumerate(objects[:8]):
    print(f"object {k}: {e['caption']}")


if __name__ == '__main__':
  main(sys.argv)
