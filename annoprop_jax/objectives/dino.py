"""DINO: self-distillation from the EMA teacher with prototypes, centring and temperature warm-up.

The teacher is the EMA target network (``target_params``). It sees the global views only; the
student sees global and (optional) local views; every (teacher view, other student view) pair is
a cross-entropy term. The centre is an EMA of the teacher's logits, updated once per step.
"""
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax.models import heads
from annoprop_jax.models import network


def default_config():
  return ml_collections.ConfigDict(dict(
      name='dino',
      num_prototypes=4096,            # K, METHOD.md DEFAULT at small scale
      head_hidden_dim=512,
      head_bottleneck_dim=128,
      head_layers=3,
      student_temperature=0.1,
      teacher_temperature=0.07,
      warmup_teacher_temperature=0.04,
      warmup_teacher_temperature_steps=0,
      center_momentum=0.9,
      freeze_prototypes_steps=0,      # DINO's last-layer freeze, in optimizer steps
  ))


def teacher_temperature(config, step):
  """Linear warm-up from the warm-up temperature to the final one, then constant."""
  warmup = config.warmup_teacher_temperature_steps
  if warmup <= 0:
    return jnp.float32(config.teacher_temperature)
  frac = jnp.clip(step / warmup, 0.0, 1.0)
  return (config.warmup_teacher_temperature
          + frac * (config.teacher_temperature - config.warmup_teacher_temperature))


def teacher_distribution(teacher_logits, center, temperature):
  """softmax((g - c) / tau_t), the DINO target."""
  return jax.nn.softmax((teacher_logits - center) / temperature, axis=-1)


def entropy(p):
  return -jnp.sum(p * jnp.log(jnp.clip(p, 1e-12)), axis=-1)


def dino_loss(student_logits, teacher_logits, center, student_temperature, teacher_temp):
  """DINO cross-entropy.

  Args:
    student_logits: (B, Vs, K) logits of all student views; the first Vt are the global views.
    teacher_logits: (B, Vt, K) teacher logits of the global views.
    center: (K,) centre.
  Returns:
    The mean over images and over ordered (teacher view t, student view s != t) pairs of
    -sum_k p_t(k) log q_s(k), and the teacher distributions (B, Vt, K).
  """
  vs, vt = student_logits.shape[1], teacher_logits.shape[1]
  p = jax.lax.stop_gradient(teacher_distribution(teacher_logits, center, teacher_temp))
  log_q = jax.nn.log_softmax(student_logits / student_temperature, axis=-1)
  ce = -jnp.einsum('btk,bsk->bts', p, log_q)                # (B, Vt, Vs)
  not_same = jnp.arange(vt)[:, None] != jnp.arange(vs)[None, :]
  loss = jnp.sum(ce * not_same, axis=(1, 2)) / not_same.sum()
  return loss.mean(), p


class DINO:
  streams = ('annotation',)

  def __init__(self, config, encoder_config):
    self.config = config
    self.net = network.EncoderWithHead(encoder_config, heads.PrototypeHead(
        num_prototypes=config.num_prototypes, hidden_dim=config.head_hidden_dim,
        bottleneck_dim=config.head_bottleneck_dim, num_layers=config.head_layers))

  def init(self, rng, batch):
    params = self.net.init(rng, batch['annotation']['images'][:1, 0])['params']
    return params, {'center': jnp.zeros((self.config.num_prototypes,), jnp.float32)}

  def _apply_views(self, params, images):
    b, v = images.shape[:2]
    out = self.net.apply({'params': params}, images.reshape(b * v, *images.shape[2:]))
    return out.reshape(b, v, -1)

  def loss(self, params, target_params, extras, batch, rng, step):
    del rng
    cfg = self.config
    data = batch['annotation']
    # DINO's last-layer freeze: no gradient reaches the prototypes in the first steps.
    frozen = step < cfg.freeze_prototypes_steps
    prototypes = params['head']['prototypes']
    params = {**params, 'head': {**params['head'], 'prototypes': jnp.where(
        frozen, jax.lax.stop_gradient(prototypes), prototypes)}}
    teacher = jax.lax.stop_gradient(self._apply_views(target_params, data['images']))
    student = self._apply_views(params, data['images'])
    if 'local_images' in data:
      student = jnp.concatenate([student, self._apply_views(params, data['local_images'])], 1)
    tau_t = teacher_temperature(cfg, step)
    loss, p = dino_loss(student, teacher, extras['center'], cfg.student_temperature, tau_t)
    batch_center = teacher.mean(axis=(0, 1))
    center = cfg.center_momentum * extras['center'] + (1 - cfg.center_momentum) * batch_center
    q = jax.nn.softmax(student / cfg.student_temperature, axis=-1)
    metrics = {
        'dino_loss': loss,
        'teacher_entropy': entropy(p).mean(),
        'student_entropy': entropy(q).mean(),
        'teacher_temperature': tau_t,
    }
    return loss, (metrics, {'center': center})
