"""Weights & Biases, optional (``pip install 'annoprop_jax[wandb]'``): a run's scalars, config and
pictures mirrored to a W&B run, besides metrics.jsonl and TensorBoard. Off unless the config's
``wandb.project`` is set; only process 0 writes.

A run keeps its W&B id in ``WORKDIR/wandb_id``: online, a resumed run appends to the same W&B
run (W&B keeps a step's first value: the records that a killed run logged past its last
checkpoint stay as they were, while metrics.jsonl and TensorBoard drop and log them again).
``wandb.mode='offline'`` (or ``WANDB_MODE=offline``) writes each start of the run under
``WORKDIR/wandb/`` (a gs:// workdir: under the local temp folder) as its own record of that
id, for ``wandb sync`` later (W&B applies ``resume`` online only). W&B that cannot start (no
network, no login) is one warning line, and the run trains without it.
"""
import importlib.util
import os
import secrets
import tempfile

import ml_collections

from annoprop_jax import errors
from annoprop_jax import storage

MODES = ('online', 'offline')


def default_config():
  """The ``wandb`` block of every config."""
  return ml_collections.ConfigDict(dict(
      project='',                # '' : off
      entity='',                 # the W&B team or user ('' : your default)
      group='',                  # runs shown together (e.g. a sweep's)
      name='',                   # the run's display name ('' : the workdir's name)
      mode='online',             # or 'offline'; WANDB_MODE in the environment overrides it
  ))


def validate(block):
  if block.mode not in MODES:
    raise errors.ConfigError(f'wandb.mode must be one of {", ".join(MODES)}, got {block.mode!r}')
  if block.project and importlib.util.find_spec('wandb') is None:
    raise errors.ConfigError(f'wandb.project is {block.project!r} but wandb is not installed: '
                             "pip install 'annoprop_jax[wandb]'")


def _run_id(workdir):
  """The run's W&B id, made on its first start and kept in WORKDIR/wandb_id."""
  path = storage.path(workdir) / 'wandb_id'
  if path.exists():
    return path.read_text().strip()
  run_id = secrets.token_hex(4)
  storage.write_atomically(path, run_id)
  return run_id


class Mirror:
  """The W&B run of one training run: ``log`` scalars, ``image``, ``close``."""

  def __init__(self, config, workdir):
    import wandb  # pylint: disable=g-import-not-at-top  # an optional extra
    self._wandb = wandb
    block = config.wandb
    local = (tempfile.gettempdir() if storage.is_remote(str(workdir))
             else str(storage.path(workdir)))
    name = block.name or os.path.basename(str(workdir).rstrip('/'))
    self.run = wandb.init(
        project=block.project, entity=block.entity or None, group=block.group or None,
        name=name, id=_run_id(workdir), resume='allow', dir=local,
        mode=os.environ.get('WANDB_MODE', block.mode), config=config.to_dict(),
        allow_val_change=True,   # a resume may change what FREE_TO_CHANGE allows
        settings=wandb.Settings(console='off', silent=True))

  def log(self, values, step):
    self.run.log(values, step=step)

  def image(self, tag, image, step):
    self.run.log({tag: self._wandb.Image(image)}, step=step)

  def close(self):
    self.run.finish()


def open_mirror(config, workdir, is_writer, print_fn=print):
  """The run's Mirror, or None when ``wandb.project`` is empty, this is not process 0, or W&B
  does not start (one line through ``print_fn``)."""
  if not (config.wandb.project and is_writer):
    return None
  try:
    return Mirror(config, workdir)
  except Exception as e:  # pylint: disable=broad-except  # W&B's many errors; training goes on
    last = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
    print_fn(f'warning: Weights & Biases did not start ({type(e).__name__}: {last}); training '
             'without it')
    return None
