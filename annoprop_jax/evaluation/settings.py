"""The ``evaluation`` block: its defaults and its checks (light: the config schema imports it)."""
import ml_collections

from annoprop_jax import errors
from annoprop_jax.evaluation import tasks

PROBES = ('linear', 'knn', 'attentive', 'decoder')
ZERO_SHOT = 'zero_shot'  # caption methods: the nearest class prompt (zero_shot.py); not in the
                         # default probes nor in quality.py's mean
FEWSHOT = 'fewshot'      # closed-form ridge on a few shots a class (fewshot.fewshot_probe); not
                         # in the default probes nor in quality.py's mean
PARAMS = ('auto', 'target', 'online')
SCORE_ON = ('test', 'validation')
PREPROCESS = ('resize', 'centre_crop')   # task_data.py
TOKEN_PROBES = ('attentive', 'decoder')
TOKEN_DTYPES = ('float32', 'bfloat16')
MAX_READ_THREADS = 8


def default_config():
  return ml_collections.ConfigDict(dict(
      every_steps=0,             # probe during training every N steps and at the end (0: never)
      params='auto',             # which encoder: 'target' (EMA), 'online', or 'auto': the EMA
                                 # teacher for DINO and AB_DINO, the online encoder otherwise
      dataset='scenes',          # the prepared dataset the tasks read (splits in tasks.py)
      # Each 'TASK' (on ``dataset``) or 'DATASET:TASK' (e.g. '~/tensorflow_datasets/food101:
      # classes'): one evaluation can read several datasets; the latter's results are named
      # '<dataset>_<task>_<probe>'.
      # 'paper' stands for the paper's downstream suite by tfds names (tasks.PAPER_SUITE:
      # ImageNet, Food101, Pets, Resisc45, Sun397 classes, Clevr count and distance, COCO boxes),
      # each read from data_dir as `tfds build NAME --file_format=array_record` writes it.
      tasks=('objects', 'presence', 'count'),
      # How the images of image-level tasks (objects, classes) reach the encoder's size:
      # 'resize' (whole) or 'centre_crop' (shorter side to size / 0.875, the centre), the crop
      # published ImageNet probes use. Scene-level tasks (presence, count, boxes, distance) are
      # always resized whole: a crop would cut objects out.
      preprocess='resize',
      # A task split of more images than this is read from the dataset at every evaluation, a
      # batch at a time, instead of held decoded between evaluations (0: always held). 20,000
      # images of 224 px are 3 GB.
      images_in_memory=20_000,
      # `evaluate` keeps each split's encoder features in WORKDIR/features/step_N_WHICH/ and a
      # rerun of the same checkpoint and settings (other probes) reads them (feature_cache.py).
      feature_cache=True,
      # The patch tokens are kept only for the token probes (attentive, decoder) and the boxes
      # task, in this dtype: 'bfloat16' halves their memory (a split of N images holds
      # N x patches x width of them).
      token_dtype='float32',
      # Streamed splits are decoded by grain as they are encoded: this many batches at a time in
      # threads (-1: one per core of this process, at most 8), in each of this many worker
      # processes (0: this one); each thread holds one decoded batch (batch_size // processes
      # images) in flight.
      read_threads=-1,
      read_workers=0,
      probes=PROBES,
      train_examples=2000,       # the first N images of each task's train split (0: all)
      test_examples=1000,        # ... and of its test split
      # What the probes are scored on: 'test' (each task's test split), or 'validation': the
      # last ``test_examples`` images of the task's train split (a class-balanced subset for a
      # balanced task), which the probes then never train on. Choose a recipe on 'validation'
      # and report it on 'test', once.
      score_on='test',
      batch_size=256,            # feature extraction
      knn_k=20,
      epochs=30,                 # linear / attentive / decoder probes
      learning_rates=(1e-3, 3e-3, 1e-2),   # swept on a holdout of the train features
      # Token probes (attentive, decoder): their own learning rates, swept on the holdout at the
      # first weight decay when there are several, and their own epochs (0: ``epochs``).
      token_learning_rates=(1e-3,),
      token_epochs=0,
      # With cls pooling the last block's patch outputs get no gradient from a pooled loss
      # (only the CLS output is read): token probes also see the CLS token, so a probe of
      # tokens can read what a probe of the pooled vector reads (boxes: with overlap 0).
      cls_token=True,
      weight_decays=(0.0, 1e-4),
      # The few-shot probe ('fewshot' in ``probes``; 'class' tasks on pooled features: objects,
      # count, classes): ridge regression on this many train images a class, averaged over
      # seeds, its L2 picked on other train images; results <task>_fewshot_<N>shot.
      fewshot_shots=(1, 5, 10, 25),
      fewshot_seeds=3,
      fewshot_l2=(1e-3, 1e-2, 1e-1, 1.0, 10.0),
      # The zero-shot probe ('zero_shot' in ``probes``; caption methods; tasks with class names:
      # objects, classes): each class is its prompts' mean caption embedding; results
      # <task>_zero_shot. Each template has one {} for the class name.
      zero_shot_templates=('a {}',),
      # At every evaluation, pictures of the first validation image in TensorBoard (a value
      # map for AB runs, the attention maps, the views; single-process runs): ``visualize``.
      visualize=True,
  ))


def validate(config):
  """One-line errors for the ``evaluation`` block."""
  names = [tasks.parse_entry(t, config.dataset)[1] for t in tasks.expand(config.tasks)]
  unknown = [t for t in names if t not in tasks.TASKS]
  if unknown:
    raise errors.ConfigError(f'evaluation.tasks: unknown {unknown}; known: {sorted(tasks.TASKS)} '
                             f'(each as TASK or DATASET:TASK; \'paper\': the paper\'s suite)')
  known = PROBES + (FEWSHOT, ZERO_SHOT)
  unknown = [p for p in config.probes if p not in known]
  if unknown:
    raise errors.ConfigError(f'evaluation.probes: unknown {unknown}; known: {known}')
  if ZERO_SHOT in config.probes and (not config.zero_shot_templates or any(
      t.count('{}') != 1 for t in config.zero_shot_templates)):
    raise errors.ConfigError(f'evaluation.zero_shot_templates need one {{}} each (the class '
                             f'name), got {tuple(config.zero_shot_templates)}')
  if FEWSHOT in config.probes and (
      not config.fewshot_shots or min(config.fewshot_shots) < 1 or config.fewshot_seeds < 1
      or not config.fewshot_l2 or min(config.fewshot_l2) <= 0):
    raise errors.ConfigError(f'evaluation.fewshot_shots must be >= 1, fewshot_seeds >= 1 and '
                             f'fewshot_l2 positive; got {tuple(config.fewshot_shots)}, '
                             f'{config.fewshot_seeds}, {tuple(config.fewshot_l2)}')
  if config.preprocess not in PREPROCESS:
    raise errors.ConfigError(f'evaluation.preprocess must be one of {PREPROCESS}, '
                             f'got {config.preprocess!r}')
  if config.token_dtype not in TOKEN_DTYPES:
    raise errors.ConfigError(f'evaluation.token_dtype must be one of {TOKEN_DTYPES}, got '
                             f'{config.token_dtype!r}')
  if config.read_threads < -1 or config.read_threads == 0 or config.read_workers < 0:
    raise errors.ConfigError(f'evaluation.read_threads must be >= 1 or -1 (a thread per core) '
                             f'and read_workers >= 0; got {config.read_threads}, '
                             f'{config.read_workers}')
  if config.images_in_memory < 0:
    raise errors.ConfigError(f'evaluation.images_in_memory must be >= 0 (0: no limit), got '
                             f'{config.images_in_memory}')
  if config.score_on not in SCORE_ON:
    raise errors.ConfigError(f'evaluation.score_on must be one of {SCORE_ON}, got '
                             f'{config.score_on!r}')
  if config.score_on == 'validation' and config.test_examples <= 0:
    raise errors.ConfigError('evaluation.score_on=validation needs test_examples > 0 (the '
                             'size of the part carved out of the train split)')
  if config.params not in PARAMS:
    raise errors.ConfigError(f'evaluation.params must be one of {PARAMS}, got {config.params!r}')
