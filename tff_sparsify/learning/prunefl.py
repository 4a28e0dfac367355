"""PruneFL's initial pruning (Jiang et al. 2022), as the FedSparsify paper ran it.

Stripelis et al., line 82: "At the start of training, we randomly pick a
client from the federation and learn the initial pruning mask after
completing 5 reconfigurations. We perform global mask readjustment every 50
rounds and set the sparsification ratio for mask readjustment at round t to
s x 0.5^(t/1000) with s = 0.3."

The federated part is FedSparsify with `pruning_method='prunefl'`: clients
send their squared gradients summed over their local steps beside their
delta at readjustment rounds (`client_work`), the server sums them
(`aggregators.ImportanceSummingFactory`) and readjusts the mask
(`core.masks.readjusted_masks`: of the kept weights the fraction
s x 0.5^(t/H) of smallest magnitude is pruned, and as many pruned positions
of largest importance are kept again, starting from zero), so the sparsity
stays `final_sparsity` (the paper reports PruneFL at 0.3).

This module is the initial pruning, before round 1, on the client drawn with
the seed (`saliency.scoring_client`), from the initial global weights:
`initial_reconfigurations` times, one local epoch of SGD over the client's
examples in partition order (no shuffle; learning rate and batch size of
the run) under the current mask, summing the squared gradients; then the
first reconfiguration prunes the trained weights to `final_sparsity` by
global magnitude and each later one readjusts the mask at ratio s. The mask
is what the federation starts from, applied to the initial global weights
(the authors' code does the same: the client's trained weights are not
used). Choices of ours: one local epoch per reconfiguration (the authors
train 10 epochs, on the whole training set rather than the client's own,
which we take for a slip), and magnitude pruning for the first
reconfiguration (from a dense model there is nothing to regrow).
"""

import numpy as np
import tensorflow as tf

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.learning import pruning


def initial_masks(model: tf.keras.Model, loss_fn, x, y, *, sparsity: float,
                  reconfigurations: int, ratio: float, learning_rate: float,
                  batch_size: int) -> list[np.ndarray]:
  """The initial PruneFL masks of `model`'s prunable weights (`model` is trained in place)."""
  prunable = pruning.prunable_weights(model)
  variables = model.trainable_variables
  index = {v.ref(): i for i, v in enumerate(variables)}
  masks = [tf.ones_like(w) for w in prunable]
  mask_of = {index[w.ref()]: k for k, w in enumerate(prunable)}
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)

  @tf.function
  def epoch(masks):
    def step(squares, batch):
      xb, yb = batch
      with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb, training=False))
      grads = tape.gradient(loss, variables)
      for i, (v, g) in enumerate(zip(variables, grads)):
        updated = v - learning_rate * g
        if i in mask_of:
          updated = masks_lib.mask_tensor(updated, masks[mask_of[i]])
        v.assign(updated)
      return tuple(s + tf.square(grads[index[w.ref()]]) for s, w in zip(squares, prunable))
    return dataset.reduce(tuple(tf.zeros_like(w) for w in prunable), step)

  for r in range(reconfigurations):
    squares = epoch(masks)
    weights = [tf.identity(w) for w in prunable]
    if r == 0:
      masks = masks_lib.magnitude_masks(weights, sparsity)
    else:
      masks = masks_lib.readjusted_masks(weights, masks, squares, ratio)
    for w, m in zip(prunable, masks):
      w.assign(masks_lib.mask_tensor(w, m))
  return [m.numpy() for m in masks]
