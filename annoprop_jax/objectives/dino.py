"""DINO: self-distillation from the EMA teacher with prototypes, centring and temperature warm-up.

The teacher is the EMA target network (``target_params``). It sees the global views only; the
student sees global and (optional) local views; every (teacher view, other student view) pair is
a cross-entropy term. The centre is an EMA of the teacher's logits, updated once per step.

With annotation bootstrapping the candidates are the K prototypes: p(l | x) is the teacher's
centred, sharpened distribution and Q_AB a second prototype head on phi_AB (docs/method.md).
"""
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax import errors
from annoprop_jax.models import heads
from annoprop_jax.models import network as network_lib
from annoprop_jax.objectives import method

Network = network_lib.Network


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


def self_distillation(cfg, inputs, logits):
  """DINO's loss on the annotation batch: the teacher (``inputs.target_params``) on the global
  views, the student on the global and local views, the centre updated once. ``logits(params,
  images, rng)`` -> (B, V, K) prototype logits; ``cfg`` holds DINO's keys. Returns (loss,
  metrics, method state after the step)."""
  annotation, center = inputs.annotation, inputs.method_state['center']
  teacher = jax.lax.stop_gradient(logits(inputs.target_params, annotation['images'], None))
  student = logits(inputs.params, annotation['images'], method.online_rng(inputs, 'annotation'))
  if 'local_images' in annotation:
    local = logits(inputs.params, annotation['local_images'], method.online_rng(inputs, 'local'))
    student = jnp.concatenate([student, local], axis=1)
  tau_t = teacher_temperature(cfg, inputs.step)
  loss, p = dino_loss(student, teacher, center, cfg.student_temperature, tau_t)
  center = cfg.center_momentum * center + (1 - cfg.center_momentum) * teacher.mean(axis=(0, 1))
  q = jax.nn.softmax(student / cfg.student_temperature, axis=-1)
  metrics = {
      'dino_loss': loss,
      'teacher_entropy': method.entropy(p).mean(),
      'student_entropy': method.entropy(q).mean(),
      'teacher_temperature': tau_t,
  }
  return loss, metrics, {'center': center}


def freeze_prototypes(params, step, freeze_steps):
  """DINO's last-layer freeze: before ``freeze_steps`` no gradient reaches the prototypes of the
  base head, nor of the AB head (AB_DINO)."""
  frozen = dict(params)
  for head in ('head', 'ab_head'):
    if head in params:
      prototypes = params[head]['prototypes']
      frozen[head] = {**params[head], 'prototypes': jnp.where(
          step < freeze_steps, jax.lax.stop_gradient(prototypes), prototypes)}
  return frozen


class DINO(method.Method):
  ab_name = 'ab_dino'
  probe_params = 'target'           # the EMA teacher, as DINO reports

  @staticmethod
  def default_config():
    return ml_collections.ConfigDict(dict(
        name='dino',
        num_prototypes=4096,            # K, docs/method.md DEFAULT at small scale
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

  @staticmethod
  def tiny(config):
    config.update(num_prototypes=64, head_hidden_dim=64, head_bottleneck_dim=32)

  @staticmethod
  def validate(config):
    if config.data.annotation.views.num < 2:
      raise errors.ConfigError('dino needs at least 2 global views (data.annotation.views.num '
                               '>= 2)')

  def modules(self, bootstrap):
    c = self.config
    head = lambda: heads.PrototypeHead(
        num_prototypes=c.num_prototypes, hidden_dim=c.head_hidden_dim,
        bottleneck_dim=c.head_bottleneck_dim, num_layers=c.head_layers)
    return dict(head=head(), ab_head=head()) if bootstrap else dict(head=head())

  def init_state(self):
    return {'center': jnp.zeros((self.config.num_prototypes,), jnp.float32)}

  def step_params(self, params, step):
    return freeze_prototypes(params, step, self.config.freeze_prototypes_steps)

  def _logits(self, params, images, rng=None):
    """(B, V, S, S, 3) -> (B, V, K) prototype logits."""
    return self.apply(params, Network.base, self.encode_views(params, images, rng)[0])

  def base_loss(self, inputs, bootstrap):
    del bootstrap       # the candidates are the prototypes
    loss, metrics, state = self_distillation(self.config, inputs, self._logits)
    return method.BaseResult(loss, metrics, state)

  def ab_log_probs(self, params, phi, candidates):
    del candidates
    logits = self.apply(params, Network.ab, phi)
    return jax.nn.log_softmax(logits / self.config.student_temperature, axis=-1)

  def target_probs(self, inputs, pooled, candidates):
    del candidates
    g = self.apply(inputs.target_params, Network.base, pooled)
    return teacher_distribution(g, inputs.method_state['center'],
                                teacher_temperature(self.config, inputs.step))
