"""SiLC: CLIP plus DINO-style self-distillation from the EMA teacher, the two losses added at
ratio ``distillation_weight`` (1.0, Table 7), both on one encoder (Naeem et al. 2024); the EMA
fixed at 0.004 (the config's ``target_network``).

The annotation stream's global views (``views``, at least 2) and local views (``local_views``)
feed DINO's loss (``dino.self_distillation``: the teacher on the global views, the student on
all); the first global view and the caption feed CLIP's loss (``clip.clip_loss``). The image
has two heads on the pooled vector: CLIP's projection and DINO's prototype head. Nothing of
either method is written again. Table 7 gives the self-distillation an eighth of CLIP's batch
(512 of 4,096 images x 10 views): ``distillation_images`` says how many of the batch's images it
reads (``method.image_subset``; 0: all). The host still makes every image's views; the model
encodes only these (and the CLIP view of every image).

No AB variant is built: it would be AB_CLIP's (the captions as candidates) beside the
self-distillation, or AB_DINO's (the prototypes), each already testable alone.
"""
import dataclasses

import ml_collections

from annoprop_jax import errors
from annoprop_jax.models import heads
from annoprop_jax.models import network as network_lib
from annoprop_jax.objectives import clip
from annoprop_jax.objectives import dino
from annoprop_jax.objectives import method

Network = network_lib.Network


class SiLC(clip.CLIP):
  ab_name = None                 # see the module docstring
  probe_params = 'online'

  @staticmethod
  def default_config():
    config = clip.CLIP.default_config()
    distillation = dino.DINO.default_config()
    del distillation['name']
    config.update(name='silc', distillation_weight=1.0,
                  distillation_images=0,   # images of the batch DINO's loss reads (0: all)
                  **distillation.to_dict())
    return ml_collections.ConfigDict(config.to_dict())

  @staticmethod
  def tiny(config):
    clip.CLIP.tiny(config)
    dino.DINO.tiny(config)
    if config.distillation_images:
      config.distillation_images = 2       # an eighth of the tiny batch's 16 images

  @staticmethod
  def validate(config):
    clip.CLIP.validate(config)
    dino.DINO.validate(config)
    method.check_image_subset(config, 'distillation_images')

  @staticmethod
  def annotation_views(config):
    """CLIP's view of every image (the first global view) and the subset's other views."""
    annotation, subset = config.data.annotation, config.objective.distillation_images
    return annotation.batch_size + (subset or annotation.batch_size) * (
        annotation.views.num - 1 + annotation.local_views.num)

  def image_embedding(self, params, pooled):
    return self.apply(params, Network.base, pooled, 'clip')

  def modules(self, bootstrap):
    modules = super().modules(bootstrap=False)
    c = self.config
    modules['head'] = heads.Heads({
        'clip': heads.Projection(c.embed_dim),
        'dino': heads.PrototypeHead(num_prototypes=c.num_prototypes, hidden_dim=c.head_hidden_dim,
                                    bottleneck_dim=c.head_bottleneck_dim,
                                    num_layers=c.head_layers)})
    return modules

  def init_state(self):
    return {'center': dino.DINO.init_state(self)['center']}

  def step_params(self, params, step):
    """DINO's prototype freeze, on the prototype head."""
    head = dict(params['head'])
    head['parts_dino'] = dino.freeze_prototypes({'head': head['parts_dino']}, step,
                                                self.config.freeze_prototypes_steps)['head']
    return {**params, 'head': head}

  def _prototype_logits(self, params, images, rng):
    pooled = self.encode_views(params, images, rng)[0]
    return self.apply(params, Network.base, pooled, 'dino')

  def base_loss(self, inputs, bootstrap):
    del bootstrap
    annotation, params, c = inputs.annotation, inputs.params, self.config
    pooled = self.encode_views(params, annotation['images'][:, :1],
                               method.online_rng(inputs, 'caption_view'))[0][:, 0]
    image = self.image_embedding(params, pooled)
    captions, _, scale = self.apply(params, Network.embed_annotations,
                                    self.tokens(annotation['caption']))
    clip_loss, clip_accuracy = clip.clip_loss(image, captions, scale)
    subset = {**inputs.batch, 'annotation': method.image_subset(annotation,
                                                               c.distillation_images)}
    distillation, metrics, state = dino.self_distillation(
        c, dataclasses.replace(inputs, batch=subset), self._prototype_logits)
    loss = clip_loss + c.distillation_weight * distillation
    metrics.update(clip_loss=clip_loss, clip_i2t_accuracy=clip_accuracy, clip_logit_scale=scale)
    return method.BaseResult(loss, metrics, state)

  def ab_log_probs(self, params, phi, candidates):
    raise NotImplementedError('silc has no AB variant')

  def target_probs(self, inputs, pooled, candidates):
    raise NotImplementedError('silc has no AB variant')
