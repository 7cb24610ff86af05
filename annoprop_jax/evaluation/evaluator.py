"""Runs the configured probes on the frozen encoder: during training every
``evaluation.every_steps`` steps, and standalone (``python -m annoprop_jax.main evaluate``).

Results are ``{'<task>_<probe>': score}``: accuracy for ``objects``, ``count`` and ``boxes``,
mean average precision for ``presence`` (see ``tasks.py``), one number per task and probe, and
for ``boxes`` also by object size (``boxes_<probe>_small`` etc., ``box_probes.SIZE_BINS``);
the few-shot probe gives ``<task>_fewshot_<N>shot`` for each shot count, the zero-shot one
(caption methods) ``<task>_zero_shot`` and ``<task>_retrieval_{i2t,t2i}_r{1,5}``.
"""
import time

import numpy as np

from annoprop_jax import checkpoint
from annoprop_jax import metrics as metrics_lib
from annoprop_jax import objectives
from annoprop_jax import storage
from annoprop_jax.data import pipeline
from annoprop_jax.evaluation import box_probes
from annoprop_jax.evaluation import encoder as encoder_lib
from annoprop_jax.evaluation import feature_cache
from annoprop_jax.evaluation import fewshot
from annoprop_jax.evaluation import probes
from annoprop_jax.evaluation import settings
from annoprop_jax.evaluation import task_data
from annoprop_jax.evaluation import tasks as tasks_lib
from annoprop_jax.evaluation import zero_shot

class Evaluator:
  """Probes one encoder after another on the same (cached) task images."""

  def __init__(self, eval_config, data_config, encoder_config, mesh, print_fn=print,
               objective_config=None):
    self.eval_config = eval_config                # the ``evaluation`` block
    self.data_config = data_config                # the ``data`` block (data_dir, scenes)
    self.encoder_config = encoder_config          # vit.EncoderConfig
    self.mesh = mesh
    self.print_fn = print_fn
    self._data = {}
    # Zero-shot reads the caption method's image and caption embeddings, not the encoder alone.
    self.caption_method = None
    if settings.ZERO_SHOT in eval_config.probes:
      self.caption_method = objectives.build(objective_config, encoder_config).method

  def _task_data(self, entry):
    """(train, test) ``task_data.LabelledImages`` of an ``evaluation.tasks`` entry."""
    if entry not in self._data:
      ec = self.eval_config
      dataset, task, _ = tasks_lib.resolve(entry, ec.dataset)
      size = self.encoder_config.image_size
      captions = settings.ZERO_SHOT in ec.probes        # for retrieval
      preprocess = self._preprocess(task)
      load = lambda split, limit, **part: task_data.load(self.data_config, dataset, task,
                                                        split, size, limit, captions=captions,
                                                        preprocess=preprocess,
                                                        images_in_memory=ec.images_in_memory,
                                                        **part)
      if ec.score_on == 'validation':     # both parts from the train split, disjoint
        part = lambda name: dict(held_out=ec.test_examples, part=name)
        self._data[entry] = (load(task.train_split, ec.train_examples, **part('fit')),
                             load(task.train_split, ec.test_examples, **part('held_out')))
      else:
        self._data[entry] = (load(task.train_split, ec.train_examples),
                             load(task.test_split, ec.test_examples))
    return self._data[entry]

  def _preprocess(self, task):
    """``evaluation.preprocess`` for image-level tasks; a crop would cut objects out of a
    scene-level task's images, so those are resized whole."""
    return self.eval_config.preprocess if task.target == 'first_label' else 'resize'

  def due(self, step, total_steps):
    """Whether to probe after ``step``: every ``every_steps`` steps and after the last one."""
    every = self.eval_config.every_steps
    return bool(every) and (step % every == 0 or step == total_steps)

  def __call__(self, encoder_params, params=None, cache=None):
    """Probes ``encoder_params``; zero-shot also reads ``params``, the whole network's; a
    ``feature_cache.FeatureCache`` keeps (or gives) the encoder's features of each split."""
    ec = self.eval_config
    probe_config = probes.ProbeConfig(learning_rates=tuple(ec.learning_rates),
                                      weight_decays=tuple(ec.weight_decays), epochs=ec.epochs)
    token_config = probes.ProbeConfig(learning_rates=tuple(ec.token_learning_rates),
                                      weight_decays=tuple(ec.weight_decays),
                                      epochs=ec.token_epochs or ec.epochs)
    # Every task's data first: a missing split or labels is one line before any encoding.
    entries = tasks_lib.expand(ec.tasks)
    data = {entry: self._task_data(entry) for entry in entries}
    if settings.ZERO_SHOT in ec.probes:
      self._check_class_names(entries)
    results, total, done = {}, len(entries) * len(ec.probes), 0
    start = time.perf_counter()
    for entry in entries:
      train, test = data[entry]
      dataset, task, name = tasks_lib.resolve(entry, ec.dataset)     # name: of results
      # Patch tokens only where a probe reads them (bounded by ``token_dtype``).
      tokens = task.target == 'box_label' or any(p in settings.TOKEN_PROBES for p in ec.probes)
      (train_pooled, train_tokens), (test_pooled, test_tokens) = (
          self._features(encoder_params, images, f'{name}_{role}', dataset, cache, tokens,
                         self._preprocess(task))
          for role, images in (('train', train.images), ('test', test.images)))
      with_cls = ec.cls_token and self.encoder_config.pool == 'cls'
      if task.target == 'box_label':      # one row per object, from the tokens of its box
        train_pooled, train_tokens = box_probes.object_features(
            train_tokens, train.image_index, train.boxes, train_pooled if with_cls else None)
        test_pooled, test_tokens = box_probes.object_features(
            test_tokens, test.image_index, test.boxes, test_pooled if with_cls else None)
      elif with_cls and tokens:
        train_tokens, test_tokens = (
            np.concatenate([pooled[:, None].astype(t.dtype), t], axis=1)
            for pooled, t in ((train_pooled, train_tokens), (test_pooled, test_tokens)))
      for probe in ec.probes:
        common = dict(kind=task.kind, num_classes=train.num_classes)
        if probe == settings.FEWSHOT:       # one label an image: objects, count, classes
          done += 1
          if task.kind != 'class' or task.target == 'box_label':
            self.print_fn(f'  eval {done}/{total} {name}_{probe}: skipped (not one label an '
                          f'image)')
            continue
          for shots, value in fewshot.fewshot_probe(
              train_pooled, train.targets, test_pooled, test.targets,
              num_classes=train.num_classes, shots=tuple(ec.fewshot_shots),
              seeds=ec.fewshot_seeds, l2=tuple(ec.fewshot_l2)).items():
            results[f'{name}_{probe}_{shots}shot'] = value
            self.print_fn(f'  eval {done}/{total} {name}_{probe}_{shots}shot = {value:.4f}')
          continue
        if probe == settings.ZERO_SHOT:
          done += 1
          scores = self._zero_shot(params, dataset, task, test)
          for key, value in scores.items():
            results[f'{name}_{key}'] = value
            self.print_fn(f'  eval {done}/{total} {name}_{key} = {value:.4f}')
          if not scores:
            self.print_fn(f'  eval {done}/{total} {name}_{probe}: skipped (no class names, no '
                          f'captions)')
          continue
        if probe == 'knn':
          logits = probes.knn_scores(train_pooled, train.targets, test_pooled, k=ec.knn_k,
                                     mesh=self.mesh, **common)
        elif probe == 'linear':
          logits = probes.linear_probe(train_pooled, train.targets, test_pooled, test.targets,
                                       config=probe_config, return_predictions=True,
                                       **common)['predictions']
        else:
          fit = probes.attentive_probe if probe == 'attentive' else probes.decoder_probe
          logits = fit(train_tokens, train.targets, test_tokens, test.targets,
                       config=token_config, sweep=len(ec.token_learning_rates) > 1,
                       return_predictions=True, **common)['predictions']
        if task.target == 'box_label':
          for suffix, value in box_probes.accuracy_by_size(logits, test.targets,
                                                           test.boxes).items():
            results[f'{name}_{probe}{suffix}'] = value
        else:
          results[f'{name}_{probe}'] = probes.score(logits, test.targets, kind=task.kind)
        score = results[f'{name}_{probe}']
        done += 1
        elapsed = time.perf_counter() - start
        self.print_fn(f'  eval {done}/{total} {name}_{probe} = {score:.4f} | '
                      f'ETA {metrics_lib.format_duration(elapsed / done * (total - done))}')
    return results


  def _features(self, encoder_params, images, key, dataset, cache, tokens, preprocess):
    ec = self.eval_config
    threads = (min(pipeline.host_cores(), settings.MAX_READ_THREADS) if ec.read_threads == -1
               else ec.read_threads)
    compute = lambda: encoder_lib.features(
        self.encoder_config, encoder_params, images, self.mesh, ec.batch_size, tokens=tokens,
        token_dtype=ec.token_dtype, num_threads=threads, num_workers=ec.read_workers,
        log=self.print_fn)
    if cache is None:
      return compute()
    depends_on = dict(dataset=dataset, score_on=ec.score_on, train_examples=ec.train_examples,
                      test_examples=ec.test_examples, preprocess=preprocess,
                      size=self.encoder_config.image_size, images=len(images),
                      tokens=ec.token_dtype if tokens else None)
    return cache.features(key, depends_on, compute)

  def _check_class_names(self, entries):
    """One line before any encoding when zero-shot would classify without class names."""
    for entry in entries:
      dataset, task, _ = tasks_lib.resolve(entry, self.eval_config.dataset)
      if (task.target == 'first_label'
          and pipeline.class_names(self.data_config, dataset, task.labels) is None):
        raise ValueError(f'zero-shot: dataset {dataset!r} has no class names for its '
                         f'{task.labels} feature (a ClassLabel with names); leave task '
                         f'{task.name!r} out of the zero-shot evaluation or prepare the dataset '
                         f'with its class names')

  def _zero_shot(self, params, dataset, task, test):
    """{'zero_shot': accuracy} where the task's classes have names (objects, classes), and
    {'retrieval_i2t_r1': ..., ...} where its test images have captions."""
    if params is None:
      raise ValueError('zero-shot needs the whole network\'s params, not only the encoder\'s')
    ec, method, scores = self.eval_config, self.caption_method, {}
    names = (pipeline.class_names(self.data_config, dataset, task.labels)
             if task.target == 'first_label' else None)
    if names:
      classes = zero_shot.class_embeddings(method, params, names, tuple(ec.zero_shot_templates),
                                           self.data_config.annotation.max_caption_bytes)
      logits = zero_shot.logits(method, params, test.images, classes, ec.batch_size)
      scores['zero_shot'] = probes.score(logits, test.targets, kind='class')
    if test.captions is not None and test.captions.any():
      recall = zero_shot.retrieval_recall(
          zero_shot.embed(method.embed_images, params, test.images, ec.batch_size),
          zero_shot.embed(method.embed_captions, params, test.captions, ec.batch_size),
          test.captions)
      scores.update({f'retrieval_{k}': v for k, v in recall.items()})
    return scores


def table(results, step=None):
  """A small text table of one evaluation."""
  header = f'evaluation at step {step}' if step is not None else 'evaluation'
  width = max(len(k) for k in results)
  return '\n'.join([header] + [f'  {k:<{width}}  {v:.4f}' for k, v in sorted(results.items())])


def probed_params(which, params, target_params):
  """The network params that ``which`` ('online' or 'target', ``objectives.probe_params``)
  names."""
  return target_params if which == 'target' else params


def probed_encoder(which, params, target_params):
  """The encoder params of ``probed_params``."""
  return probed_params(which, params, target_params)['encoder']


def evaluate_checkpoint(evaluator, workdir, which_params, total_steps, step=None,
                        print_fn=print):
  """Probes the ``which_params`` ('online' or 'target') encoder of the checkpoint of ``step``
  (default: the latest) in ``workdir``, its features kept in (or read from) the workdir's
  ``features/`` with ``evaluation.feature_cache``; appends the results to its metrics.jsonl and
  TensorBoard files and returns (step, results)."""
  step, params, target_params = checkpoint.load_params(workdir, step)
  probed = probed_params(which_params, params, target_params)
  cache = None
  if evaluator.eval_config.feature_cache:
    cache = feature_cache.FeatureCache(
        storage.path(workdir) / 'features' / f'step_{step}_{which_params}', probed['encoder'])
  results = evaluator(probed['encoder'], probed, cache)
  logger = metrics_lib.MetricsLogger(workdir, total_steps, print_fn)
  logger.write_evaluation(step, results)
  logger.close()
  return step, results
