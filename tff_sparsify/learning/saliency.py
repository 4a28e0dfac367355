"""Pruning at initialization: SNIP and GraSP scores, and the fixed mask they give.

The paper's baselines (Stripelis et al., line 80, following PruneFL and
FedDST): one client, drawn with the run's seed, scores the initial global
model on one batch of its own data; one ranking over all prunable weights
keeps the best (1 - s) of them; the mask is then fixed for the whole run
(the process is FedSparsify whose masks never change, `algorithms.snip`
and `algorithms.grasp`, and whose initial weights carry the mask,
`fed_sparsify.build_weighted_fed_sparsify(initial_masks=...)`; client and
server steps enforce it like FedSparsify's).

- SNIP (Lee et al. 2019): score |g (.) w|, g the gradient of the loss on the
  batch; the lowest scores are pruned.
- GraSP (Wang et al. 2020, Eq. 8): score -w (.) Hg, H the Hessian of the
  loss and g its gradient on the batch; the *highest* scores are pruned
  (their removal reduces the gradient flow least, or increases it). Hg is
  the gradient of stop_gradient(g) . g (nested `tf.GradientTape`s).

Choices, and whose they are:
- one batch of `client_batch_size` examples, the first ones of the client's
  data in partition order, unshuffled: the authors' code
  (`x_chunks[randint][:batch_size]`); the client is drawn with the seed
  (`scoring_client`), as theirs is with Python's seeded `random`;
- g and Hg are taken over all trainable weights, biases included (both
  the authors' code and the original papers);
- only the weights tfmot prunes (kernels) are scored and ranked, as
  FedSparsify ranks them: the authors ranked biases too. Keras initializes
  biases to zero, so their SNIP and GraSP scores are zero at initialization;
- ties are broken by position, so the count pruned is exactly round(s * n)
  (`core.masks`; the authors keep every weight at the threshold).
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.learning import pruning

METHODS = ('snip', 'grasp')


def _loss(model: tf.keras.Model, loss_fn, x, y):
  return loss_fn(y, model(x, training=False))


def snip_scores(model: tf.keras.Model, loss_fn, x, y) -> list[tf.Tensor]:
  """|g (.) w| of each prunable weight of `model` (tfmot-wrapped), on the batch (x, y)."""
  weights = pruning.prunable_weights(model)
  with tf.GradientTape() as tape:
    loss = _loss(model, loss_fn, x, y)
  grads = tape.gradient(loss, weights)
  return [tf.abs(g * w) for g, w in zip(grads, weights)]


def hessian_gradient_product(model: tf.keras.Model, loss_fn, x, y) -> list[tf.Tensor]:
  """Hg over all trainable weights of `model`, on the batch (x, y)."""
  variables = model.trainable_variables
  with tf.GradientTape() as outer:
    with tf.GradientTape() as inner:
      loss = _loss(model, loss_fn, x, y)
    grads = inner.gradient(loss, variables)
    flow = tf.add_n([tf.reduce_sum(tf.stop_gradient(g) * g) for g in grads])
  return outer.gradient(flow, variables)


def grasp_scores(model: tf.keras.Model, loss_fn, x, y) -> list[tf.Tensor]:
  """-w (.) Hg of each prunable weight of `model`; the highest are pruned."""
  hg = hessian_gradient_product(model, loss_fn, x, y)
  by_ref = {v.ref(): h for v, h in zip(model.trainable_variables, hg)}
  return [-w * by_ref[w.ref()] for w in pruning.prunable_weights(model)]


def masks_from_scores(scores: Sequence[tf.Tensor], sparsity: float, method: str) -> list[np.ndarray]:
  """float32 masks keeping the best (1 - sparsity) of all `scores` together.

  SNIP keeps the highest scores; GraSP keeps the lowest (it prunes the
  highest -w (.) Hg). Exactly round(sparsity * n) zeros.
  """
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}')
  flat = tf.concat([tf.reshape(tf.cast(s, tf.float32), [-1]) for s in scores], 0)
  ranked = flat if method == 'snip' else -flat
  return [m.numpy() for m in masks_lib.lowest_score_masks(ranked, sparsity, scores)]


def scoring_client(num_clients: int, seed: int) -> int:
  """The index of the client that scores the initial model (drawn with `seed`)."""
  return int(np.random.default_rng(seed).integers(num_clients))


def scoring_batch(client_data, seed: int, batch_size=None, element_fn=None):
  """The first `batch_size` (None: all) examples of the seeded client, through `element_fn`: (x, y).

  `element_fn` turns a batch of client data into the model's (default: the
  built-in images' `models.normalize`).
  """
  if element_fn is None:
    from tff_sparsify.learning import models  # pylint: disable=g-import-not-at-top
    element_fn = models.normalize
  client_id = client_data.client_ids[scoring_client(len(client_data.client_ids), seed)]
  dataset = client_data.create_tf_dataset_for_client(client_id)
  if batch_size is not None:
    dataset = dataset.take(batch_size)
  batch = next(iter(dataset.batch(batch_size or 2**31 - 1).map(element_fn)))
  return batch['x'], batch['y']


def initial_masks(model: tf.keras.Model, loss_fn, x, y, *, method: str,
                  sparsity: float) -> list[np.ndarray]:
  """The fixed masks of `method` ('snip' or 'grasp') for `model`'s current weights."""
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}')
  score = snip_scores if method == 'snip' else grasp_scores
  return masks_from_scores(score(model, loss_fn, x, y), sparsity, method)


def initial_masks_of_run(method: str, train_config, model: tf.keras.Model, loss_fn,
                         client_data, scoring: dict) -> list[np.ndarray]:
  """The masks of a run of `method`: its seeded client's first `client_batch_size` examples.

  `scoring` holds `scoring_batch`'s optional `element_fn`.
  """
  x, y = scoring_batch(client_data, train_config.seed, train_config.client_batch_size,
                       **scoring)
  return initial_masks(model, loss_fn, x, y, method=method,
                       sparsity=train_config.algorithm_config.schedule.final_sparsity)
