"""Zero-shot classification: prompts as the pipeline's caption bytes, the known answer of a
stand-in caption model whose embeddings are set by hand, a caption method's embeddings that are
the ones its CLIP loss reads, and the probe in an evaluation."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import configuration
from annoprop_jax import errors
from annoprop_jax import objectives
from annoprop_jax.data import pipeline
from annoprop_jax.evaluation import zero_shot
from annoprop_jax.objectives import clip
from conftest import fresh_evaluator, random_loss_inputs, tiny_config


def test_prompts_are_caption_bytes_class_major_cut_and_padded():
  got = zero_shot.prompt_bytes(['cross', 'disc'], ['a {}', 'a big {}'], 8)
  want = [b'a cross', b'a big cr', b'a disc', b'a big di']
  assert got.dtype == np.uint8 and got.shape == (4, 8)
  assert [bytes(row).rstrip(b'\0') for row in got] == want


@dataclasses.dataclass(frozen=True)
class _ColourModel:
  """Captions embed by the counts of the letters d, g and u (red, green, blue; the templates
  have none of them), images by their channel means: the zero-shot answer of an image is its
  dominant channel's class."""

  def embed_captions(self, params, caption):
    del params
    v = jnp.stack([(caption == ord(c)).sum(-1) for c in 'dgu'], -1) + 0.1
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)

  def embed_images(self, params, images):
    del params
    v = images.astype(jnp.float32).mean(axis=(1, 2))
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def test_the_nearest_class_prompt_wins_for_a_hand_set_model():
  model, rng = _ColourModel(), np.random.default_rng(0)
  labels = rng.integers(0, 3, 37)                  # 37 images: two batches of 32, one padded
  images = rng.integers(0, 60, (37, 4, 4, 3)).astype(np.uint8)
  images[np.arange(37), :, :, labels] += 150
  names = ['blue', 'red', 'green']                 # not the channels' order
  classes = zero_shot.class_embeddings(model, None, names, ['a {}', 'one {}'], 16)
  assert classes.shape == (3, 3)
  np.testing.assert_allclose(np.linalg.norm(classes, axis=1), 1.0, rtol=1e-6)
  logits = zero_shot.logits(model, None, images, classes, batch_size=32)
  channel_of_class = np.array([2, 0, 1])
  assert np.array_equal(channel_of_class[np.argmax(logits, 1)], labels)
  with pytest.raises(ValueError, match='templates with a'):
    zero_shot.class_embeddings(model, None, names, ['no slot'], 16)


class _CountingModel(_ColourModel):
  """_ColourModel that counts how often its image embedding is traced."""
  traces = 0

  def embed_images(self, params, images):
    type(self).traces += 1
    return super().embed_images(params, images)


def test_a_second_evaluation_reuses_the_compiled_image_embedding():
  model, images = _CountingModel(), np.zeros((5, 4, 4, 3), np.uint8)
  classes = zero_shot.class_embeddings(model, None, ['red', 'blue'], ['a {}'], 16)
  first = zero_shot.logits(model, None, images, classes)
  np.testing.assert_array_equal(zero_shot.logits(model, None, images, classes), first)
  assert _CountingModel.traces == 1


@pytest.mark.parametrize('name', ['clip_scenes', 'slip_scenes'])
def test_a_caption_methods_embeddings_are_the_ones_its_clip_loss_reads(name):
  overrides = {'objective.simclr_images': 0} if name == 'slip_scenes' else {}   # a 6-image batch
  config = tiny_config(name, **overrides)
  objective, inputs = random_loss_inputs(config)
  params, batch = inputs.params, inputs.batch
  _, (metrics, _) = objective.loss(inputs)
  method, annotation = objective.method, batch['annotation']
  scale = jnp.exp(params['annotation_encoder']['logit_scale'])
  loss, _ = clip.clip_loss(method.embed_images(params, annotation['images'][:, 0]),
                           method.embed_captions(params, annotation['caption']), scale)
  np.testing.assert_allclose(loss, metrics['clip_loss'], rtol=1e-5)


def test_zero_shot_in_an_evaluation_and_its_errors(tiny_data_dir):
  overrides = {'data.data_dir': tiny_data_dir, 'evaluation.tasks': ('objects', 'count'),
               'evaluation.probes': ('zero_shot',), 'evaluation.train_examples': 16,
               'evaluation.test_examples': 24, 'evaluation.zero_shot_templates': ('a {}',)}
  config = tiny_config('clip_scenes', **overrides)
  evaluator, _ = fresh_evaluator(config)
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  data = {'annotation': pipeline.zeros_batch(config.data.annotation)}
  params, _ = objective.init(jax.random.PRNGKey(0), data)
  results = evaluator(params['encoder'], params)
  # objects: classification and retrieval; count: retrieval only (no class names).
  retrieval = [f'retrieval_{d}_r{k}' for d in ('i2t', 't2i') for k in (1, 5)]
  assert sorted(results) == sorted(['objects_zero_shot'] + [f'{task}_{key}' for key in retrieval
                                                            for task in ('objects', 'count')])
  _, test = evaluator._task_data('objects')     # pylint: disable=protected-access
  names = pipeline.class_names(config.data, 'scenes', 'objects/label')
  assert names[:3] == ['circle', 'square', 'triangle']
  classes = zero_shot.class_embeddings(objective.method, params, names, ['a {}'],
                                       config.data.annotation.max_caption_bytes)
  want = np.mean(np.argmax(zero_shot.logits(objective.method, params, test.images, classes),
                           1) == test.targets)
  assert results['objects_zero_shot'] == want
  assert test.captions.shape == (24, config.data.annotation.max_caption_bytes)
  recall = zero_shot.retrieval_recall(
      zero_shot.embed(objective.method.embed_images, params, test.images),
      zero_shot.embed(objective.method.embed_captions, params, test.captions), test.captions)
  assert all(results[f'objects_retrieval_{k}'] == v for k, v in recall.items())
  with pytest.raises(errors.ConfigError, match='zero_shot needs a caption method'):
    configuration.validate(tiny_config('dino_scenes', **overrides))
  with pytest.raises(errors.ConfigError, match='need one {} each'):
    configuration.validate(tiny_config('clip_scenes', **{
        **overrides, 'evaluation.zero_shot_templates': ('a thing',)}))


def test_retrieval_recall_by_hand_with_repeated_captions():
  # 4 pairs; captions 0 and 3 have the same text, so either counts for images 0 and 3.
  text = np.array([[1, 0], [2, 0], [3, 0], [1, 0]], np.uint8)
  images = np.eye(4)
  captions = np.array([[0.0, 0.0, 0.0, 1.0],
                       [0.0, 0.5, 1.0, 0.0],
                       [0.0, 0.6, 0.8, 0.0],
                       [0.0, 0.0, 0.0, 1.0]])
  # Similarity[image, caption] = captions[caption, image]. Image -> caption: image 0 ties at 0
  # (the lower row, caption 0: a hit); image 1 -> caption 2 (0.6, a miss), caption 1 second;
  # image 2 -> caption 1 (1.0, a miss), caption 2 second; image 3 -> caption 0 (a tie with 3;
  # the same text: a hit). Caption -> image: 0 -> image 3 (same text: a hit); 1 -> image 2 (a
  # miss), image 1 second; 2 -> image 2 (a hit); 3 -> image 3 (a hit).
  got = zero_shot.retrieval_recall(images, captions, text, ks=(1, 2))
  assert got == {'i2t_r1': 0.5, 't2i_r1': 0.75, 'i2t_r2': 1.0, 't2i_r2': 1.0}


def test_zero_shot_without_class_names_is_one_line_before_any_encoding(tiny_data_dir,
                                                                         monkeypatch):
  from annoprop_jax.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  config = tiny_config('clip_scenes', **{
      'data.data_dir': tiny_data_dir, 'evaluation.tasks': ('count', 'objects'),
      'evaluation.probes': ('zero_shot',), 'evaluation.train_examples': 8,
      'evaluation.test_examples': 8})
  evaluator, _ = fresh_evaluator(config)
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  params, _ = objective.init(jax.random.PRNGKey(0),
                             {'annotation': pipeline.zeros_batch(config.data.annotation)})
  def no_encoding(*args, **kwargs):
    raise AssertionError('encoded')
  monkeypatch.setattr(evaluator_lib.encoder_lib, 'features', no_encoding)
  monkeypatch.setattr(evaluator_lib.pipeline, 'class_names', lambda *args: None)
  with pytest.raises(ValueError, match="has no class names for its objects/label feature"):
    evaluator(params['encoder'], params)
