"""The scenes dataset as written to disk: deterministic, consistent with the renderer."""
import os

import numpy as np

from annoprop_jax.data import pipeline
from annoprop_jax.data import scenes
from annoprop_jax.data import shapes
from annoprop_jax.data import scenes_dataset
from conftest import tiny_config


def _small(seed=0):
  spec = scenes.SceneSpec(resolution=32)
  return scenes_dataset.ScenesConfig(spec=spec, seed=seed, sizes=(('train', 24), ('objects', 8)))


def _read_files(directory):
  return {f: open(os.path.join(directory, f), 'rb').read()
          for f in sorted(os.listdir(directory)) if 'array_record' in f}


def test_same_seed_same_bytes(tmp_path):
  a = scenes_dataset.prepare(_small(), str(tmp_path / 'a'), num_workers=1, log=lambda s: None)
  b = scenes_dataset.prepare(_small(), str(tmp_path / 'b'), num_workers=2, log=lambda s: None)
  files_a, files_b = _read_files(a), _read_files(b)
  assert files_a and files_a == files_b
  c = scenes_dataset.prepare(_small(seed=1), str(tmp_path / 'a'), num_workers=1,
                             log=lambda s: None)
  assert c != a and _read_files(c) != files_a


def test_prepare_reuses_a_complete_dataset(tmp_path):
  first = scenes_dataset.prepare(_small(), str(tmp_path), num_workers=1, log=lambda s: None)
  messages = []
  again = scenes_dataset.prepare(_small(), str(tmp_path), num_workers=1, log=messages.append)
  assert again == first and not messages


def test_records_match_the_renderer(tiny_data_dir):
  config = tiny_config(**{'data.data_dir': tiny_data_dir})
  scenes_config = pipeline.scenes_config_from(config.data)
  source = pipeline.open_source(config.data, 'scenes', 'objects')
  decode = pipeline.Decoder(max_objects=8, max_caption_bytes=160)
  rendered = [scenes.render_single_object(scenes_config.spec, scenes_config.seed * 16 + 2, i)
              for i in range(scenes_config.sizes[2][1])]
  assert len(source) == len(rendered)
  for i in range(len(source)):
    record = decode(source[i])
    # tfds shuffles the record order: find the rendered example with the same pixels.
    matches = [ex for ex in rendered if np.array_equal(ex['image'], record['image'])]
    assert len(matches) == 1
    ex = matches[0]
    caption = bytes(record['caption']).rstrip(b'\0').decode()
    assert caption == ex['caption'] and shapes.SHAPES[ex['labels'][0]] in caption
    assert record['labels'][0] == ex['labels'][0] and record['labels'][1] == -1
    np.testing.assert_allclose(record['object_boxes'][0], ex['boxes'][0], atol=1e-6)
