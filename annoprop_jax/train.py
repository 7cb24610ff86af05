"""The training loop: mesh, init or restore, step, log, checkpoint. Nothing method-specific."""
import contextlib
import dataclasses
import itertools
from typing import Any, Optional

from clu import parameter_overview
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

from annoprop_jax import checkpoint
from annoprop_jax import checkpoint_integrity
from annoprop_jax import checkpoint_recovery
from annoprop_jax import configuration
from annoprop_jax import metrics as metrics_lib
from annoprop_jax import objectives
from annoprop_jax import optimizer
from annoprop_jax import profiling
from annoprop_jax import sharding
from annoprop_jax import state as state_lib
from annoprop_jax import stop_request
from annoprop_jax import storage
from annoprop_jax import target_network
from annoprop_jax import wandb_mirror
from annoprop_jax import workdir_lock
from annoprop_jax.data import pipeline
from annoprop_jax.data import stream_spec
from annoprop_jax.evaluation import evaluator as evaluator_lib
from annoprop_jax.evaluation import visualize


def check_batch_sizes(config, mesh, streams):
  """ConfigError unless every stream's batch divides over the data axes and micro-batches."""
  for name in streams:
    sharding.check_batch_size(config.data[name].batch_size, mesh, f'data.{name}.batch_size',
                              config.microbatches)


def make_gradients(objective, config, mesh=None):
  """A pure (state, batch, rng) -> (gradients, (loss, metrics, method state)) of the step's loss.

  With ``config.microbatches = k > 1`` the batch is split into k micro-batches whose gradients
  are averaged (a scan, so activations of one micro-batch are live at a time). That equals the
  gradient of the whole batch for per-example losses (supervised). Batch-coupled losses see k
  smaller batches instead: SimCLR/CLIP/AB_SimCLR/AB_CLIP draw their candidates (negatives) from
  the micro-batch, and DINO's centre is computed from the state's centre in every micro-batch;
  the new centres of the micro-batches are averaged, which for DINO's linear update equals the
  update from the whole batch. ``mesh`` keeps micro-batches split over the batch axes. With
  ``optimizer.grad_clip_mode='per_loss'`` each loss's gradient (one backward pass each) is
  accumulated apart and clipped on its own before they add up.
  """
  k = config.microbatches
  per_loss = config.optimizer.grad_clip_mode == 'per_loss' and config.optimizer.grad_clip_norm > 0

  def one_batch(state, batch, rng):
    def inputs(params):
      return objectives.LossInputs(
          params=params, target_params=state.target_params, method_state=state.method_state,
          batch=batch, step=state.step, rng=rng, training=True)
    if not per_loss:
      (loss, (metrics, method_state)), grads = jax.value_and_grad(
          lambda params: objective.loss(inputs(params)), has_aux=True)(state.params)
      return grads, (loss, metrics, method_state)
    terms, backward, (metrics, method_state) = jax.vjp(
        lambda params: objective.loss_terms(inputs(params)), state.params, has_aux=True)
    grads = {name: backward({other: jnp.float32(name == other) for other in terms})[0]
             for name in terms}
    return grads, (sum(terms.values()), metrics, method_state)

  def accumulated(state, batch, rng):
    micro = jax.tree.map(lambda x: split_microbatches(x, k, mesh), batch)

    def body(grad_sum, xs):
      i, microbatch = xs
      grads, aux = one_batch(state, microbatch, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, grad_sum, grads), aux

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(one_batch, state, batch, rng)[0])
    grad_sum, (losses, metrics, method_state) = jax.lax.scan(body, zeros,
                                                            (jnp.arange(k), micro))
    grads = jax.tree.map(lambda g: g / k, grad_sum)
    # Diagnostics of an empty bin are NaN in some micro-batches: average what exists.
    metrics = jax.tree.map(lambda m: jnp.nanmean(m, axis=0), metrics)
    method_state = jax.tree.map(
        lambda e: e.mean(axis=0) if jnp.issubdtype(e.dtype, jnp.floating) else e[-1],
        method_state)
    return grads, (losses.mean(), metrics, method_state)

  def gradients(state, batch, rng):
    grads, (loss, metrics, method_state) = (one_batch if k == 1 else accumulated)(state, batch,
                                                                                  rng)
    if per_loss:
      metrics = dict(metrics, **{f'grad_norm_{name}': optax.tree.norm(g)
                                 for name, g in grads.items()})
      grads = optimizer.clip_each_loss(grads, config.optimizer.grad_clip_norm)
    return grads, (loss, metrics, method_state)

  return gradients


def make_train_step(objective, tx, schedules, config, mesh=None):
  """A pure (state, batch) -> (state, metrics) update: one optimizer step (on the gradients of
  ``make_gradients``) plus the EMA update; the EMA target and the centre change once per
  optimizer step."""
  gradients = make_gradients(objective, config, mesh)

  def train_step(state, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    grads, (loss, metrics, method_state) = gradients(state, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    momentum = target_network.momentum(config.target_network, state.step, config.total_steps)
    target_params = target_network.update(state.target_params, params, momentum)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
    metrics = dict(metrics, loss=loss, ema_momentum=momentum,
                   grad_norm=grad_norm, param_norm=param_norm,
                   finite=jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm),
                   **{name: fn(state.step) for name, fn in schedules.items()})
    new_state = state.replace(step=state.step + 1, params=params, target_params=target_params,
                              opt_state=opt_state, method_state=method_state)
    return new_state, metrics

  return train_step


def split_microbatches(x, k, mesh=None):
  """(B, ...) -> (k, B/k, ...); micro-batch i holds rows i, i+k, ... so that each device's
  slice of the batch contributes equally to every micro-batch (no data moves)."""
  micro = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
  if mesh is not None:
    micro = jax.lax.with_sharding_constraint(
        micro, NamedSharding(mesh, P(None, sharding.BATCH_AXES)))
  return micro


class _FiniteGuard:
  """Keeps each step's device-side finiteness flag until the loop is about to log or save,
  then fetches them all at once (no host sync per step) and names the first bad step."""

  def __init__(self, checkpointer):
    self.checkpointer = checkpointer
    self._unchecked = []          # (step, device bool)

  def record(self, step, finite):
    self._unchecked.append((step, finite))

  def check(self):
    bad = [step for step, ok in self._unchecked if not bool(ok)]
    self._unchecked = []
    if bad:
      latest = self.checkpointer.latest_step()
      kept = (f'the last good checkpoint is step {latest} in {self.checkpointer.directory}'
              if latest is not None else 'there is no checkpoint yet')
      raise FloatingPointError(f'non-finite loss, gradient or parameters at step {bad[0]}; '
                               f'stopping without saving or logging it; {kept}')


def _silent(line):
  del line


@dataclasses.dataclass(frozen=True)
class Program:
  """What runs on the devices: sharded init and the jitted train step, with their layouts."""
  init: callable                 # rng -> TrainState, created directly in its shardings
  train_step: callable           # jitted (state, global batch) -> (state, metrics); donates state
  abstract_state: state_lib.TrainState   # shapes and dtypes (ShapeDtypeStructs)
  state_shardings: state_lib.TrainState  # a NamedSharding per array (``mesh.rules``)
  batch_sharding: NamedSharding


def compiler_options(config, mesh):
  """XLA options of the train step: on GPUs, ``config.deterministic`` turns on XLA's
  deterministic ops (CPU and TPU programs are deterministic without it)."""
  if config.deterministic and mesh.devices.flat[0].platform == 'gpu':
    return {'xla_gpu_deterministic_ops': True}
  return None


def build_program(config, mesh, objective, example):
  """Builds the program for ``config`` on ``mesh``; ``example`` is a batch of numpy arrays per
  stream, of any batch size (init only looks at the shapes past the batch axis)."""
  tx, schedules = optimizer.make(config.optimizer, config.total_steps)

  def init_state(rng):
    params, method_state = objective.init(jax.random.fold_in(rng, 0), example)
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, target_params=params,
        opt_state=tx.init(params), rng=jax.random.fold_in(rng, 1), method_state=method_state)

  abstract_state = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  state_shardings = sharding.tree_shardings(abstract_state, mesh, config.mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(make_train_step(objective, tx, schedules, config, mesh),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, sharding.replicated(mesh)),
                       donate_argnums=0, compiler_options=compiler_options(config, mesh))
  return Program(init=jax.jit(init_state, out_shardings=state_shardings),
                 train_step=train_step, abstract_state=abstract_state,
                 state_shardings=state_shardings, batch_sharding=batch_sharding)


def train(config, workdir, print_fn=print, on_step=None, allow_config_change=False,
          takeover_lock=False, lock_stale_seconds=workdir_lock.STALE_AFTER):
  """Trains ``config`` in ``workdir`` (holding its lock, ``workdir_lock``); see ``_train``."""
  installed = stop_request.active()
  stop = installed or stop_request.StopRequest()
  stop.reinstall()
  try:
    configuration.validate(config)
    workdir = storage.path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() != 0:
      return _train(config, workdir, _silent, on_step, allow_config_change, stop)
    with workdir_lock.WorkdirLock(workdir, log=print_fn, stale_after=lock_stale_seconds,
                                  takeover=takeover_lock):
      return _train(config, workdir, print_fn, on_step, allow_config_change, stop)
  finally:
    if installed is None:
      stop.restore()


def _train(config, workdir, print_fn, on_step, allow_config_change, stop):
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if there is one.

  The inputs are checked before anything is written: a resume whose config differs from its
  checkpoint's in what the run depends on (``configuration.resume_identity``) is refused unless
  ``allow_config_change``, and the first step's batches are read and checked. Then every step
  reads a batch of each stream, takes one train step and asks the run's collaborators
  (``_Collaborators``) what is due. Whatever happens, the checkpointer, the logger and the data
  workers are closed. ``on_step(step, state)``, if given, runs on the host after every step;
  its time, like the evaluations', is left out of the logged throughput.
  """
  mesh = sharding.make_mesh(config.mesh)
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  check_batch_sizes(config, mesh, objective.streams)
  infos = pipeline.streams_info(config.data, objective.streams)
  objective.method.check_data(infos)
  identity = {**configuration.resume_identity(config), **pipeline.dataset_identity(infos)}
  with contextlib.ExitStack() as closing:
    iterators = _open_streams(config, mesh, objective.streams, workdir, closing, print_fn)
    # Init only needs shapes: a one-image batch of zeros (no second iterator, no extra workers).
    program = build_program(config, mesh, objective, {
        name: pipeline.zeros_batch(config.data[name]) for name in objective.streams})
    checkpoint_recovery.remove_interrupted_saves(workdir, print_fn)
    checkpointer = checkpoint.Checkpointer(workdir, config.checkpoint_every,
                                           config.keep_checkpoints, iterators,
                                           keep_every=config.keep_checkpoint_every,
                                           log=print_fn, run=identity)
    closing.callback(checkpointer.close)
    state = _initial_state(config, program, checkpointer, print_fn, allow_config_change)
    step = int(state.step)
    if stop.agreed():         # asked to stop while starting: nothing new to save
      by = stop.signal or 'on another process'
      print_fn(f'Stopped before step {step + 1} (signal {by}); rerun the same command to '
               'resume.')
      return state
    stream = _checked_batches(objective, iterators)
    first = [next(stream)] if step < config.total_steps else []
    if jax.process_index() == 0:
      _write_config(workdir, config)
    run = _Collaborators.open(config, workdir, mesh, checkpointer, first, state, closing,
                              print_fn)
    stream = itertools.chain(first, stream)
    while step < config.total_steps:
      batches = next(stream)
      run.profiler.before(step + 1)
      state, metrics = program.train_step(state, sharding.global_batch(
          {name: pipeline.device_part(b) for name, b in batches.items()}, mesh))
      step += 1
      run.record(step, state, metrics)
      stopping = stop.agreed(step)
      run.act(step, state, batches, stopping, on_step)
      if stopping:
        print_fn(f'Stopped at step {step} (signal {stop.signal or "on another process"}); '
                 'rerun the same command to resume.')
        break
  return state


def _open_streams(config, mesh, names, workdir, closing, print_fn):
  """{name: iterator} of the streams, each reading this process's part of the batches
  (``sharding.batch_part``) as the reading plan says (a resume keeps the worker counts its
  iterators were saved with); closed with ``closing``."""
  reading = pipeline.reading_plan(config.data, names,
                                  saved_workers=checkpoint.saved_worker_counts(workdir))
  _log_reading(config, reading, print_fn)
  part, parts = sharding.batch_part(mesh)
  datasets = pipeline.build_streams(config.data, names, config.seed, part, parts, reading)
  iterators = {name: iter(ds) for name, ds in datasets.items()}
  for it in iterators.values():
    closing.callback(it.close)        # stops grain worker processes, if any
  return iterators


@dataclasses.dataclass
class _Collaborators:
  """What the loop asks after each step: the logger (log now?), the checkpointer (save now?),
  the evaluator and its pictures (probe now?), the profiler and the finiteness guard, which
  keeps anything at or past a non-finite step from being logged, saved or probed."""
  config: Any
  print_fn: Any
  checkpointer: checkpoint.Checkpointer
  logger: metrics_lib.MetricsLogger
  profiler: profiling.StepProfiler
  finite: '_FiniteGuard'
  evaluator: Optional[evaluator_lib.Evaluator] = None
  pictures: Optional['_Pictures'] = None

  @classmethod
  def open(cls, config, workdir, mesh, checkpointer, first, state, closing, print_fn):
    step = int(state.step)
    evaluator = pictures = None
    if config.evaluation.every_steps:
      evaluator = evaluator_lib.Evaluator(config.evaluation, config.data,
                                          configuration.encoder_config(config), mesh, print_fn,
                                          objective_config=config.objective)
      pictures = _Pictures(config) if config.evaluation.visualize else None
    # Opening the logger drops what a killed run logged past the restored step.
    logger = metrics_lib.MetricsLogger(
        workdir, config.total_steps, print_fn, every=config.log_every, start_step=step,
        images_per_step=sum(stream.batch_size for stream in configuration.streams(
            config).values()),
        mirror=wandb_mirror.open_mirror(config, workdir, jax.process_index() == 0, print_fn))
    closing.callback(logger.close)
    _log_run_start(config, logger, first, step, state, workdir, print_fn)
    profiler = profiling.StepProfiler(config.profile_steps, workdir, print_fn)
    closing.callback(profiler.close)
    return cls(config, print_fn, checkpointer, logger, profiler, _FiniteGuard(checkpointer),
               evaluator, pictures)

  def record(self, step, state, metrics):
    """What the step returned: its finiteness flag and metrics (no host sync)."""
    self.finite.record(step, metrics.pop('finite'))
    self.logger.add(metrics)
    self.profiler.after(step, state)

  def act(self, step, state, batches, stopping, on_step):
    """Logs, saves, probes (not when stopping) and calls ``on_step``, each when due."""
    final = stopping or step == self.config.total_steps
    log, save = self.logger.due(step, final), self.checkpointer.due(step, final)
    evaluate = (not stopping and self.evaluator is not None
                and self.evaluator.due(step, self.config.total_steps))
    if log or save or evaluate or on_step is not None:
      self.finite.check()
    if log:
      self.logger.write_step(step, pipeline.stream_metrics(batches))
    if save:
      self.checkpointer.save(step, state_lib.to_pytree(state))
    with self.logger.paused():
      if evaluate:
        self._evaluate(step, state, batches)
      if on_step is not None:
        on_step(step, state)

  def _evaluate(self, step, state, batches):
    probed = objectives.probe_params(self.config.objective, self.config.evaluation.params)
    params = evaluator_lib.probed_params(probed, state.params, state.target_params)
    results = self.evaluator(params['encoder'], params)
    self.logger.write_evaluation(step, results)
    self.print_fn(evaluator_lib.table(results, step))
    if self.pictures is not None:
      for tag, image in self.pictures(state, step, batches).items():
        self.logger.write_image(tag, image, step)


def _log_reading(config, reading, print_fn):
  """One line on how the streams are read, when any of them was sized for this host."""
  auto = stream_spec.AUTO
  if any(auto in (config.data[n].num_workers, config.data[n].num_threads) for n in reading):
    print_fn(f'reading ({pipeline.host_cores()} cores): ' + ', '.join(
        f'{n} {w} worker processes x {t} threads' for n, (w, t) in reading.items()))


def _log_run_start(config, logger, first, step, state, workdir, print_fn):
  """The model's parameters (printed total, table in WORKDIR/parameters.txt), and in
  TensorBoard the config (text and hparams) and the views of the first batch of each stream."""
  if jax.process_index() != 0:
    return
  storage.write_atomically(storage.path(workdir) / 'parameters.txt',
                           parameter_overview.get_parameter_overview(state.params,
                                                                     include_stats=False))
  sizes = {name: int(parameter_overview.count_parameters(tree))
           for name, tree in state.params.items()}   # clu counts a scalar as 1.0
  print_fn(f'{sum(sizes.values()):,} parameters: '
           + ', '.join(f'{name} {size:,}' for name, size in sizes.items())
           + f' (table: {workdir}/parameters.txt)')
  tags = ['train/loss'] + [f'eval/{task}_{probe}' for task in config.evaluation.tasks
                           for probe in config.evaluation.probes]
  logger.write_config(config, tags if config.evaluation.every_steps else tags[:1])
  for batches in first:
    for name, batch in batches.items():
      for key in ('images', 'local_images'):
        if key in batch:
          logger.write_image(f'views/{name}_{key}', metrics_lib.view_grid(batch[key]), step)


class _Pictures:
  """The TensorBoard pictures of each evaluation (``evaluation.visualize``), on the first
  validation image; single-process runs only (the pictures compute on one host)."""

  def __init__(self, config):
    self.config = config
    self.image = None
    if jax.process_count() == 1:
      images, boxes = visualize.load_images(config, (), 1)
      self.image, self.boxes = (images[0], boxes[0]) if images else (None, None)

  def __call__(self, state, step, batches):
    if self.image is None:
      return {}
    return visualize.tensorboard_pictures(
        self.config, configuration.encoder_config(self.config), state_lib.to_pytree(state),
        step, self.image, self.boxes, pipeline.device_part(batches['annotation']))


def _write_config(workdir, config):
  """WORKDIR/config.json, atomically: a failed write (a full disk) keeps the previous one."""
  storage.write_atomically(storage.path(workdir) / 'config.json',
                           config.to_json_best_effort(indent=2, sort_keys=True))


def _checked_batches(objective, iterators):
  """Each step's {stream: host batch}, the annotation batch checked by the method."""
  while True:
    batches = {name: next(it) for name, it in iterators.items()}
    objective.method.check_batch(batches['annotation'])
    yield batches


def _initial_state(config, program, checkpointer, print_fn, allow_config_change):
  """The newest readable checkpoint's state, else a fresh one (with ``init_from``'s params)."""
  copy_state = jax.jit(lambda s: jax.tree.map(jnp.copy, s),
                       out_shardings=program.state_shardings)
  target = checkpoint.abstract_tree(state_lib.to_pytree(program.abstract_state),
                                    state_lib.to_pytree(program.state_shardings))
  check = lambda step, saved_run: _check_resume(config, step, saved_run, checkpointer,
                                                print_fn, allow_config_change)
  restored = checkpoint_recovery.restore_newest_readable(checkpointer, target, check_run=check)
  if restored is not None:
    step, tree, _ = restored
    # A fresh copy: restored arrays may not be donatable (jax#18617).
    print_fn(f'Resumed from {checkpointer.directory}/{step}')
    return copy_state(state_lib.from_pytree(program.abstract_state, tree))
  state = program.init(jax.random.PRNGKey(config.seed))
  if config.init_from:
    _, params, target_params = jax.device_get(checkpoint.load_params(config.init_from))
    detail = checkpoint_integrity.tree_differences(program.abstract_state.params, params)
    if detail:
      raise configuration.ConfigError(f'init_from={config.init_from!r} holds the params of '
                                      f'another model ({detail})')
    state = copy_state(state.replace(params=params, target_params=target_params))
    print_fn(f'Initialised params from {config.init_from}')
  return state


def _check_resume(config, step, saved_run, checkpointer, print_fn, allow_config_change):
  """ConfigError for a resume past ``total_steps`` or, unless ``allow_config_change``, with a
  config that differs from the one the checkpoint was trained with."""
  where = f'{checkpointer.directory}/{step}'
  changes = configuration.changed_keys(saved_run, checkpointer.run)
  if changes and not allow_config_change:
    more = f' (and {len(changes) - 3} more)' if len(changes) > 3 else ''
    raise configuration.ConfigError(
        f'{where} was trained with another config: {"; ".join(changes[:3])}{more}; resume '
        f'with the same values, or pass --allow_config_change to continue with the new ones')
  for change in changes:
    print_fn(f'WARNING: resuming {where} with a changed config: {change}')
  if step > config.total_steps:
    raise configuration.ConfigError(
        f'total_steps={config.total_steps} is below the restored step {step} ({where})')
