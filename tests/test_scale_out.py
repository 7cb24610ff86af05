"""Meshes with data/fsdp/tensor axes, gradient accumulation, mixed precision, remat, AOT."""
import glob
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from annoprop_jax import aot
from annoprop_jax import configuration
from annoprop_jax import objectives
from annoprop_jax import sharding
from annoprop_jax import train
from annoprop_jax.data import pipeline
from conftest import REPO, assert_same_update, first_batches, leaves, loss_inputs, tiny_config

MESHES = {
    'data': dict(data=8, fsdp=1, tensor=1),
    'fsdp': dict(data=1, fsdp=8, tensor=1),
    'data_tensor': dict(data=4, fsdp=1, tensor=2),
}


def _batch(config, data_dir):
  """One global batch of every stream the objective reads (numpy, device part only)."""
  config.data.data_dir = data_dir
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  return objective, first_batches(config, objective.streams)


def _program(config, objective, batch, devices):
  mesh = sharding.make_mesh(config.mesh, devices)
  return train.build_program(config, mesh, objective, batch), mesh


def _steps(config, objective, batch, devices, steps=2):
  """State after init and after ``steps`` steps on a mesh over ``devices``, and the last
  step's metrics (host arrays)."""
  program, mesh = _program(config, objective, batch, devices)
  state = program.init(jax.random.PRNGKey(0))
  before = jax.device_get(state)
  for _ in range(steps):
    state, metrics = program.train_step(state, sharding.global_batch(batch, mesh))
  return before, jax.device_get(state), jax.device_get(metrics)


def _moving(config):
  """Learning rate from the first step and a fast EMA: every compared part of the state moves;
  a strong weight decay, so that decaying the wrong leaves shows (0.5 x 1e-3 per step)."""
  config.optimizer.update(warmup_steps=0, weight_decay=0.5, weight_decay_end=0.5)
  config.target_network.update(rate=0.5, schedule='constant')
  return config


def _adam_moments(state):
  adam = state.opt_state[-1].inner_state[0]      # inject_hyperparams(adamw) -> ScaleByAdamState
  return {'mu': adam.mu, 'nu': adam.nu}


@pytest.mark.slow
def test_sharded_steps_equal_single_device_steps(tiny_data_dir):
  """AB_DINO (encoder, decoder, prototypes, centre): 2 steps on one device, then on each mesh."""
  config = _moving(tiny_config('ab_dino_scenes').unlock())
  config.mesh.update(data=1, fsdp=1, tensor=1, min_shard_size=0)
  objective, batch = _batch(config, tiny_data_dir)
  before, one, one_metrics = _steps(config, objective, batch, jax.devices()[:1])
  for mesh, axes in sorted(MESHES.items()):
    config.mesh.update(**axes)
    _, many, many_metrics = _steps(config, objective, batch, jax.devices()[:8])
    np.testing.assert_allclose(one_metrics['loss'], many_metrics['loss'], rtol=1e-5)
    # Every part moved in 2 steps and the sharded run made the same updates (8 devices change
    # only the order of reductions: agreement to 0.1% of each part's update).
    assert_same_update(before.params, one.params, many.params, 1e-3, f'{mesh}: params')
    assert_same_update(before.target_params, one.target_params, many.target_params, 1e-3,
                       f'{mesh}: target')
    for name, moment in _adam_moments(one).items():
      assert_same_update(_adam_moments(before)[name], moment, _adam_moments(many)[name], 1e-3,
                         f'{mesh}: {name}')
    assert_same_update(before.method_state, one.method_state, many.method_state, 1e-3,
                       f'{mesh}: centre')


def test_params_optimizer_state_and_target_are_sharded(tiny_data_dir):
  config = tiny_config('ab_dino_scenes').unlock()
  config.mesh.update(data=2, fsdp=2, tensor=2, min_shard_size=0)
  objective, batch = _batch(config, tiny_data_dir)
  program, _ = _program(config, objective, batch, jax.devices()[:8])
  state = program.init(jax.random.PRNGKey(0))
  mlp = state.params['encoder']['block0']['MlpBlock_0']['Dense_0']['kernel']   # (32, 128)
  assert mlp.sharding.spec == P('fsdp', 'tensor')
  assert mlp.addressable_shards[0].data.shape == (16, 64)
  query = state.params['encoder']['block0']['MultiHeadDotProductAttention_0']['query']['kernel']
  assert query.sharding.spec == P('fsdp', 'tensor', None)             # (width, heads, head_dim)
  target = state.target_params['encoder']['block0']['MlpBlock_0']['Dense_0']['kernel']
  assert target.sharding.spec == P('fsdp', 'tensor')
  adam = state.opt_state[-1].inner_state[0]     # inject_hyperparams(adamw) -> ScaleByAdamState
  assert adam.mu['encoder']['block0']['MlpBlock_0']['Dense_0']['kernel'].sharding.spec == P(
      'fsdp', 'tensor')
  # No rule: the largest divisible dimension goes over fsdp (prototypes: (bottleneck, K)).
  prototypes = [x for path, x in jax.tree_util.tree_leaves_with_path(state.params)
                if 'prototypes' in sharding.path_string(path) and x.ndim == 2]
  assert prototypes and all('fsdp' in tuple(x.sharding.spec) for x in prototypes)
  # Each device holds 1 / (product of its spec's axis sizes) of every array.
  leaves = jax.tree.leaves(state.params)
  per_device = sum(x.addressable_shards[0].data.size for x in leaves)
  assert per_device == sum(x.size // int(np.prod([2 for axis in x.sharding.spec if axis]))
                           for x in leaves)
  assert per_device < 0.6 * sum(x.size for x in leaves)


def test_gradient_accumulation_equals_one_big_batch(tiny_data_dir):
  config = _moving(tiny_config('supervised_objects').unlock())
  config.data.annotation.batch_size = 32
  objective, batch = _batch(config, tiny_data_dir)
  before, one, one_metrics = _steps(config, objective, batch, jax.devices()[:8], steps=1)
  config.microbatches = 4       # 4 x 8 images, each split over the 8 devices
  _, acc, acc_metrics = _steps(config, objective, batch, jax.devices()[:8], steps=1)
  assert_same_update(before.params, one.params, acc.params, 1e-3, 'params')
  np.testing.assert_allclose(one_metrics['loss'], acc_metrics['loss'], rtol=1e-5)
  np.testing.assert_allclose(one_metrics['grad_norm'], acc_metrics['grad_norm'], rtol=1e-4)
  assert int(acc.step) == 1


def test_accumulation_updates_ema_and_dino_centre_once_per_optimizer_step(tiny_data_dir):
  config = _moving(tiny_config('dino_scenes').unlock())
  objective, batch = _batch(config, tiny_data_dir)
  _, one, _ = _steps(config, objective, batch, jax.devices()[:8], steps=1)
  config.microbatches = 2
  before, acc, metrics = _steps(config, objective, batch, jax.devices()[:8], steps=1)
  # The centre moves once, by the whole batch's teacher mean, as without accumulation.
  assert_same_update(before.method_state, one.method_state, acc.method_state, 1e-3, 'centre')
  # EMA with momentum 0.5 applied once: target = (old + new) / 2; twice would give
  # old / 4 + 3 new / 4, a quarter of the params' update away.
  expected = jax.tree.map(lambda t, p: 0.5 * t + 0.5 * p, before.target_params, acc.params)
  assert_same_update(before.target_params, expected, acc.target_params, 1e-3, 'target')
  assert int(acc.step) == 1 and metrics['ema_momentum'] == 0.5


def test_bfloat16_compute_keeps_float32_params_heads_logits_and_losses(tiny_data_dir):
  config = tiny_config('ab_dino_scenes').unlock()
  config.model.dtype = 'bfloat16'
  objective, batch = _batch(config, tiny_data_dir)
  _, state, metrics = _steps(config, objective, batch, jax.devices()[:8], steps=1)
  assert {x.dtype for x in jax.tree.leaves((state.params, state.target_params))} == {
      jnp.dtype('float32')}
  assert {x.dtype for x in jax.tree.leaves(state.opt_state) if x.ndim} == {jnp.dtype('float32')}
  assert all(np.asarray(v).dtype in (np.float32, np.bool_, np.int32) for v in metrics.values())
  assert np.isfinite(metrics['loss'])
  # The encoder and decoder compute in bf16; what the heads and losses read is float32.
  net, boot = objective.method.net, batch['bootstrap']
  apply = lambda method, *x: jax.eval_shape(
      lambda p, *a: net.apply({'params': p}, *a, method=method), state.params, *x)
  pooled, tokens = apply(net.encode, boot['images'][:2, 0])
  phi = apply(net.decode, tokens, boot['moves'][:2, 0])
  outputs = {'pooled': pooled, 'base_head': apply(net.base, pooled), 'ab_head': apply(net.ab, phi)}
  assert {k: v.dtype for k, v in outputs.items()} == dict.fromkeys(outputs, jnp.float32)
  hlo = aot.lower(config, jax.devices()[:8])[0].as_text()
  assert re.search(r'dot_general.*bf16', hlo)


@pytest.mark.parametrize('policy', ['full', 'dots'])
def test_remat_gives_the_same_gradients_and_recomputes(policy, tiny_data_dir):
  config = tiny_config('supervised_objects').unlock()
  objective, batch = _batch(config, tiny_data_dir)
  remat_config = config.copy_and_resolve_references()
  remat_config.model.remat = policy
  remat_objective = objectives.build(remat_config.objective,
                                     configuration.encoder_config(remat_config))
  params, method_state = objective.init(jax.random.PRNGKey(0), batch)

  def grad_fn(obj):
    def loss(p):
      return obj.loss(loss_inputs(p, p, method_state, batch))[0]
    return jax.grad(loss)
  plain, remat = jax.jit(grad_fn(objective))(params), jax.jit(grad_fn(remat_objective))(params)
  for key, g in leaves(plain).items():
    np.testing.assert_allclose(leaves(remat)[key], g, rtol=1e-5, atol=1e-7, err_msg=key)
  assert max(np.max(np.abs(g)) for g in leaves(plain).values()) > 1e-4
  # The backward pass recomputes the blocks: a checkpoint (remat) in the gradient's program.
  jaxpr = str(jax.make_jaxpr(grad_fn(remat_objective))(params))
  assert 'checkpoint' in jaxpr or 'remat' in jaxpr
  assert 'checkpoint' not in str(jax.make_jaxpr(grad_fn(objective))(params))


@pytest.mark.parametrize('mesh,batch_size,microbatches,message', [
    (dict(data=-1, fsdp=3), 16, 1, 'does not divide the 8 devices'),
    (dict(data=2, fsdp=2, tensor=1), 16, 1, 'needs 4 devices but 8 are available'),
    (dict(data=-1, fsdp=-1), 16, 1, 'at most one -1'),
    (dict(data=8), 12, 1, 'annotation.batch_size=12 is not divisible by the 8 data-parallel'),
    (dict(data=4, tensor=2), 16, 8, 'x 8 micro-batches'),
])
def test_mesh_and_batch_errors_before_compiling(mesh, batch_size, microbatches, message):
  config = tiny_config('supervised_objects').unlock()
  config.mesh.update(**mesh)
  config.data.annotation.batch_size, config.microbatches = batch_size, microbatches
  with pytest.raises(configuration.ConfigError, match=message):
    aot.check(config, jax.devices())


def test_unknown_axis_in_rules_is_a_config_error():
  config = tiny_config('supervised_objects').unlock()
  config.mesh.rules = ((r'kernel$', ('fsdp', 'model')),)
  with pytest.raises(configuration.ConfigError, match="unknown mesh axes \\['model'\\]"):
    configuration.validate(config)


def test_partition_spec_rules_and_fallbacks():
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2, rules=(), min_shard_size=8))
  rules = sharding.DEFAULT_RULES
  spec = lambda path, shape: sharding.partition_spec(path, shape, mesh, rules, 8)
  assert spec('opt_state/0/mu/encoder/block1/MlpBlock_0/Dense_1/kernel', (512, 128)) == P(
      'tensor', 'fsdp')
  assert spec('params/x/MlpBlock_0/Dense_0/kernel', (128, 3)) == P('fsdp', None)  # 3 % 2 != 0
  assert spec('params/head/out/kernel', (6, 10)) == P(None, 'fsdp')   # no rank-2 rule: fsdp
  assert spec('params/head/bias', (4,)) == P()                        # under min_shard_size
  assert spec('step', ()) == P()
  assert spec('params/odd', (3, 5, 7)) == P()                         # nothing divisible


def test_batch_shapes_match_the_pipeline(tiny_data_dir):
  config = tiny_config('ab_dino_scenes', **{'data.annotation.local_views.num': 2})
  _, batch = _batch(config, tiny_data_dir)
  for name, arrays in batch.items():
    shapes = pipeline.batch_shapes(config.data[name], config.data[name].batch_size)
    assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {
        k: (shape, np.dtype(dtype)) for k, (shape, dtype) in shapes.items()}


CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '**', '*.py'), recursive=True))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_config_lowers_on_a_sharded_mesh_at_toy_size(path):
  config = configuration.load(path + ':tiny').unlock()
  config.mesh.update(data=2, fsdp=2, tensor=2)
  lowered, mesh = aot.lower(config, jax.devices()[:8])
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 2, 'tensor': 2}
  text = lowered.as_text()
  assert 'mhlo.num_partitions = 8' in text
  signature = text[text.index('func.func public @main'):]
  signature = signature[:signature.index('{\n')]
  arguments = re.findall(r'%arg\d+: tensor<([^>]*)> \{sdy.sharding = #sdy.sharding<@mesh, '
                         r'\[([^>]*)\]>', signature)
  images = [spec for shape, spec in arguments if shape.endswith('x3xui8')]
  assert images and all(spec.startswith('{"data", "fsdp"}, {}') for spec in images), images
  # The parameters and their optimizer moments: the MLP's hidden units over tensor (Megatron),
  # the other dimension over fsdp.
  kernels = [spec for shape, spec in arguments if shape.endswith('f32')]
  assert '{"fsdp"}, {"tensor"}' in kernels and '{"tensor"}, {"fsdp"}' in kernels, kernels


def test_compile_report_counts_every_micro_batch():
  # The demo size (not tiny): activations, not the gradient accumulator, dominate memory.
  config = configuration.load(os.path.join(REPO, 'configs', 'supervised_objects.py')).unlock()
  one = aot.compile_report(config, jax.devices()[:8])
  config.microbatches = 2
  two = aot.compile_report(config, jax.devices()[:8])
  assert one.flops_per_step == two.flops_per_step > 0
  assert one.bytes_per_device > 0 and one.platform == 'cpu'
  assert two.temp_bytes < one.temp_bytes       # half the activations are live at a time
  assert 'memory per device' in '\n'.join(one.lines())
