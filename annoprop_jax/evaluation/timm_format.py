"""The ViT encoder in timm's format: its parameter names and layouts, and the model to build.

``export`` writes ``model.safetensors`` and ``timm_config.json``; in PyTorch::

    cfg = json.load(open('timm_config.json'))
    model = timm.create_model(cfg['model_name'], pretrained=False, **cfg['kwargs'])
    model.load_state_dict(safetensors.torch.load_file('model.safetensors'))
    pooled = model(images)   # NCHW float, normalised by cfg['mean'] / cfg['std']

``kwargs`` fix the whole architecture (width, depth, heads, patch, resolution, pooling, the tanh
GELU of Flax), so a run's size that timm has no name for (``cpu_small``) loads too: the name is
then timm's nearest ViT, every field of which the kwargs override. ``import_timm`` imports timm
where torchvision does not load (the CPU torch beside PyPI's CUDA torchvision).
"""
import importlib.abc
import importlib.machinery
import json
import sys
import types

import numpy as np
import safetensors.numpy

from annoprop_jax import storage
from annoprop_jax.models import vit

TIMM_CONFIG = 'timm_config.json'
WEIGHTS = 'model.safetensors'
# timm's registered ViTs at 224 px by (width, patch); other sizes get the nearest width's name.
_NAMES = {(192, 16): 'vit_tiny_patch16_224', (384, 8): 'vit_small_patch8_224',
          (384, 16): 'vit_small_patch16_224', (384, 32): 'vit_small_patch32_224',
          (768, 8): 'vit_base_patch8_224', (768, 16): 'vit_base_patch16_224',
          (768, 32): 'vit_base_patch32_224', (1024, 16): 'vit_large_patch16_224',
          (1024, 32): 'vit_large_patch32_224'}


def model_config(encoder_config):
  """{'model_name', 'kwargs', 'mean', 'std'}: what ``timm.create_model`` needs to build the
  encoder of ``encoder_config`` (a ``vit.EncoderConfig``) with no classifier."""
  width, patch = encoder_config.width, encoder_config.patch_size
  name = _NAMES.get((width, patch)) or min(
      _NAMES.items(), key=lambda item: (abs(item[0][0] - width), abs(item[0][1] - patch)))[1]
  cls = encoder_config.pool == 'cls'
  size = encoder_config.image_size
  return dict(
      model_name=name,
      kwargs=dict(img_size=size, patch_size=patch, embed_dim=width,
                  depth=encoder_config.depth, num_heads=encoder_config.num_heads,
                  mlp_ratio=encoder_config.mlp_ratio, num_classes=0,
                  class_token=cls, global_pool='token' if cls else 'avg', fc_norm=False,
                  act_layer='gelu_tanh',     # flax's nn.gelu is the tanh approximation
                  init_values=encoder_config.layer_scale or None),   # LayerScale
      # The encoder reads uint8 x as x / 127.5 - 1 = (x / 255 - 0.5) / 0.5.
      mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], input_size=[3, size, size])


def state_dict(params, encoder_config):
  """{timm parameter name: float32 numpy array} of the ViT ``params``."""
  width = encoder_config.width
  patch = encoder_config.patch_size
  grid = encoder_config.image_size // patch
  arr = lambda x: np.asarray(x, np.float32)
  out = {
      'patch_embed.proj.weight': arr(params['embedding']['kernel']).transpose(3, 2, 0, 1),
      'patch_embed.proj.bias': arr(params['embedding']['bias']),
      'norm.weight': arr(params['encoder_norm']['scale']),
      'norm.bias': arr(params['encoder_norm']['bias']),
  }
  if encoder_config.posemb == 'learned':
    pos = arr(params['pos_embedding'])
    if pos.shape[1] != grid * grid:
      raise ValueError(f'pos_embedding has {pos.shape[1]} positions, not the {grid}x{grid} of '
                       f'image_size {encoder_config.image_size}')
  else:                         # timm learns its position embedding: export the fixed values
    pos = np.asarray(vit.sincos_posemb(grid, grid, width))
  if encoder_config.pool == 'cls':
    out['cls_token'] = arr(params['cls'])
    pos = np.concatenate([np.zeros((1, 1, width), np.float32), pos], axis=1)
  out['pos_embed'] = pos
  for i in range(encoder_config.depth):
    block, prefix = params[f'block{i}'], f'blocks.{i}.'
    attention = block['MultiHeadDotProductAttention_0']
    for norm, name in (('LayerNorm_0', 'norm1'), ('LayerNorm_1', 'norm2')):
      out[prefix + name + '.weight'] = arr(block[norm]['scale'])
      out[prefix + name + '.bias'] = arr(block[norm]['bias'])
    # Flax: q/k/v kernels (width, heads, head_dim), out (heads, head_dim, width); timm: one
    # Linear to 3 x width with the heads in the same order, torch's (out, in) layout.
    out[prefix + 'attn.qkv.weight'] = np.concatenate(
        [arr(attention[p]['kernel']).reshape(width, width).T for p in ('query', 'key', 'value')])
    out[prefix + 'attn.qkv.bias'] = np.concatenate(
        [arr(attention[p]['bias']).reshape(width) for p in ('query', 'key', 'value')])
    out[prefix + 'attn.proj.weight'] = arr(attention['out']['kernel']).reshape(width, width).T
    out[prefix + 'attn.proj.bias'] = arr(attention['out']['bias'])
    if encoder_config.layer_scale:
      out[prefix + 'ls1.gamma'] = arr(block['layer_scale_attention'])
      out[prefix + 'ls2.gamma'] = arr(block['layer_scale_mlp'])
    for dense, name in (('Dense_0', 'fc1'), ('Dense_1', 'fc2')):
      out[prefix + f'mlp.{name}.weight'] = arr(block['MlpBlock_0'][dense]['kernel']).T
      out[prefix + f'mlp.{name}.bias'] = arr(block['MlpBlock_0'][dense]['bias'])
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def export(params, encoder_config, directory):
  """Writes ``model.safetensors`` (timm's names) and ``timm_config.json`` to ``directory``."""
  directory = storage.path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  with storage.local_file(directory / WEIGHTS) as tmp:
    safetensors.numpy.save_file(state_dict(params, encoder_config), tmp,
                                metadata={'format': 'pt'})
  storage.write_atomically(directory / TIMM_CONFIG,
                           json.dumps(model_config(encoder_config), indent=2, sort_keys=True))
  return directory


class _StandIn(type):
  """A class whose every attribute is another such class (subclassable, isinstance-able)."""

  def __getattr__(cls, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _StandIn(name, (), {})


class _StandInModule(types.ModuleType):

  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _StandIn(name, (), {})


class _StandInTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):

  def find_spec(self, name, path, target=None):
    del path, target
    if name == 'torchvision' or name.startswith('torchvision.'):
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    return _StandInModule(spec.name)

  def exec_module(self, module):
    module.__path__ = []


def import_timm():
  """timm, imported where its torchvision import fails: timm imports torchvision at import time
  for things a ViT does not use (FrozenBatchNorm2d, the data transforms), and the PyPI wheel of
  torchvision is a CUDA build that does not load beside the CPU torch; those imports then get
  empty stand-ins."""
  try:
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
  except Exception:  # pylint: disable=broad-except
    for name in [n for n in sys.modules if n == 'torchvision' or n.startswith('torchvision.')]:
      del sys.modules[name]
    sys.meta_path.insert(0, _StandInTorchvision())
  import timm as module  # pylint: disable=g-import-not-at-top
  return module
