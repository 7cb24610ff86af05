"""SLIP: CLIP plus SimCLR on an image head, the two losses added at ratio ``simclr_weight``
(1.0, Table 7), both on one encoder (Mu et al. 2022).

Each image of the annotation stream gives one view for CLIP (``views``: CLIP's mild crops, no
colour jitter or flips) and two for SimCLR (``local_views``, the stream's second view set, with
SimCLR's own augmentations). Table 7 gives SimCLR half of CLIP's batch (2,048 of 4,096 images):
``simclr_images`` says how many of the batch's images SimCLR reads (``method.image_subset``;
0: all). The host still makes the SimCLR views of every image; the model encodes only these.
The CLIP part is ``clip.CLIP``'s loss and the SimCLR part ``simclr.nt_xent`` on a projection
MLP of its own; nothing of either is written again.

No AB variant is built: it would be AB_CLIP's (the batch's captions as candidates, scored from
a neighbouring crop) with SimCLR's loss kept beside it, which adds nothing to test that AB_CLIP
does not.
"""
from annoprop_jax import errors
from annoprop_jax.models import heads
from annoprop_jax.models import network as network_lib
from annoprop_jax.objectives import clip
from annoprop_jax.objectives import method
from annoprop_jax.objectives import simclr

Network = network_lib.Network


class SLIP(clip.CLIP):
  ab_name = None                 # see the module docstring
  probe_params = 'online'

  @staticmethod
  def default_config():
    config = clip.CLIP.default_config()
    config.update(name='slip', simclr_weight=1.0, simclr_temperature=0.1,
                  simclr_hidden_dim=512, simclr_dim=128,
                  simclr_images=0)    # images of the batch SimCLR reads (0: all; Table 7: half)
    return config

  @staticmethod
  def tiny(config):
    clip.CLIP.tiny(config)
    config.update(simclr_hidden_dim=64, simclr_dim=32)
    if config.simclr_images:
      config.simclr_images = 8             # half of the tiny batch's 16 images

  @staticmethod
  def validate(config):
    clip.CLIP.validate(config)
    annotation = config.data.annotation
    if annotation.views.num != 1 or annotation.local_views.num != 2:
      raise errors.ConfigError(
          'slip reads one CLIP view (data.annotation.views.num=1) and two SimCLR views '
          f'(data.annotation.local_views.num=2) per image, got {annotation.views.num} and '
          f'{annotation.local_views.num}')
    method.check_image_subset(config, 'simclr_images')

  @staticmethod
  def annotation_views(config):
    annotation, subset = config.data.annotation, config.objective.simclr_images
    return annotation.batch_size + 2 * (subset or annotation.batch_size)

  def image_embedding(self, params, pooled):
    return self.apply(params, Network.base, pooled, 'clip')

  def modules(self, bootstrap):
    modules = super().modules(bootstrap=False)
    c = self.config
    modules['head'] = heads.Heads({'clip': heads.Projection(c.embed_dim),
                                   'simclr': heads.ProjectionHead(hidden_dim=c.simclr_hidden_dim,
                                                                  out_dim=c.simclr_dim)})
    return modules

  def base_loss(self, inputs, bootstrap):
    del bootstrap
    annotation, params, c = inputs.annotation, inputs.params, self.config
    pooled = self.encode_views(params, annotation['images'][:, :1],
                               method.online_rng(inputs, 'annotation'))[0][:, 0]
    image = self.image_embedding(params, pooled)
    captions, _, scale = self.apply(params, Network.embed_annotations,
                                    self.tokens(annotation['caption']))
    clip_loss, clip_accuracy = clip.clip_loss(image, captions, scale)
    local_images = method.image_subset(annotation['local_images'], c.simclr_images)
    pooled = self.encode_views(params, local_images,
                               method.online_rng(inputs, 'local'))[0]          # (B, 2, D)
    z = self.apply(params, Network.base, pooled, 'simclr')
    simclr_loss, simclr_accuracy = simclr.nt_xent(z, c.simclr_temperature)
    loss = clip_loss + c.simclr_weight * simclr_loss
    return method.BaseResult(loss, {'clip_loss': clip_loss, 'clip_i2t_accuracy': clip_accuracy,
                                    'clip_logit_scale': scale, 'simclr_loss': simclr_loss,
                                    'simclr_accuracy': simclr_accuracy}, inputs.method_state)

  def ab_log_probs(self, params, phi, candidates):
    raise NotImplementedError('slip has no AB variant')

  def target_probs(self, inputs, pooled, candidates):
    raise NotImplementedError('slip has no AB variant')
