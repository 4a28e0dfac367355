"""The generic finalizer: the server optimizer step, then the algorithm's masks.

    w^(t+1) = ServerOpt(w^(t), aggregated update)        (FedAvg with SGD lr 1)
    m^(t+1) = Rules.server_masks(w^(t+1), m^(t), merged message)
    w^(t+1) = w^(t+1) (.) m^(t+1)

TFF's `build_apply_optimizer_finalizer` steps the server optimizer (and
rejects a non-finite update, keeping the old model); then the mask: the
weights are masked after every server step (server momentum included), and
the algorithm's rules (`learning.algorithms.base.Rules.server_masks`) give the
new masks from the stepped model, the current masks, the round's schedule
and the clients' merged message (FedSparsify-Global: the magnitude purge
ANDed with the old mask, so a pruned weight never regrows; Local: the merged
mask; PruneFL: the readjusted mask). Masks and the wrappers' `pruning_step`
live in the model's non-trainable weights, which the finalizer owns; its
state is the optimizer state and the round number, so a checkpoint resumes
the schedule where it stopped. Where the model has moving statistics
(BatchNormalization), the update carries their weighted mean delta and they
become the clients' weighted mean (`learning.statistics`).

Measurements: `round_num`, `pruned` (the flag of the rules' schedule: 1 if
the round pruned, or readjusted PruneFL's mask), `target_sparsity` (s_t),
`sparsity` (zeros among the prunable weights), `nonzero_params` (non-zero
trainable parameters), `update_non_finite`; in channel granularity,
`channel_layers_at_floor` (`masks.channel_layers_at_floor`: layers the
global ranking squeezed down to the floor of kept channels; the training
loop warns once when it is not 0).
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.learning import configs
from tff_sparsify.learning import pruning_layout as layout_lib
from tff_sparsify.learning.algorithms import base
from tff_sparsify.learning import statistics as statistics_lib


def build_masked_finalizer(
    optimizer: tff.learning.optimizers.Optimizer,
    model_weights_type,
    layout: layout_lib.PruningLayout,
    config: configs.FedSparsifyConfig,
    rules: base.Rules,
) -> tff.learning.templates.FinalizerProcess:
  """A `FinalizerProcess` applying the server optimizer and the pruning.

  Args:
    optimizer: the server's `tff.learning.optimizers.Optimizer`.
    model_weights_type: the (unplaced) `ModelWeights` type of the model.
    layout: where the masks and pruning steps sit in the model weights.
    config: the algorithm's configuration. Used here:
      `compression.server_message_prune_rate`: the fraction of the new
      global model's weights, smallest by magnitude over all trainable
      tensors, zeroed before it is broadcast (arXiv 2310.14693, server side);
      the masks are left as they are, so these weights may grow back.
    rules: the algorithm's `learning.algorithms.base.Rules`: its schedule,
      its new masks, and the name of the message the update carries beside
      the model delta (`OrderedDict(model_delta, <message>)`), merged by the
      aggregator.

  Returns:
    A `tff.learning.templates.FinalizerProcess`.
  """
  if not isinstance(optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(
        'server_optimizer_fn must be a tff.learning.optimizers.Optimizer, got '
        f'{type(optimizer).__name__}')
  update_type, structured = _update_type(model_weights_type, layout, rules)
  # TFF's finalizer steps the server optimizer (and rejects a non-finite
  # update, keeping the old model and optimizer state); the pruning follows.
  optimizer_finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      optimizer, model_weights_type)
  prune = _build_prune(model_weights_type, update_type, layout, rules,
                       config.compression.server_message_prune_rate)

  @tff.tensorflow.computation
  def round_zero():
    return np.int32(0)

  @tff.federated_computation
  def init_fn():
    return tff.federated_zip(collections.OrderedDict(
        optimizer_state=optimizer_finalizer.initialize(),
        round_num=tff.federated_eval(round_zero, tff.SERVER)))

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(model_weights_type, tff.SERVER),
      tff.FederatedType(update_type, tff.SERVER))
  def next_fn(state, weights, update):
    delta = update.model_delta if structured else update
    stepped = optimizer_finalizer.next(state.optimizer_state, weights, delta)
    round_num, new_weights, measurements = tff.federated_map(
        prune, (state.round_num, stepped.result, update,
                stepped.measurements.update_non_finite))
    new_state = tff.federated_zip(collections.OrderedDict(
        optimizer_state=stepped.state, round_num=round_num))
    return tff.templates.MeasuredProcessOutput(new_state, new_weights, measurements)

  get_hparams_fn, set_hparams_fn = _hparams_fns(optimizer, init_fn.type_signature.result.member)
  return tff.learning.templates.FinalizerProcess(
      init_fn, next_fn, get_hparams_fn=get_hparams_fn, set_hparams_fn=set_hparams_fn)


def _update_type(model_weights_type, layout: layout_lib.PruningLayout, rules: base.Rules):
  """(the aggregated update's type, whether it is a struct): the model delta, or
  `OrderedDict(model_delta, <message>, <statistics>)`."""
  trainable_type = model_weights_type.trainable
  parts = [('model_delta', trainable_type)]
  if rules.message:
    parts.append((rules.message, tff.StructWithPythonType(
        [trainable_type[i] for i in layout.prunable], tuple)))
  if layout.statistics:
    parts.append((statistics_lib.STATISTICS, tff.StructWithPythonType(
        [model_weights_type.non_trainable[i] for i in layout.statistics], tuple)))
  if len(parts) == 1:
    return trainable_type, False
  return tff.StructWithPythonType(parts, collections.OrderedDict), True


def _measurements(round_num, should_prune, sparsity, trainable, layout, update_non_finite,
                  masks):
  prunable = layout.prunable_list(trainable)
  found = collections.OrderedDict(
      round_num=round_num,
      pruned=tf.cast(should_prune, tf.int32),
      target_sparsity=tf.cast(sparsity, tf.float32),
      sparsity=tf.cast(masks_lib.sparsity(prunable), tf.float32) if prunable
      else tf.constant(0.0),
      nonzero_params=masks_lib.num_nonzero(trainable),
      update_non_finite=update_non_finite)
  if layout.granularity == 'channel' and masks:
    found['channel_layers_at_floor'] = masks_lib.channel_layers_at_floor(
        masks, sparsity, layout.channel_frozen, layout.channel_groups or None)
  return found


def _build_prune(model_weights_type, update_type, layout: layout_lib.PruningLayout,
                 rules: base.Rules, message_prune_rate: float):
  """The server's step after the optimizer: the rules' new masks, applied (a TF computation)."""

  @tff.tensorflow.computation(np.int32, model_weights_type, update_type, np.int32)
  @tf.function
  def prune(round_num, weights, update, update_non_finite):
    """Purge of the stepped model: `weights` hold the old masks and steps."""
    round_num = round_num + 1
    should_prune, sparsity = rules.schedule(round_num)
    trainable = masks_lib.apply_masks(
        weights.trainable, layout.masks_by_trainable(weights.non_trainable))
    masks = rules.server_masks(base.ServerRound(
        layout=layout, trainable=trainable, current=layout.mask_list(weights.non_trainable),
        round_num=round_num, should_prune=should_prune, sparsity=sparsity,
        message=update[rules.message] if rules.message else None)) if layout.prunable else []
    non_trainable = list(weights.non_trainable)
    if layout.statistics:
      non_trainable = statistics_lib.apply(non_trainable, layout.statistics,
                                           update[statistics_lib.STATISTICS])
    for i, mask in zip(layout.masks, masks):
      non_trainable[i] = mask
    for i in layout.steps:
      non_trainable[i] = tf.cast(round_num + 1, tf.int64)
    trainable = masks_lib.apply_masks(trainable, layout.masks_by_trainable(non_trainable))
    if message_prune_rate > 0:
      trainable = masks_lib.apply_masks(
          trainable, masks_lib.magnitude_masks(trainable, message_prune_rate))
    measurements = _measurements(round_num, should_prune, sparsity, trainable, layout,
                                 update_non_finite, masks)
    new_weights = tff.learning.models.ModelWeights(tuple(trainable), tuple(non_trainable))
    return round_num, new_weights, measurements

  return prune


def _hparams_fns(optimizer, state_type):
  """TFF's `get_hparams_fn` / `set_hparams_fn` of the finalizer's state (the optimizer's)."""

  @tff.tensorflow.computation(state_type)
  def get_hparams_fn(state):
    return optimizer.get_hparams(state['optimizer_state'])

  @tff.tensorflow.computation(state_type, get_hparams_fn.type_signature.result)
  def set_hparams_fn(state, hparams):
    return collections.OrderedDict(
        optimizer_state=optimizer.set_hparams(state['optimizer_state'], hparams),
        round_num=state['round_num'])

  return get_hparams_fn, set_hparams_fn
