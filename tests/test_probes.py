"""Probes on frozen features: hand-computed kNN / mAP values and probes that must (or must not)
learn synthetic tasks."""
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax.evaluation import fewshot
from annoprop_jax.evaluation import probes


def _unit(degrees, radius=1.0):
  angle = np.deg2rad(np.asarray(degrees, np.float64))
  return np.stack([np.cos(angle), np.sin(angle)], 1) * np.asarray(radius)[..., None]


# 6 train points in 2D (radii differ: kNN must normalise), 3 test points.
TRAIN_ANGLES = [0, 20, 45, 90, 135, 180]
TRAIN_X = _unit(TRAIN_ANGLES, [1.0, 2.0, 0.5, 3.0, 1.0, 2.0])
TRAIN_LABELS = np.array([0, 0, 1, 1, 2, 2])
TEST_ANGLES = [40, 160, 100]
TEST_X = _unit(TEST_ANGLES, [5.0, 0.3, 1.0])


def test_mean_average_precision_by_hand():
  scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.4, 0.5], [0.7, 0.35, 0.5], [0.6, 0.2, 0.5],
                     [0.5, 0.3, 0.5]])
  targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
  # class 0, ranked rows 0..4: positives at ranks 1, 3, 5 -> precisions 1/1, 2/3, 3/5.
  # AP0 = (1 + 2/3 + 3/5) / 3 = 34/45.
  # class 1, ranked rows 1 (pos), 2, 4 (pos), 3, 0 -> precisions 1/1, 2/3.
  # AP1 = (1 + 2/3) / 2 = 5/6.
  # class 2 has no positive: skipped. mAP = (34/45 + 5/6) / 2 = 143/180.
  assert probes.mean_average_precision(scores, targets) == pytest.approx(143 / 180)
  # Perfectly ranked scores.
  assert probes.mean_average_precision(targets[:, :2] + 0.1 * scores[:, :2],
                                       targets[:, :2]) == 1.0
  # Tied scores are one threshold (order-independent): 2 positives among 4 equal scores -> 1/2.
  assert probes.mean_average_precision(np.zeros((4, 1)), [[1], [0], [0], [1]]) == 0.5
  assert probes.mean_average_precision(np.zeros((4, 1)), [[0], [1], [1], [0]]) == 0.5


def test_knn_class_equals_hand_computation():
  temperature = 0.07
  w = lambda a, b: np.exp(np.cos(np.deg2rad(a - b)) / temperature)   # exp(cosine sim / T)
  # k=3 nearest by angle: 40 -> 45 (1), 20 (0), 0 (0); 160 -> 180 (2), 135 (2), 90 (1);
  # 100 -> 90 (1), 135 (2), 45 (1).
  votes = np.array([
      [w(40, 20) + w(40, 0), w(40, 45), 0],
      [0, w(160, 90), w(160, 180) + w(160, 135)],
      [0, w(100, 90) + w(100, 45), w(100, 135)]])
  expected = votes / votes.sum(1, keepdims=True)
  scores = probes.knn_scores(TRAIN_X, TRAIN_LABELS, TEST_X, kind='class', num_classes=3, k=3,
                             temperature=temperature, chunk_size=2)   # 2 chunks, one padded
  np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)
  # The weighting matters: the majority of test 0's neighbours is class 0, the vote says 1.
  np.testing.assert_array_equal(expected.argmax(1), [1, 2, 1])
  accuracy = probes.knn_probe(TRAIN_X, TRAIN_LABELS, TEST_X, np.array([1, 2, 0]), kind='class',
                              num_classes=3, k=3, temperature=temperature)
  assert accuracy == 2 / 3


def test_knn_multilabel_equals_hand_computation():
  train_y = np.array([[1, 0], [1, 1], [0, 1], [0, 1], [1, 0], [0, 0]], bool)
  test_y = np.array([[1, 1], [0, 0], [1, 0]])
  scores = probes.knn_scores(TRAIN_X, train_y, TEST_X, kind='multilabel', num_classes=2, k=2)
  w = lambda a, b: np.exp(np.cos(np.deg2rad(a - b)) / 0.07)
  # k=2: 40 -> 45 [0,1], 20 [1,1]; 160 -> 180 [0,0], 135 [1,0]; 100 -> 90 [0,1], 135 [1,0].
  class0 = [w(40, 20) / (w(40, 20) + w(40, 45)), w(160, 135) / (w(160, 135) + w(160, 180)),
            w(100, 135) / (w(100, 135) + w(100, 90))]                  # ~ 0.31, 0.38, 0.09
  class1 = [1.0, 0.0, w(100, 90) / (w(100, 135) + w(100, 90))]
  np.testing.assert_allclose(scores, np.stack([class0, class1], 1), rtol=1e-5, atol=1e-7)
  # class 0 ranks test rows 1 (neg), 0 (pos), 2 (pos): AP = (1/2 + 2/3) / 2 = 7/12;
  # class 1: its only positive (row 0) ranks first: AP = 1.
  value = probes.knn_probe(TRAIN_X, train_y, TEST_X, test_y, kind='multilabel', num_classes=2,
                           k=2)
  assert value == pytest.approx((7 / 12 + 1) / 2)


# The two tests below share shapes and config, so the second reuses the first's compilations.
LINEAR_CONFIG = probes.ProbeConfig(epochs=10, batch_size=64)


def test_linear_probe_separates_clusters_and_reports_the_sweep():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 16)) * 4
  labels = rng.integers(0, 3, 600)
  x = centres[labels] + rng.normal(size=(600, 16))
  # Features may arrive in low precision.
  result = probes.linear_probe(x[:300].astype(jnp.bfloat16), labels[:300],
                               x[300:].astype(np.float16), labels[300:], kind='class',
                               num_classes=3, config=LINEAR_CONFIG)
  assert result['score'] >= 0.98
  config = LINEAR_CONFIG
  grid = [(lr, wd) for lr in config.learning_rates for wd in config.weight_decays]
  assert list(result['holdout_scores']) == grid
  best = max(result['holdout_scores'].values())
  assert result['holdout_scores'][(result['learning_rate'], result['weight_decay'])] == best


def test_linear_probe_on_random_labels_stays_at_chance():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(600, 16))
  labels = rng.permutation(np.arange(600) % 3)     # balanced, independent of x
  result = probes.linear_probe(x[:300], labels[:300], x[300:], labels[300:], kind='class',
                               num_classes=3, config=LINEAR_CONFIG)
  assert result['score'] < 0.45    # chance is 1/3 (std ~0.027 over 300 test rows)
  # The probe does fit its train rows better than chance: it is the test rows it cannot know.
  train = probes.linear_probe(x[:300], labels[:300], x[:300], labels[:300], kind='class',
                              num_classes=3, config=LINEAR_CONFIG)
  assert train['score'] > result['score'] + 0.05


def test_multilabel_linear_probe_reaches_high_map():
  rng = np.random.default_rng(2)
  prototypes = rng.normal(size=(5, 16)) * 2
  targets = rng.random((300, 5)) < 0.4
  x = targets @ prototypes + 0.3 * rng.normal(size=(300, 16))
  # 200 train rows < the default batch size 256: one (full) batch per step.
  result = probes.linear_probe(x[:200], targets[:200], x[200:], targets[200:],
                               kind='multilabel', num_classes=5,
                               config=probes.ProbeConfig(epochs=20, learning_rates=(1e-2,),
                                                         weight_decays=(0.0,)))
  assert result['score'] >= 0.95


def _position_task(n, rng, tokens=8, width=16, classes=4):
  """The class is the position of a marker token. Positions carry fixed embeddings, so mean
  pooling sees the same sum for every class; attention must find the marker."""
  position = np.random.default_rng(10).normal(size=(tokens, width))
  marker = np.random.default_rng(11).normal(size=width)
  marker *= 2 * np.sqrt(width) / np.linalg.norm(marker)
  labels = rng.integers(0, classes, n)
  x = position[None] + 0.5 * rng.normal(size=(n, tokens, width))
  x[np.arange(n), labels] += marker
  return x.astype(np.float32), labels


def test_attentive_and_decoder_probes_find_the_marker_mean_pooling_cannot():
  rng = np.random.default_rng(3)
  x, labels = _position_task(512, rng)
  train = x[:384], labels[:384]
  test = x[384:], labels[384:]
  config = probes.ProbeConfig(learning_rates=(3e-3,), epochs=30, batch_size=64)
  attentive = probes.attentive_probe(*train, *test, kind='class', num_classes=4, config=config)
  assert attentive['score'] >= 0.9
  decoder = probes.decoder_probe(*train, *test, kind='class', num_classes=4, config=config)
  assert decoder['score'] >= 0.9
  pooled = probes.linear_probe(train[0].mean(1), train[1], test[0].mean(1), test[1],
                               kind='class', num_classes=4, config=config)
  assert pooled['score'] < 0.5   # chance is 0.25


def test_every_test_row_is_scored():
  rng = np.random.default_rng(4)
  w = rng.normal(size=(8, 3))
  x = rng.normal(size=(457, 8)).astype(np.float32)
  labels = np.argmax(x @ w, 1)
  train, test = (x[:200], labels[:200]), (x[200:], labels[200:])   # 257 test rows
  config = probes.ProbeConfig(learning_rates=(1e-2,), weight_decays=(0.0,), epochs=5,
                              batch_size=64)
  result = probes.linear_probe(*train, *test, kind='class', num_classes=3, config=config,
                               return_predictions=True)
  assert result['predictions'].shape == (257, 3)
  # Score the same (seeded) probe against labels that agree with its predictions on every row
  # but the last, the one row of the padded last batch: 256 of 257 rows are right.
  agreeing = result['predictions'].argmax(1)
  agreeing[-1] = (agreeing[-1] + 1) % 3
  again = probes.linear_probe(*train, test[0], agreeing, kind='class', num_classes=3,
                              config=config, return_predictions=True)
  np.testing.assert_array_equal(again['predictions'], result['predictions'])   # seeded
  assert again['score'] == 256 / 257
  # Batches of 64 (the last one padded) give the predictions of one batch of all 257 rows.
  model = probes.LinearHead(3)
  params = probes.fit(model, *train, kind='class', learning_rate=1e-2, weight_decay=0.0,
                      epochs=5, batch_size=64)
  batched = probes.predict(model, params, test[0], batch_size=64)
  whole = probes.predict(model, params, test[0], batch_size=257)
  assert batched.shape == whole.shape == (257, 3)
  np.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-6)
  assert probes.score(batched, test[1], kind='class') == probes.score(whole, test[1], kind='class')


def test_inputs_are_validated():
  x, y = np.zeros((10, 4)), np.zeros(10, int)
  tokens = np.zeros((10, 3, 4))
  kw = dict(kind='class', num_classes=2)
  with pytest.raises(ValueError, match='10 feature rows but 9 targets'):
    probes.linear_probe(x, y[:9], x, y, **kw)
  with pytest.raises(ValueError, match=r'labels must lie in \[0, 2\)'):
    probes.linear_probe(x, y + 2, x, y, **kw)
  with pytest.raises(ValueError, match=r'expected pooled features \(N, D\)'):
    probes.linear_probe(tokens, y, tokens, y, **kw)
  with pytest.raises(ValueError, match=r'expected tokens \(N, T, D\)'):
    probes.attentive_probe(x, y, x, y, **kw)
  with pytest.raises(ValueError, match='needs int labels'):
    probes.knn_probe(x, y.astype(float), x, y, **kw)
  with pytest.raises(ValueError, match=r'multi-hot \(N, 2\)'):
    probes.linear_probe(x, np.zeros((10, 3)), x, np.zeros((10, 2)), kind='multilabel',
                        num_classes=2)
  with pytest.raises(ValueError, match='differ in shape'):
    probes.knn_probe(x, y, np.zeros((10, 5)), y, **kw)
  with pytest.raises(ValueError, match='unknown kind'):
    probes.knn_probe(x, y, x, y, kind='regression', num_classes=2)
  with pytest.raises(ValueError, match='not divisible by num_heads'):   # an explicit width
    probes.decoder_probe(np.zeros((10, 3, 6)), y, np.zeros((10, 3, 6)), y,
                         config=probes.ProbeConfig(decoder_width=6), **kw)


def test_ridge_equals_the_normal_equations_with_an_unpenalised_bias():
  rng = np.random.default_rng(0)
  x, t = rng.normal(size=(12, 5)), rng.choice([-1.0, 1.0], size=(12, 3))
  for l2 in (1e-2, 3.0):
    # Numpy's closed form on [x, 1] (f64), only the weights penalised.
    design = np.concatenate([x, np.ones((12, 1))], 1)
    penalty = np.diag([l2] * 5 + [0.0])
    want = np.linalg.solve(design.T @ design + penalty, design.T @ t)
    weights, bias = fewshot._ridge(jnp.float32(x), jnp.float32(t), np.float32(l2))  # pylint: disable=protected-access
    np.testing.assert_allclose(weights, want[:5], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bias, want[5], rtol=1e-4, atol=1e-5)


def test_fewshot_with_every_train_row_a_shot_equals_numpy_ridge():
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(4, 6))
  train_y = np.repeat(np.arange(4), 3)                 # 3 rows a class: 3 shots take them all
  train_x = centres[train_y] + rng.normal(scale=0.8, size=(12, 6))
  test_y = rng.integers(0, 4, 200)
  test_x = centres[test_y] + rng.normal(scale=0.8, size=(200, 6))
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  design = np.concatenate([unit(train_x), np.ones((12, 1))], 1)
  solution = np.linalg.solve(design.T @ design + np.diag([0.1] * 6 + [0.0]),
                             design.T @ (2 * np.eye(4)[train_y] - 1))
  want = np.mean(np.argmax(unit(test_x) @ solution[:6] + solution[6], 1) == test_y)
  got = fewshot.fewshot_probe(train_x, train_y, test_x, test_y, num_classes=4, shots=(3,),
                             seeds=2, l2=(0.1,))
  assert 0.4 < want < 0.95                             # neither chance nor trivially perfect
  np.testing.assert_allclose(got[3], want, atol=1e-9)


def test_fewshot_learns_with_more_shots_and_picks_l2_on_train_rows():
  rng = np.random.default_rng(2)
  centres = rng.normal(size=(5, 16))
  make = lambda n: (lambda y: (centres[y] + rng.normal(scale=2.0, size=(n, 16)), y))(
      rng.integers(0, 5, n))
  (train_x, train_y), (test_x, test_y) = make(600), make(400)
  got = fewshot.fewshot_probe(train_x, train_y, test_x, test_y, num_classes=5, shots=(1, 25))
  assert got[1] < got[25] and got[25] > 0.6, got
  # Random train labels: chance on test, whatever the l2 the selection picks.
  noise = fewshot.fewshot_probe(train_x, rng.permutation(train_y), test_x, test_y,
                               num_classes=5, shots=(25,))
  assert noise[25] < 0.35, noise
  with pytest.raises(ValueError, match='few-shot needs'):
    fewshot.fewshot_probe(train_x, train_y, test_x, test_y, num_classes=5, shots=(0,))


@pytest.mark.parametrize('devices', [1, 8])
@pytest.mark.parametrize('similarities', [probes.SIMILARITIES, 100])
def test_knn_with_the_bank_split_over_devices_equals_brute_force(devices, similarities,
                                                                 monkeypatch):
  # similarities=100: chunks of 1 query against 97 rows on one device, of 7 against 13 rows a
  # device on 8 (at most 100 similarities a device at once).
  monkeypatch.setattr(probes, 'SIMILARITIES', similarities)
  import jax  # pylint: disable=g-import-not-at-top
  from annoprop_jax import sharding  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  # 97 train rows: 7 padding rows over 8 shards of 13; k = 60 is more than a shard holds and
  # reaches train rows of negative similarity, below the padding's 0 were it not masked.
  train_x, test_x = rng.normal(size=(97, 8)), rng.normal(size=(37, 8))
  train_y = rng.integers(0, 5, 97)
  mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:devices])
  assert mesh.devices.size == devices
  vote, queries = probes._knn(mesh, 60, 0.07), []   # pylint: disable=protected-access
  monkeypatch.setattr(probes, '_knn', lambda *args: lambda *a: queries.append(len(a[-1]))
                      or vote(*a))
  got = probes.knn_scores(train_x, train_y, test_x, kind='class', num_classes=5, k=60,
                          temperature=0.07, chunk_size=16, mesh=mesh)
  rows = 97 if devices == 1 else 13           # a device's rows of the (on 8 devices padded) bank
  assert set(queries) == {min(16, max(1, similarities // rows))}
  # Brute force in float64: every test row's 60 most similar train rows, exp(sim / T) votes.
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  similarity = unit(test_x) @ unit(train_x).T
  want = np.zeros((37, 5))
  for q in range(37):
    nearest = np.argsort(-similarity[q], kind='stable')[:60]
    weights = np.exp(similarity[q, nearest] / 0.07)
    np.add.at(want[q], train_y[nearest], weights)
    want[q] /= weights.sum()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
