"""What one accelerator does with annoprop_jax, in one prepared run of a few minutes.

  python benchmarks/accelerator.py [--budget_s=420] [--out=FILE.jsonl] [--sizes=S/16,B/16]
      [--views=512] [--peak_tflops=X] [--stages=env,step,golden,large,pipeline,ab]

Every measurement is one JSON line (stdout, and ``--out``); a Markdown table of them ends the
run. The stages run in this order, each skipped, with a line saying so, when its estimated time
does not fit what is left of ``--budget_s`` (compiles included: the estimates grow with the
compile times measured so far); a stage that fails says how, and the next one runs:

  env       the device, the versions, the host's cores, the peak FLOP/s that MFU divides by (a
            table of chips' dense bf16 datasheet peaks, or --peak_tflops), and the rate of one
            large bf16 matrix product measured here (what the chip delivers on plain matmuls)
  step      DINO and AB_DINO train steps at the first of --sizes (224 px, bf16, the paper's
            heads: 65,536 prototypes; AB's decoder 384 wide, 4 deep) at --views views per chip
            (DINO: views/2 images x 2 views; AB_DINO: views/4 x 2 annotation + views/8 x 4
            bootstrap, the paper's split), compiled as training compiles them: compile time,
            FLOPs per step (XLA's cost analysis of the compiled step) and per view, against the
            ViT's forward pass counted by hand (about 4: the online network's forward and
            backward and the target network's forward), step time (steps chained as in
            training, median of windows), MFU, views/s, memory (the compiled program's
            arguments + temporaries, temporaries per view, the device's peak so far) and the
            AB_DINO / DINO step-time ratio, the two alternating window by window. A step that
            does not build with ``model.attention='auto'`` is reported and built with Flax's
  golden    the first 5 losses of :tiny configs (float32 and a bf16 paper config) against the
            CPU's golden losses (tests/golden_losses.json), at the default matmul precision
            (TF32 on NVIDIA GPUs for float32) and at 'highest', each against its tolerance
  large     DINO and AB_DINO at the other --sizes, as in ``step``
  pipeline  both AB streams read together as training reads them, from 480 px JPEG scenes
            (benchmarks/jpeg_scenes.py) with the reading sized by ``num_workers=-1`` for this
            host's cores, against the demand of the AB_DINO step measured above; the cores one
            device needs
  ab        A/Bs on the AB_DINO step, each alternating with the step itself: the attention of
            ``model.attention='auto'`` (cuDNN's fused on NVIDIA GPUs) against Flax's plain one
            and against jax.nn.dot_product_attention's XLA path, the hand-written
            LayerNorm against Flax's, ``deterministic`` on against off, 2 micro-batches against
            1, and a host that waits for the device every 10 steps (a multi-process stop
            agreement) against one that never waits; and whether two runs of 3 steps from one
            init end bit-identical, with XLA's deterministic ops and without

``--predict`` runs no step: it prints each step's FLOPs (the lowered program's cost analysis, on
any machine) and the step time and views/s they mean at --peak_tflops and each of --mfu.

On a GPU lent for minutes (nothing to download there; the packages its image lacks travel as
wheels that ``benchmarks/accelerator_wheels.sh`` fetches into .whl/, once, here):

  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \\
    && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 benchmarks/accelerator.py \\
       --budget_s=420 --out=$OUT/accelerator.jsonl

``--tiny`` runs every stage at toy sizes (a 2-block ViT on 32 px views; the streams read in the
process, as starting worker processes takes longer than the toy run): the test suite runs it on
the CPU, so that the first accelerator it meets finds it working.
"""
import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, 'tests'))
import ab_step_time  # pylint: disable=g-import-not-at-top,wrong-import-position
import jpeg_scenes  # pylint: disable=g-import-not-at-top,wrong-import-position
import pipeline_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position

from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import objectives  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax.data import stream_spec  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax.models import layer_norm  # pylint: disable=g-import-not-at-top,wrong-import-position
from annoprop_jax.models import vit  # pylint: disable=g-import-not-at-top,wrong-import-position

AB_DINO = os.path.join(REPO, 'configs', 'paper', 'ab_dino_coco.py')
STAGES = ('env', 'step', 'golden', 'large', 'pipeline', 'ab')

# Dense bf16 peaks of the datasheets, TFLOP/s, by a substring of jax's device_kind (first match).
PEAK_TFLOPS = (('H200', 989.0), ('H100 PCIe', 756.0), ('H100', 989.0), ('H800', 989.0),
               ('A100', 312.0), ('L40S', 362.0), ('L4', 121.0), ('TPU v6 lite', 918.0),
               ('TPU v5 lite', 197.0), ('TPU v5', 459.0), ('TPU v4', 275.0))

# Golden losses: the :tiny configs run here, and how far from the CPU's their first 5 losses may
# be (max |got / want - 1| over the steps). Float32 at 'highest' differs from the CPU in the order
# of reductions only (the suite allows 1e-4 between jax versions on one CPU; a GPU reduces and
# fuses in other orders): 1e-3. The default precision of float32 matmuls on NVIDIA GPUs is TF32
# (10 mantissa bits in the inputs). Measured on the CPU (2026-12-04), computing these float32
# configs in bf16 (8 bits: 4x TF32's rounding) moves their 5 losses by at most 1.7e-3 (DINO,
# AB_DINO), 5.2e-3 (SimCLR) and 3.8e-3 (CLIP), and the bf16 paper config moves by 5.4e-4
# between two CPU compilations (-O0 and -O2): TF32 1e-2, bf16 2e-2.
GOLDEN_CONFIGS = ('configs/dino_scenes.py', 'configs/ab_dino_scenes.py',
                  'configs/paper/ab_dino_coco.py')
GOLDEN_TOLERANCE = {('float32', 'highest'): 1e-3, ('float32', 'default'): 1e-2,
                    ('bfloat16', 'highest'): 2e-2, ('bfloat16', 'default'): 2e-2}


class Report:
  """JSON lines to stdout and a file; a table at the end."""

  def __init__(self, out):
    self.records = []
    self.out = open(out, 'a') if out else None

  def __call__(self, stage, **fields):
    record = {'stage': stage, **{k: _plain(v) for k, v in fields.items()}}
    self.records.append(record)
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    if self.out:
      self.out.write(line + '\n')
      self.out.flush()
    return record

  def table(self):
    lines = ['| stage | what | figures |', '|---|---|---|']
    for r in self.records:
      what = r.get('name') or r.get('config') or r.get('device_kind') or ''
      figures = ', '.join(f'{k} {_short(v)}' for k, v in r.items()
                          if k not in ('stage', 'name', 'config', 'losses', 'cpu_losses',
                                       'cpu_versions', 'rounds'))
      lines.append(f'| {r["stage"]} | {what} | {figures} |')
    return '\n'.join(lines)


def _first_line(error):
  return f'{type(error).__name__}: {(str(error).splitlines() or [""])[0][:300]}'


def _plain(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def _short(value):
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def peak_flops(device, override_tflops):
  """(FLOP/s, where it comes from) for MFU; (None, why) when unknown."""
  if override_tflops:
    return override_tflops * 1e12, '--peak_tflops'
  for name, tflops in PEAK_TFLOPS:
    if name.lower() in device.device_kind.lower():
      return tflops * 1e12, f'datasheet dense bf16 ({name})'
  return None, f'no peak known for {device.device_kind!r}: pass --peak_tflops'


def matmul_rate(n, dtype, repeats=10):
  """FLOP/s of an (n x n) @ (n x n) product, after a warm-up, median of ``repeats``."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  product = jax.jit(jnp.matmul)
  product(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    product(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Configs: DINO and AB_DINO at a model size and a number of views per chip.

def ab_dino_config(size, views, image_size, tiny):
  """The paper's AB_DINO (configs/paper/ab_dino_coco.py) at ``size`` and ``views`` per chip."""
  config = configuration.load(AB_DINO).unlock()
  config.model.update(vit.vit_size(size))
  config.mesh.update(data=1, fsdp=1, tensor=1)
  # Global views only (2 per annotation image, as every figure in RESULTS.md was measured):
  # the paper config's 96 px local crops would mix smaller views into a per-view count.
  config.data.annotation.local_views.num = 0
  config.data.annotation.update(batch_size=max(1, views // 4))
  config.data.bootstrap.update(batch_size=max(1, views // 8))
  for stream in (config.data.annotation, config.data.bootstrap):
    stream.views.size = image_size
  if tiny:     # toy heads, so that the CPU runs it in seconds
    config.objective.update(num_prototypes=256, head_hidden_dim=128, head_bottleneck_dim=32)
    config.objective.bootstrap.decoder.update(width=64, depth=1, num_heads=2)
  return config


def dino_config(ab_config):
  """DINO with AB_DINO's model, optimizer, EMA and heads, at the same views per step (all of
  them annotation views: 2 per image)."""
  config = configuration.base_config('dino')
  config.model.update(ab_config.model.to_dict())
  config.optimizer.update(ab_config.optimizer.to_dict())
  config.target_network.update(ab_config.target_network.to_dict())
  config.mesh.update(data=1, fsdp=1, tensor=1)
  for key in config.objective:
    if key != 'name':
      config.objective[key] = ab_config.objective[key]
  config.data.annotation.update(ab_config.data.annotation.to_dict())
  views = configuration.views_per_step(ab_config)
  config.data.annotation.batch_size = max(1, views // config.data.annotation.views.num)
  return config


def encoder_forward_flops(model, image_size):
  """FLOPs (2 per multiply-add) of one view through the ViT: patch embedding and blocks."""
  p, d = model.patch_size, model.width
  patches = (image_size // p) ** 2
  n = patches + (model.pool == 'cls')
  block = 2 * n * (4 * d * d + 2 * d * int(d * model.mlp_ratio)) + 4 * n * n * d
  return 2 * patches * p * p * 3 * d + model.depth * block


# ---------------------------------------------------------------------------------------------
# One train step, compiled as training compiles it, on one device.

def lower(config):
  """(program, a synthetic batch on the first device, the lowered train step) of ``config``,
  built as training builds it (``train.build_program``) on a one-device mesh."""
  configuration.validate(config)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  example = {name: pipeline.zeros_batch(config.data[name]) for name in objective.streams}
  program = train.build_program(config, mesh, objective, example)
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
      {name: ab_step_time.synthetic_stream(rng, config.data[name].batch_size, config.data[name])
       for name in objective.streams}, mesh)
  return program, batch, program.train_step.lower(program.abstract_state, batch)


def predict(args, report):
  """Without running a step: XLA's FLOPs of each step (the lowered program's cost analysis, on
  any backend) and the step time and views/s they mean on a chip of ``--peak_tflops`` at each
  of ``--mfu`` (what a GPU session's figures can be held against)."""
  for size in args.sizes:
    ab = ab_dino_config(size, args.views, args.image_size, args.tiny)
    for method, config in (('dino', dino_config(ab)), ('ab_dino', ab)):
      _, _, lowered = lower(config)
      cost = lowered.cost_analysis()
      flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)['flops'])
      views = configuration.views_per_step(config)
      at = {f'mfu_{mfu:g}': dict(step_ms=1000 * flops / (args.peak_tflops * 1e12 * mfu),
                                 views_per_s=views * args.peak_tflops * 1e12 * mfu / flops)
            for mfu in args.mfu}
      report('predict', name=f'{method} {size}', views=views, flops_per_step=flops,
             flops_per_view=flops / views, flops_over_encoder_forward=flops / views
             / encoder_forward_flops(config.model, args.image_size),
             peak_tflops=args.peak_tflops, **at)


class Step:
  """``train.build_program``'s step of ``config`` on the first device, compiled, with a state and
  a synthetic batch on the device; ``run(n)`` chains n steps as the training loop does."""

  def __init__(self, config):
    self.config = config
    program, self.batch, lowered = lower(config)
    start = time.perf_counter()
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - start
    self.init = program.init
    self.state = program.init(jax.random.PRNGKey(0))
    self.views = configuration.views_per_step(config)
    self.metrics = None

  def flops(self):
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get('flops', float('nan')))

  def memory(self):
    m = self.compiled.memory_analysis()
    if m is None:
      return {}
    return {'argument_bytes': int(m.argument_size_in_bytes),
            'temp_bytes': int(m.temp_size_in_bytes),
            'program_bytes': int(m.argument_size_in_bytes + m.output_size_in_bytes
                                 + m.temp_size_in_bytes - m.alias_size_in_bytes),
            'temp_bytes_per_view': m.temp_size_in_bytes / self.views}

  def run(self, n, wait_every=0):
    """Seconds per step over ``n`` chained steps; with ``wait_every`` the host waits for the
    device's loss every that many steps (as a multi-process stop agreement does)."""
    start = time.perf_counter()
    for i in range(n):
      self.state, self.metrics = self.compiled(self.state, self.batch)
      if wait_every and (i + 1) % wait_every == 0:
        jax.block_until_ready(self.metrics['loss'])
    jax.block_until_ready((self.state, self.metrics))
    return (time.perf_counter() - start) / n

  def fresh_losses(self, steps):
    """Losses and a parameter checksum of ``steps`` steps from the initial state."""
    state, losses = self.init(jax.random.PRNGKey(0)), []
    for _ in range(steps):
      state, metrics = self.compiled(state, self.batch)
      losses.append(float(metrics['loss']))
    leaves = jax.tree.leaves(jax.device_get(state.params))
    return losses, [np.asarray(x).tobytes() for x in leaves]


def windows(steps, rounds, window_s, wait_every=()):
  """Median seconds per step of each of ``steps``, timed in alternating windows of about
  ``window_s`` (A B A B ...) after two warm-up steps each; and each round's times."""
  wait_every = tuple(wait_every) or (0,) * len(steps)
  per_window = []
  for step, wait in zip(steps, wait_every):
    per_window.append(max(3, min(50, round(window_s / max(step.run(2, wait), 1e-4)))))
  rounds_s = [[step.run(n, wait) for step, n, wait in zip(steps, per_window, wait_every)]
              for _ in range(rounds)]
  return [statistics.median(t) for t in zip(*rounds_s)], rounds_s


# ---------------------------------------------------------------------------------------------
# The stages.

@dataclasses.dataclass
class Context:
  args: argparse.Namespace
  report: Report
  start: float
  peak: float = None
  compile_s: float = None          # the largest compile measured so far
  steps: dict = dataclasses.field(default_factory=dict)   # (method, size) -> Step

  def left(self):
    return self.args.budget_s - (time.perf_counter() - self.start)

  def compile_estimate(self):
    return self.compile_s if self.compile_s is not None else (10.0 if self.args.tiny else 60.0)

  def step(self, method, size):
    """The Step of ``method`` at ``size``, built once; if it does not build with
    ``model.attention='auto'`` (a cuDNN fused attention that fails), the failure is reported
    and the step is built with Flax's attention, so that the other figures still come."""
    key = (method, size)
    if key not in self.steps:
      ab = ab_dino_config(size, self.args.views, self.args.image_size, self.args.tiny)
      config = ab if method == 'ab_dino' else dino_config(ab)
      try:
        self.steps[key] = Step(config)
      except Exception as e:  # pylint: disable=broad-except
        self.report('step', name=f'{method} {size}', attention='auto', failed=_first_line(e),
                    retry="model.attention='plain'")
        config.model.attention = 'plain'
        self.steps[key] = Step(config)
      self.compile_s = max(self.compile_s or 0.0, self.steps[key].compile_s)
    return self.steps[key]


def stage_env(ctx):
  device = jax.devices()[0]
  ctx.peak, source = peak_flops(device, ctx.args.peak_tflops)
  n = 512 if ctx.args.tiny else 8192
  dtype = jnp.float32 if device.platform == 'cpu' else jnp.bfloat16
  import flax, optax, orbax.checkpoint, grain  # pylint: disable=g-import-not-at-top,multiple-imports
  ctx.report('env', device_kind=device.device_kind, platform=device.platform,
             devices=jax.device_count(), jax=jax.__version__, flax=flax.__version__,
             optax=optax.__version__, orbax=orbax.checkpoint.__version__,
             grain=getattr(grain, '__version__', '?'), python=platform.python_version(),
             host_cores=pipeline.host_cores(), peak_tflops=(ctx.peak or 0) / 1e12,
             peak_source=source, matmul_n=n, matmul_dtype=jnp.dtype(dtype).name,
             matmul_tflops=matmul_rate(n, dtype) / 1e12)


def _mfu(ctx, flops, seconds):
  return flops / seconds / ctx.peak if ctx.peak else None


def stage_step(ctx, size):
  steps = {method: ctx.step(method, size) for method in ('dino', 'ab_dino')}
  medians, rounds = windows(list(steps.values()), ctx.args.rounds, ctx.args.window_s)
  stats = getattr(jax.devices()[0], 'memory_stats', lambda: None)() or {}
  for (method, step), seconds in zip(steps.items(), medians):
    flops = step.flops()
    ctx.report('step', name=f'{method} {size}', views=step.views,
               image_size=ctx.args.image_size, dtype=step.config.model.dtype,
               attention=step.config.model.attention,
               compile_s=step.compile_s, flops_per_step=flops, flops_per_view=flops / step.views,
               flops_over_encoder_forward=flops / step.views / encoder_forward_flops(
                   step.config.model, ctx.args.image_size),
               step_ms=1000 * seconds, views_per_s=step.views / seconds,
               mfu=_mfu(ctx, flops, seconds), **step.memory(),
               device_peak_bytes_so_far=stats.get('peak_bytes_in_use'))
  ctx.report('ratio', name=f'ab_dino / dino {size}', ratio=medians[1] / medians[0],
             rounds=[round(b / a, 4) for a, b in rounds])


def stage_golden(ctx):
  import test_golden_losses as golden  # pylint: disable=g-import-not-at-top  # tests/
  with open(golden.GOLDEN) as f:
    recorded = json.load(f)
  for path in ctx.args.golden:
    dtype = configuration.load(os.path.join(REPO, path)).model.dtype
    want = recorded['configs'][path]['losses']
    for precision in ('default', 'highest'):
      context = (contextlib.nullcontext() if precision == 'default'
                 else jax.default_matmul_precision('highest'))
      with context:
        got = golden.run(path)['losses']
      deviation = max(abs(g / w - 1) for g, w in zip(got, want))
      tolerance = GOLDEN_TOLERANCE[(dtype, precision)]
      ctx.report('golden', config=path, dtype=dtype, precision=precision,
                 max_relative_deviation=deviation, tolerance=tolerance,
                 within=bool(deviation <= tolerance), losses=got, cpu_losses=want,
                 cpu_versions=recorded['versions'])


def stage_pipeline(ctx):
  size = ctx.args.sizes[0]
  config = ab_dino_config(size, ctx.args.views, ctx.args.image_size, ctx.args.tiny)
  step = ctx.steps.get(('ab_dino', size))
  workdir = ctx.args.data_dir or tempfile.mkdtemp(prefix='accelerator_jpegs_')
  images, workers = (64, 0) if ctx.args.tiny else (2000, stream_spec.AUTO)
  dataset = jpeg_scenes.make(workdir, images, num_workers=1 if ctx.args.tiny else 0,
                             log=lambda line: None)
  for name in ('annotation', 'bootstrap'):   # --tiny: no worker processes to start
    config.data[name].update(dataset=dataset, num_workers=workers, num_threads=stream_spec.AUTO)
  reading = pipeline.reading_plan(config.data, ('annotation', 'bootstrap'))
  rate = pipeline_throughput.read_together(config, ('annotation', 'bootstrap'),
                                           batches=ctx.args.pipeline_batches)
  views = configuration.views_per_step(config)
  demand, source = None, 'no AB_DINO step measured'
  if step is not None:
    medians, _ = windows([step], 1, ctx.args.window_s)
    demand, source = step.views / medians[0], f'the measured ab_dino {size} step'
  cores = pipeline.host_cores()
  ctx.report('pipeline', name=f'ab_dino {size} streams together', views_per_step=views,
             reading={k: dict(workers=w, threads=t) for k, (w, t) in reading.items()},
             host_cores=cores, steps_per_s=rate, views_per_s=rate * views,
             views_per_s_per_core=rate * views / cores, demand_views_per_s=demand,
             demand_from=source,
             cores_one_device_needs=(demand / (rate * views / cores) if demand else None),
             feeds_the_device=(rate * views >= demand if demand else None))


@contextlib.contextmanager
def flax_layer_norm():
  """The encoder and decoder built with Flax's LayerNorm (same parameters, autodiff backward)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  ours = layer_norm.LayerNorm
  layer_norm.LayerNorm = nn.LayerNorm
  try:
    yield
  finally:
    layer_norm.LayerNorm = ours


# The A/Bs of the ``ab`` stage: name -> (what it compares, the change to the AB_DINO config, the
# context its step is built in).
VARIANTS = {
    'attention_plain': ('attention plain (Flax) vs auto',
                        lambda c: c.model.update(attention='plain'), contextlib.nullcontext),
    'attention_xla': ('attention xla vs auto', lambda c: c.model.update(attention='xla'),
                      contextlib.nullcontext),
    'layer_norm': ('LayerNorm Flax vs ours', lambda c: None, lambda: flax_layer_norm()),
    'deterministic': ('deterministic off vs on', lambda c: c.update(deterministic=False),
                      contextlib.nullcontext),
    'microbatches': ('microbatches 2 vs 1', lambda c: c.update(microbatches=2),
                     contextlib.nullcontext),
}


def stage_ab(ctx):
  size = ctx.args.sizes[0]
  base = ctx.step('ab_dino', size)
  built = {}
  for key in ctx.args.ab_variants:
    if key == 'wait':
      continue
    name, change, wrap = VARIANTS[key]
    if ctx.left() < ctx.compile_estimate() + 4 * ctx.args.window_s * ctx.args.rounds:
      ctx.report('ab', name=name, skipped=f'{ctx.left():.0f} s left')
      continue
    try:            # a variant that fails is a result; the others still run
      config = base.config.copy_and_resolve_references()
      change(config)
      with wrap():
        built[key] = Step(config)
      medians, rounds = windows([base, built[key]], ctx.args.rounds, ctx.args.window_s)
    except Exception as e:  # pylint: disable=broad-except
      ctx.report('ab', name=name, failed=_first_line(e))
      continue
    ctx.report('ab', name=name, base_ms=1000 * medians[0], variant_ms=1000 * medians[1],
               variant_over_base=medians[1] / medians[0], compile_s=built[key].compile_s,
               rounds=[round(b / a, 4) for a, b in rounds])
  if 'wait' in ctx.args.ab_variants:
    medians, rounds = windows([base, base], ctx.args.rounds, ctx.args.window_s,
                              wait_every=(0, 10))
    ctx.report('ab', name='host waits every 10 steps vs never', base_ms=1000 * medians[0],
               variant_ms=1000 * medians[1], variant_over_base=medians[1] / medians[0],
               rounds=[round(b / a, 4) for a, b in rounds])
  for name, step in (('deterministic on', base), ('deterministic off', built.get('deterministic'))):
    if step is not None:
      (losses_a, params_a), (losses_b, params_b) = step.fresh_losses(3), step.fresh_losses(3)
      ctx.report('reproducible', name=name, losses_equal=losses_a == losses_b,
                 params_bit_identical=params_a == params_b, losses=losses_a)


def run_stages(ctx):
  args = ctx.args
  first = args.sizes[0]
  c = ctx.compile_estimate
  window = args.window_s * args.rounds
  plan = [
      ('env', lambda: 5.0, lambda: stage_env(ctx)),
      ('step', lambda: 2 * c() + 4 * window, lambda: stage_step(ctx, first)),
      ('golden', lambda: 2 * len(args.golden) * 0.3 * c() + 10, lambda: stage_golden(ctx)),
  ]
  for size in args.sizes[1:]:
    plan.append(('large', lambda: 3 * c() + 4 * window,
                 lambda size=size: stage_step(ctx, size)))
  plan += [
      ('pipeline', lambda: 30.0 + window, lambda: stage_pipeline(ctx)),
      ('ab', lambda: c() + 3 * window, lambda: stage_ab(ctx)),
  ]
  for name, estimate, run in plan:
    if name not in args.stages:
      continue
    need = estimate()
    if need > ctx.left():
      ctx.report(name, skipped=f'needs ~{need:.0f} s, {ctx.left():.0f} s left of --budget_s')
      continue
    try:
      run()
    except Exception as e:  # pylint: disable=broad-except  # a stage's failure is a result
      ctx.report(name, failed=_first_line(e))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--budget_s', type=float, default=420.0)
  parser.add_argument('--out', default='')
  parser.add_argument('--sizes', default='S/16,B/16')
  parser.add_argument('--views', type=int, default=512, help='views per chip and step')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--peak_tflops', type=float, default=0.0)
  parser.add_argument('--stages', default=','.join(STAGES))
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--window_s', type=float, default=2.0, help='seconds per timed window')
  parser.add_argument('--pipeline_batches', type=int, default=20)
  parser.add_argument('--data_dir', default='', help='where the JPEG scenes go (default: tmp)')
  parser.add_argument('--ab_variants', default=','.join([*VARIANTS, 'wait']),
                      help='the A/Bs of the ab stage (wait: the host waits every 10 steps)')
  parser.add_argument('--golden', default=','.join(GOLDEN_CONFIGS),
                      help='configs whose :tiny golden losses are checked')
  parser.add_argument('--tiny', action='store_true', help='toy sizes (the CPU test)')
  parser.add_argument('--predict', action='store_true',
                      help='only FLOPs and what they mean at --peak_tflops and --mfu (any CPU)')
  parser.add_argument('--mfu', default='0.35,0.45', help='MFUs for --predict')
  args = parser.parse_args(argv)
  if args.tiny:
    args.sizes = args.sizes if args.sizes != 'S/16,B/16' else 'cpu_tiny/8,cpu_small/8'
    args.views = 16 if args.views == 512 else args.views
    args.image_size = 32 if args.image_size == 224 else args.image_size
  args.sizes = args.sizes.split(',')
  args.stages = args.stages.split(',')
  args.golden = args.golden.split(',')
  args.ab_variants = args.ab_variants.split(',')
  unknown = set(args.ab_variants) - {*VARIANTS, 'wait'}
  if unknown:
    parser.error(f'unknown --ab_variants {sorted(unknown)}; known: {",".join(VARIANTS)},wait')
  args.mfu = [float(m) for m in args.mfu.split(',')]
  unknown = set(args.stages) - set(STAGES)
  if unknown:
    parser.error(f'unknown stages {sorted(unknown)}; known: {",".join(STAGES)}')
  return args


def main(argv=None):
  args = parse_args(argv)
  ctx = Context(args, Report(args.out), time.perf_counter())
  if args.predict:
    predict(args, ctx.report)
  else:
    run_stages(ctx)
  ctx.report('done', seconds=time.perf_counter() - ctx.start)
  print(ctx.report.table(), flush=True)


if __name__ == '__main__':
  main()
