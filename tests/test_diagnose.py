"""diagnose: the moves are shuffled within each image only, KL by hand, and on a short AB_Sup
run the decoder's Q is closer to its targets with the true moves than with shuffled ones."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import configuration
from annoprop_jax.evaluation import diagnose
from conftest import tiny_config


def test_kl_by_hand_and_moves_shuffled_within_each_image():
  p = jnp.array([[0.5, 0.5], [0.9, 0.1]])
  q = jnp.array([[0.25, 0.75], [0.9, 0.1]])
  np.testing.assert_allclose(diagnose.kl(p, jnp.log(q)),
                             [0.5 * np.log(2) + 0.5 * np.log(2 / 3), 0.0], rtol=1e-6)
  moves = jnp.arange(2 * 3 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 3, 4)
  shuffled = np.asarray(diagnose.shuffled_moves(moves, jax.random.PRNGKey(0)))
  for b in range(2):       # the same 9 moves of each image (rows intact), in another order
    got, want = shuffled[b].reshape(9, 4), np.asarray(moves[b]).reshape(9, 4)
    assert sorted(map(tuple, got)) == sorted(map(tuple, want))
    assert not np.array_equal(got, want)


def test_area_bins_follow_the_target_view():
  # Image 0: views of area 0.1, 0.25, 0.64 (boxes (ymin, xmin, ymax, xmax) in [0, 1]).
  boxes = jnp.array([[[0, 0, 0.5, 0.2], [0, 0, 0.5, 0.5], [0.2, 0.2, 1.0, 1.0]]])
  pairs = ~jnp.eye(3, dtype=bool)[None]
  masks = {k: np.asarray(v[0]) for k, v in diagnose.area_bin_masks(boxes, pairs).items()}
  assert list(masks) == ['<0.15', '0.15-0.4', '>=0.4']
  # Pair (i, j) falls in the bin of view j's area: column j, never the diagonal.
  np.testing.assert_array_equal(masks['<0.15'], [[0, 0, 0], [1, 0, 0], [1, 0, 0]])
  np.testing.assert_array_equal(masks['0.15-0.4'], [[0, 1, 0], [0, 0, 0], [0, 1, 0]])
  np.testing.assert_array_equal(masks['>=0.4'], [[0, 0, 1], [0, 0, 1], [0, 0, 0]])


def test_table_puts_each_number_under_its_bin():
  bins = ['0', '0-0.2', '0.2-0.5', '0.5-0.8', '>0.8']
  areas = ['<0.15', '0.15-0.4', '>=0.4']
  rows = ['kl_true', 'kl_shuffled', 'kl_copy', 'information']
  by_iou = {b: {r: 0.1 * (i + 1) + 0.01 * (j + 1) for j, r in enumerate(rows)}
            for i, b in enumerate(bins)}
  by_iou['0']['kl_true'] = None                          # no pair fell in that bin
  by_area = {b: {r: 2 + 0.1 * (i + 1) + 0.01 * (j + 1) for j, r in enumerate(rows)}
             for i, b in enumerate(areas)}
  result = {'step': 7, 'pairs': 96, 'by_iou': by_iou, 'by_area': by_area, 'identity_kl': 0.0321,
            'all': {r: 1.0 + j for j, r in enumerate(rows)},
            'area_pairs': {'<0.15': 20, '0.15-0.4': 30, '>=0.4': 46}}
  lines = diagnose.table(result).splitlines()
  assert lines[0] == 'diagnose at step 7 (96 pairs; nats)'
  assert lines[1].split() == ['IoU', *bins, 'all']
  assert lines[2].split() == ['kl_true', '-', '0.2100', '0.3100', '0.4100', '0.5100', '1.0000']
  assert lines[4].split() == ['kl_copy', '0.1300', '0.2300', '0.3300', '0.4300', '0.5300',
                              '3.0000']
  assert [line.split()[0] for line in lines[2:6]] == rows
  assert lines[6].split() == ['target', 'area', *areas, 'all']
  assert lines[8].split() == ['kl_shuffled', '2.1200', '2.2200', '2.3200', '2.0000']
  assert [line.split()[0] for line in lines[7:11]] == rows
  assert lines[11].split() == ['pairs', '20', '30', '46', '96']
  assert lines[12].split()[:2] == ['identity_kl', '0.0321']


@pytest.mark.slow
def test_a_trained_decoder_uses_the_action(tmp_path, tiny_data_dir):
  """At toy size the decoder learns to use the box only a little: measured at 400 steps of tiny
  AB_Sup, kl_shuffled - kl_true was 0.0002 nats with 16 px views (4 patches: little to point
  at) and 0.010 with 32 px views (16 patches), which this test uses."""
  from annoprop_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config('ab_sup_scenes', **{
      'data.data_dir': tiny_data_dir, 'total_steps': 400, 'log_every': 400,
      'checkpoint_every': 400, 'optimizer.learning_rate': 3e-3, 'target_network.rate': 0.05,
      'target_network.schedule': 'constant', 'data.annotation.views.size': 32,
      'data.bootstrap.views.size': 32})
  train.train(config, str(tmp_path), print_fn=lambda line: None)
  result = diagnose.diagnose(config, configuration.encoder_config(config), str(tmp_path))
  overall = result['all']
  assert result['step'] == 400 and result['pairs'] == 4 * 8 * 4 * 3
  # The area bins split the same pairs as the IoU bins; bootstrap crops (RRC 0.05-1) fall in
  # every bin.
  assert sum(result['area_pairs'].values()) == result['pairs']
  assert min(result['area_pairs'].values()) > 0, result['area_pairs']
  # Q is closer to its targets than copying the source's p(l|x) and than the mean target ...
  assert overall['kl_true'] < overall['kl_copy'] and overall['kl_true'] < overall['information']
  # ... and it needs the true box: shuffled moves fit the targets worse, by half the measured gap.
  assert overall['kl_shuffled'] - overall['kl_true'] > 0.005, diagnose.table(result)

  # `visualize` draws this run: value maps (a class of the scenes), attention, views, charts.
  from annoprop_jax.evaluation import visualize  # pylint: disable=g-import-not-at-top
  index = visualize.visualize(config, configuration.encoder_config(config), str(tmp_path),
                              str(tmp_path / 'pictures'), num_images=2)
  page = index.read_text()
  for name in ('training.png', 'value_map_0.png', 'attention_1.png', 'views_1.png'):
    assert f'src="{name}"' in page
    height, width, _ = visualize.image_array((tmp_path / 'pictures' / name).read_bytes()).shape
    assert width > 300 and height > 150, (name, width, height)
  maps = json.loads((tmp_path / 'pictures' / 'value_maps.json').read_text())
  assert len(maps) == 2 and 0 <= maps[0]['q_min'] <= maps[0]['q_max'] <= 1
