"""FedSparsify finalizer: server optimizer step, then Purge (Algorithm 1, Server).

    w^(t+1) = ServerOpt(w^(t), aggregated update)        (FedAvg with SGD lr 1)
    Global: m^(t+1) = purging_mask(w^(t+1), s_t) (.) m^(t)
    Local:  m^(t+1) = merged client masks (Eq. 2)  (.) m^(t)
    w^(t+1) = w^(t+1) (.) m^(t+1)

As TFF's `apply_optimizer_finalizer`, plus the mask: the weights are masked
after every server step (server momentum included) and the new mask is the
old one AND the new one, so a pruned weight never regrows. Masks and the
wrappers' `pruning_step` live in the model's non-trainable weights, which the
finalizer owns; its state is the optimizer state and the round number, so a
checkpoint resumes the schedule where it stopped. Pruning is by global
magnitude ('magnitude', the paper's FedSparsify) or uniformly at random among
the kept weights ('random', the paper's Random baseline), seeded by
(seed, round).

Measurements: `round_num`, `pruned` (1 if the schedule pruned this round),
`target_sparsity` (s_t), `sparsity` (zeros among the prunable weights),
`nonzero_params` (non-zero trainable parameters), `update_non_finite`.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import client_work as client_work_lib
from tff_sparsify import masks as masks_lib
from tff_sparsify import schedules

PRUNING_METHODS = ('magnitude', 'random')


def check_pruning_method(mode: str, pruning_method: str):
  if mode not in client_work_lib.MODES:
    raise ValueError(f'mode must be one of {client_work_lib.MODES}, got {mode!r}')
  if pruning_method not in PRUNING_METHODS:
    raise ValueError(
        f'pruning_method must be one of {PRUNING_METHODS}, got {pruning_method!r}')
  if mode == 'local' and pruning_method != 'magnitude':
    raise ValueError(
        f"pruning_method must be 'magnitude' in local mode, got {pruning_method!r}")


def _apply_masks(trainable, masks_by_trainable):
  return [w if m is None else masks_lib.mask_tensor(w, m)
          for w, m in zip(trainable, masks_by_trainable)]


def build_fed_sparsify_finalizer(
    optimizer: tff.learning.optimizers.Optimizer,
    model_weights_type,
    layout: client_work_lib.PruningLayout,
    schedule: schedules.FedSparsifySchedule,
    *,
    mode: str = 'global',
    pruning_method: str = 'magnitude',
    seed: int = 0,
    message_prune_rate: float = 0.0,
    sparsity_placement: str = 'global',
) -> tff.learning.templates.FinalizerProcess:
  """A `FinalizerProcess` applying the server optimizer and the pruning.

  Args:
    optimizer: the server's `tff.learning.optimizers.Optimizer`.
    model_weights_type: the (unplaced) `ModelWeights` type of the model.
    layout: where the masks and pruning steps sit in the model weights.
    schedule: the sparsity schedule (Eq. 1).
    mode: 'global' (the server prunes to s_t) or 'local' (the update carries
      the clients' merged mask: `OrderedDict(model_delta=..., mask=...)`).
    pruning_method: one of `PRUNING_METHODS` (global mode).
    seed: seed of the random pruning.
    message_prune_rate: fraction of the new global model's weights, the
      smallest by magnitude over all trainable tensors, zeroed before it is
      broadcast (arXiv 2310.14693, server side); the masks are left as they
      are, so these weights may grow back.
    sparsity_placement: global mode, magnitude pruning: 'global' (one
      ranking over all prunable weights, the paper's), 'uniform' (every
      prunable tensor to s_t by its own ranking) or 'compute' (per-layer
      sparsities that minimise the multiply-adds at total s_t), see
      `masks.placed_magnitude_masks`.

  Returns:
    A `tff.learning.templates.FinalizerProcess`.
  """
  check_pruning_method(mode, pruning_method)
  layout.check_placement(sparsity_placement)
  if sparsity_placement != 'global' and pruning_method != 'magnitude':
    raise ValueError(
        f"sparsity_placement={sparsity_placement!r} needs pruning_method='magnitude', got "
        f'{pruning_method!r}')
  client_work_lib.check_message_prune_rate('server_message_prune_rate', message_prune_rate)
  if not isinstance(optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(
        'server_optimizer_fn must be a tff.learning.optimizers.Optimizer, got '
        f'{type(optimizer).__name__}')
  trainable_type = model_weights_type.trainable
  mask_type = tff.StructWithPythonType(
      [trainable_type[i] for i in layout.prunable], tuple)
  update_type = (tff.StructWithPythonType(
      [('model_delta', trainable_type), ('mask', mask_type)], collections.OrderedDict)
                 if mode == 'local' else trainable_type)

  @tff.tensorflow.computation
  def init_tf():
    specs = tff.types.type_to_tf_tensor_specs(trainable_type)
    return collections.OrderedDict(
        optimizer_state=optimizer.initialize(specs), round_num=np.int32(0))

  state_type = init_tf.type_signature.result

  def new_masks(trainable, current, round_num, should_prune, sparsity, merged):
    if mode == 'local':
      return [m * c for m, c in zip(merged, current)]

    def purge():
      if pruning_method == 'random':
        found = masks_lib.random_masks(
            current, sparsity, seed=tf.stack([tf.constant(seed, tf.int32), round_num]))
      else:
        found = layout.placed_masks(trainable, sparsity, sparsity_placement)
      return [m * c for m, c in zip(found, current)]
    return tf.cond(should_prune, purge, lambda: list(current))

  @tff.tensorflow.computation(state_type, model_weights_type, update_type)
  @tf.function
  def next_tf(state, weights, update):
    delta, merged = ((update['model_delta'], update['mask']) if mode == 'local'
                     else (update, None))
    optimizer_state, trainable = optimizer.next(
        state['optimizer_state'], tuple(weights.trainable), tuple(delta))
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(d)) for d in tf.nest.flatten(delta)])
    if not finite:  # As TFF's reject_non_finite_update: keep the old model.
      optimizer_state, trainable = state['optimizer_state'], tuple(weights.trainable)
    round_num = state['round_num'] + 1
    should_prune, sparsity = schedule.tf_call(round_num)
    current = layout.mask_list(weights.non_trainable)
    trainable = _apply_masks(trainable, layout.masks_by_trainable(weights.non_trainable))
    masks = new_masks(trainable, current, round_num, should_prune, sparsity, merged)
    non_trainable = list(weights.non_trainable)
    for i, mask in zip(layout.masks, masks):
      non_trainable[i] = mask
    for i in layout.steps:
      non_trainable[i] = tf.cast(round_num + 1, tf.int64)
    trainable = _apply_masks(trainable, layout.masks_by_trainable(non_trainable))
    if message_prune_rate > 0:
      trainable = masks_lib.apply_masks(
          trainable, masks_lib.magnitude_masks(trainable, message_prune_rate))
    prunable = layout.prunable_list(trainable)
    measurements = collections.OrderedDict(
        round_num=round_num,
        pruned=tf.cast(should_prune, tf.int32),
        target_sparsity=tf.cast(sparsity, tf.float32),
        sparsity=tf.cast(masks_lib.sparsity(prunable), tf.float32),
        nonzero_params=client_work_lib.num_nonzero(trainable),
        update_non_finite=tf.cast(tf.logical_not(finite), tf.int32))
    new_state = collections.OrderedDict(optimizer_state=optimizer_state, round_num=round_num)
    new_weights = tff.learning.models.ModelWeights(tuple(trainable), tuple(non_trainable))
    return new_state, new_weights, measurements

  @tff.federated_computation
  def init_fn():
    return tff.federated_eval(init_tf, tff.SERVER)

  @tff.federated_computation(
      tff.FederatedType(state_type, tff.SERVER),
      tff.FederatedType(model_weights_type, tff.SERVER),
      tff.FederatedType(update_type, tff.SERVER))
  def next_fn(state, weights, update):
    new_state, new_weights, measurements = tff.federated_map(
        next_tf, (state, weights, update))
    return tff.templates.MeasuredProcessOutput(new_state, new_weights, measurements)

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
