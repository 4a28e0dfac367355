"""FedSparsify finalizer: server optimizer step, then Purge (Algorithm 1, Server).

    w^(t+1) = ServerOpt(w^(t), aggregated update)        (FedAvg with SGD lr 1)
    Global: m^(t+1) = purging_mask(w^(t+1), s_t) (.) m^(t)
    Local:  m^(t+1) = merged client masks (Eq. 2)  (.) m^(t)
    w^(t+1) = w^(t+1) (.) m^(t+1)

TFF's `build_apply_optimizer_finalizer` steps the server optimizer (and
rejects a non-finite update, keeping the old model); then the mask: the
weights are masked after every server step (server momentum included) and
the new mask is the old one AND the new one, so a pruned weight never
regrows. Masks and the
wrappers' `pruning_step` live in the model's non-trainable weights, which the
finalizer owns; its state is the optimizer state and the round number, so a
checkpoint resumes the schedule where it stopped. Pruning is by global
magnitude ('magnitude', the paper's FedSparsify) or uniformly at random among
the kept weights ('random', the paper's Random baseline), seeded by
(seed, round); SNIP and GraSP ('snip', 'grasp') keep the mask the initial
weights carry (`learning.saliency`); PruneFL ('prunefl') readjusts it at the
end of rounds readjust_every - 1, 2 readjust_every - 1, ... from the summed
squared gradients the clients send (`masks.readjusted_masks`: regrowth). Where the model has moving statistics (BatchNormalization),
the update carries their weighted mean delta and they become the clients'
weighted mean (`learning.statistics`).

Measurements: `round_num`, `pruned` (1 if the schedule pruned this round),
`target_sparsity` (s_t), `sparsity` (zeros among the prunable weights),
`nonzero_params` (non-zero trainable parameters), `update_non_finite`.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.core import schedules
from tff_sparsify.learning import configs
from tff_sparsify.learning import layout as layout_lib
from tff_sparsify.learning import statistics as statistics_lib


def build_fed_sparsify_finalizer(
    optimizer: tff.learning.optimizers.Optimizer,
    model_weights_type,
    layout: layout_lib.PruningLayout,
    config: configs.FedSparsifyConfig,
) -> tff.learning.templates.FinalizerProcess:
  """A `FinalizerProcess` applying the server optimizer and the pruning.

  Args:
    optimizer: the server's `tff.learning.optimizers.Optimizer`.
    model_weights_type: the (unplaced) `ModelWeights` type of the model.
    layout: where the masks and pruning steps sit in the model weights.
    config: the algorithm's configuration. Used here: `schedule` (Eq. 1),
      `mode` ('global': the server prunes to s_t; 'local': the update
      carries the clients' merged mask, `OrderedDict(model_delta, mask)`),
      `pruning_method` and `seed` (global mode), `sparsity_placement` and
      `channel_multiple` (global mode, magnitude pruning:
      `layout.PruningLayout.placed_masks`) and
      `compression.server_message_prune_rate`: the fraction of the new
      global model's weights, smallest by magnitude over all trainable
      tensors, zeroed before it is broadcast (arXiv 2310.14693, server side);
      the masks are left as they are, so these weights may grow back.

  Returns:
    A `tff.learning.templates.FinalizerProcess`.
  """
  if not isinstance(optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(
        'server_optimizer_fn must be a tff.learning.optimizers.Optimizer, got '
        f'{type(optimizer).__name__}')
  mode = config.mode
  pruning_method = config.pruning_method
  sparsity_placement = config.sparsity_placement
  channel_multiple = config.channel_multiple
  seed = config.seed
  message_prune_rate = config.compression.server_message_prune_rate
  schedule = schedules.FedSparsifySchedule(config.schedule)
  trainable_type = model_weights_type.trainable
  mask_type = tff.StructWithPythonType(
      [trainable_type[i] for i in layout.prunable], tuple)
  prunefl = pruning_method == 'prunefl'
  parts = [('model_delta', trainable_type)]
  if mode == 'local' or prunefl:
    parts.append(('importance' if prunefl else 'mask', mask_type))
  if layout.statistics:
    parts.append((statistics_lib.STATISTICS, tff.StructWithPythonType(
        [model_weights_type.non_trainable[i] for i in layout.statistics], tuple)))
  structured = len(parts) > 1
  update_type = (tff.StructWithPythonType(parts, collections.OrderedDict) if structured
                 else trainable_type)

  # TFF's finalizer steps the server optimizer (and rejects a non-finite
  # update, keeping the old model and optimizer state); the pruning follows.
  optimizer_finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      optimizer, model_weights_type)

  @tff.tensorflow.computation
  def round_zero():
    return np.int32(0)

  def new_masks(trainable, current, round_num, should_prune, sparsity, merged):
    if not layout.prunable:  # A model without wrappers, never pruned (S_T = 0).
      return []
    if mode == 'local':
      return [m * c for m, c in zip(merged, current)]
    if prunefl:  # Readjusted every `readjust_every` rounds, regrowing.
      ratio = schedules.readjust_ratio(round_num, config.readjust_ratio,
                                       config.readjust_halving_rounds)
      return tf.cond(
          schedules.readjusts(round_num, config.readjust_every),
          lambda: masks_lib.readjusted_masks(layout.prunable_list(trainable), current,
                                             list(merged), ratio),
          lambda: list(current))
    if pruning_method in configs.AT_INITIALIZATION:  # Fixed since round 0.
      return list(current)

    def purge():
      if pruning_method == 'random':
        found = masks_lib.random_masks(
            current, sparsity, seed=tf.stack([tf.constant(seed, tf.int32), round_num]))
      else:
        found = layout.placed_masks(trainable, sparsity, sparsity_placement,
                                    channel_multiple)
      return [m * c for m, c in zip(found, current)]
    return tf.cond(should_prune, purge, lambda: list(current))

  @tff.tensorflow.computation(np.int32, model_weights_type, update_type, np.int32)
  @tf.function
  def prune(round_num, weights, update, update_non_finite):
    """Purge of the stepped model: `weights` hold the old masks and steps."""
    merged = (update['mask'] if mode == 'local' else
              update['importance'] if prunefl else None)
    round_num = round_num + 1
    should_prune, sparsity = schedule(round_num)
    if prunefl:  # `pruned`: the mask was readjusted.
      should_prune = schedules.readjusts(round_num, config.readjust_every)
    current = layout.mask_list(weights.non_trainable)
    trainable = masks_lib.apply_masks(
        weights.trainable, layout.masks_by_trainable(weights.non_trainable))
    masks = new_masks(trainable, current, round_num, should_prune, sparsity, merged)
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
    prunable = layout.prunable_list(trainable)
    measurements = collections.OrderedDict(
        round_num=round_num,
        pruned=tf.cast(should_prune, tf.int32),
        target_sparsity=tf.cast(sparsity, tf.float32),
        sparsity=tf.cast(masks_lib.sparsity(prunable), tf.float32) if prunable
        else tf.constant(0.0),
        nonzero_params=masks_lib.num_nonzero(trainable),
        update_non_finite=update_non_finite)
    new_weights = tff.learning.models.ModelWeights(tuple(trainable), tuple(non_trainable))
    return round_num, new_weights, measurements

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

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(state_type)
  def get_hparams_fn(state):
    return optimizer.get_hparams(state['optimizer_state'])

  hparams_type = get_hparams_fn.type_signature.result

  @tff.tensorflow.computation(state_type, hparams_type)
  def set_hparams_fn(state, hparams):
    return collections.OrderedDict(
        optimizer_state=optimizer.set_hparams(state['optimizer_state'], hparams),
        round_num=state['round_num'])

  return tff.learning.templates.FinalizerProcess(
      init_fn, next_fn, get_hparams_fn=get_hparams_fn, set_hparams_fn=set_hparams_fn)
