"""Value maps (the paper's first figure): for one image, a source box and one annotation l, the
predicted value Q_AB(l | x_source, a) of every target box a on a grid of centres x sizes, beside
what Q is trained to predict there, the target network's p(l | x_target).

``value_map`` works on any ``q_of_moves`` / ``p_of_boxes`` (a test gives a hand-made Q);
``RunValues`` builds both from an AB run's checkpoint.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from annoprop_jax import objectives
from annoprop_jax.data import boxes as boxes_lib
from annoprop_jax.data import views as views_lib
from annoprop_jax.models import network as network_lib

SIZES = (0.3, 0.5, 0.7)     # target box sides, fractions of the image side
GRID = 9                    # centres per axis for each size


def target_boxes(sizes=SIZES, grid=GRID):
  """(S, G, G, 4) square boxes (ymin, xmin, ymax, xmax) inside the image: for each side in
  ``sizes`` a ``grid`` x ``grid`` lattice of centres from side/2 to 1 - side/2."""
  out = []
  for side in sizes:
    centres = np.linspace(side / 2, 1 - side / 2, grid)
    cy, cx = np.meshgrid(centres, centres, indexing='ij')
    out.append(np.stack([cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2], -1))
  return np.stack(out).astype(np.float32)


@dataclasses.dataclass
class ValueMap:
  source_box: np.ndarray    # (4,)
  boxes: np.ndarray         # (S, G, G, 4) the target boxes
  q: np.ndarray             # (S, G, G) Q_AB(l | x_source, move to the box)
  p: np.ndarray             # (S, G, G) p_target(l | x_box), or None
  annotation: int           # l

  def peak(self):
    """(size index, row, column) of the largest Q."""
    return np.unravel_index(np.argmax(self.q), self.q.shape)


def value_map(q_of_moves, source_box, annotation, p_of_boxes=None, sizes=SIZES, grid=GRID):
  """The ``ValueMap`` of ``annotation`` from ``source_box``: ``q_of_moves`` maps (T, 4) moves
  (target boxes in the source box's frame, ``boxes.relative``) to (T, L) probabilities;
  ``p_of_boxes`` maps (T, 4) boxes of the image to (T, L)."""
  boxes = target_boxes(sizes, grid)
  flat = boxes.reshape(-1, 4)
  q = np.asarray(q_of_moves(boxes_lib.relative(np.asarray(source_box, np.float32), flat)))
  p = None if p_of_boxes is None else np.asarray(p_of_boxes(flat))[:, annotation]
  return ValueMap(np.asarray(source_box, np.float32), boxes,
                  q[:, annotation].reshape(boxes.shape[:3]),
                  None if p is None else p.reshape(boxes.shape[:3]), int(annotation))


class RunValues:
  """Q_AB and p_target of an AB run's checkpoint, as ``value_map`` reads them.

  The candidate annotations come from ``annotation_batch`` (one batch of the run's annotation
  stream), as in training: DINO's prototypes and supervised classes are fixed, SimCLR's
  candidates are that batch's views and CLIP's its captions.
  """

  def __init__(self, objective, state, annotation_batch, step, view_size):
    if not isinstance(objective, objectives.bootstrap.AnnotationBootstrapping):
      raise ValueError('value maps need an annotation-bootstrapping run')
    self.objective, self.view_size = objective, view_size
    method = objective.method
    step = jnp.int32(step)
    self._params = method.step_params(state['params'], step)
    self._target_params = state['target_params']
    inputs = objectives.LossInputs(
        params=self._params, target_params=self._target_params,
        method_state=state['method_state'], batch={'annotation': annotation_batch}, step=step,
        rng=jax.random.PRNGKey(0))
    # Once per map set, eagerly (its result is not a pytree): the candidates are small.
    base = method.base_loss(inputs, bootstrap=True)

    def q(params, source, moves):             # (S, S, 3), (T, 4) -> (T, L)
      _, tokens = method.encode_views(params, source[None, None])
      phi = method.apply(params, network_lib.Network.decode, tokens, moves[None])
      return jnp.exp(method.ab_log_probs(params, phi, base.candidates))[0]

    def p(target_params, views):              # (T, S, S, 3) -> (T, L)
      pooled, _ = method.encode_views(target_params, views[None])
      return method.target_probs(dataclasses.replace(inputs, target_params=target_params),
                                 pooled, base.target_candidates)[0]

    self._q, self._p = jax.jit(q), jax.jit(p)

  def p_of_boxes(self, image):
    """(T, 4) boxes of ``image`` -> (T, L) target-network probabilities of their views."""
    return lambda boxes: np.asarray(self._p(
        self._target_params, np.stack([views_lib.crop(image, b, self.view_size) for b in boxes])))

  def q_of_moves(self, image, source_box):
    source = views_lib.crop(image, source_box, self.view_size)
    return lambda moves: np.asarray(self._q(self._params, source,
                                            jnp.asarray(moves, jnp.float32)))

  def top_annotation(self, image, source_box):
    """The target network's most probable annotation of the source view (the default l)."""
    return int(np.argmax(self.p_of_boxes(image)(np.asarray(source_box, np.float32)[None])[0]))

  def value_map(self, image, source_box, annotation=None, sizes=SIZES, grid=GRID):
    if annotation is None:
      annotation = self.top_annotation(image, source_box)
    return value_map(self.q_of_moves(image, source_box), source_box, annotation,
                     self.p_of_boxes(image), sizes, grid)
