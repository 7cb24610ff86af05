"""`export --format=safetensors`: timm builds the exported encoder and computes its features
(timm imported by ``timm_format.import_timm``, which stands in for a torchvision that does not
load)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the [test] extra installs the CPU build: no skip, a missing torch fails

from annoprop_jax.evaluation import timm_format
from annoprop_jax.models import vit

timm = timm_format.import_timm()


def _encoder(pool, posemb, seed=0, layer_scale=0.0):
  config = vit.EncoderConfig(patch_size=8, width=64, depth=2, num_heads=4, mlp_ratio=4.0, pool=pool,
                posemb=posemb, image_size=32, layer_scale=layer_scale)
  model = vit.ViT(config)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3), jnp.uint8))['params']
  # At init the biases are ~1e-6, LayerNorms 1 / 0 and the CLS token 0: noise on every
  # parameter, so that a bias, norm or token in the wrong place shows.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  params = jax.tree.unflatten(treedef, [
      leaf + 0.2 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)])
  return model, config, params


@pytest.mark.parametrize('pool,posemb,layer_scale', [('cls', 'learned', 0.0),
                                                     ('mean', 'sincos', 0.1)])
def test_timm_loads_the_export_and_computes_the_same_features(tmp_path, pool, posemb,
                                                              layer_scale):
  model, config, params = _encoder(pool, posemb, layer_scale=layer_scale)
  directory = timm_format.export(params, config, str(tmp_path / 'timm'))
  spec = json.loads((directory / timm_format.TIMM_CONFIG).read_text())
  net = timm.create_model(spec['model_name'], pretrained=False, **spec['kwargs'])
  import safetensors.torch  # pylint: disable=g-import-not-at-top
  result = net.load_state_dict(
      safetensors.torch.load_file(str(directory / timm_format.WEIGHTS)), strict=True)
  assert not result.missing_keys and not result.unexpected_keys
  net.eval()

  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  pooled, _ = model.apply({'params': params}, images)
  mean, std = np.array(spec['mean']), np.array(spec['std'])
  x = torch.from_numpy(((images / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
  with torch.no_grad():
    timm_pooled = net(x).numpy()
  assert timm_pooled.shape == (4, 64)
  assert np.abs(np.asarray(pooled)).mean() > 0.1          # features that are not ~0
  np.testing.assert_allclose(timm_pooled, np.asarray(pooled), atol=1e-4, rtol=0)


def test_model_config_names_timm_vits():
  config = vit.EncoderConfig(**vit.vit_size('S/16'), pool='cls', image_size=224)
  spec = timm_format.model_config(config)
  assert spec['model_name'] == 'vit_small_patch16_224'
  assert spec['kwargs']['embed_dim'] == 384 and spec['kwargs']['global_pool'] == 'token'
  # A size timm has no name for still gets the whole architecture from the kwargs.
  spec = timm_format.model_config(vit.EncoderConfig(**vit.vit_size('cpu_small/8'), pool='mean',
                                                    image_size=64))
  assert spec['kwargs']['embed_dim'] == 128 and spec['kwargs']['depth'] == 4
  assert not spec['kwargs']['class_token'] and spec['kwargs']['global_pool'] == 'avg'
