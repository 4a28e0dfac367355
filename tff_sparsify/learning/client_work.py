"""FedSparsify client work: Tune under the global mask, optionally Purge locally.

Stripelis et al., Algorithm 1, procedure Client(w, m, E, s_t):

    w_k^(i+1) = w_k^(i) - eta * g_k^(i) (.) m        for every local step
    m_k = purging_mask(w_k^(S), s_t)                  FedSparsify-Local only

Shaped like TFF's `model_delta_client_work`: clients send the model delta
`initial - trained`, weighted by their example count (zero weight and zero
delta if it is not finite). The weights are masked when they arrive and
after every optimizer step, so a pruned weight is zero after every client
step, client momentum included. The tfmot wrappers' own per-step work
(`weight * mask` before each forward pass, step increment, assert, schedule
cond) is then redundant and skipped (`pruning.skip_wrapper_updates`): it
doubled the local training time. The gradient itself is not masked: TFF's
optimizers are element-wise, so optimizer state at a pruned position never
reaches a kept one. In local mode the client prunes its trained model to
s_t by global magnitude (already pruned weights stay pruned) and sends its
mask beside the delta: `OrderedDict(model_delta=..., mask=...)`. PruneFL
(`pruning_method='prunefl'`) sends `OrderedDict(model_delta=...,
importance=...)`: its squared gradients summed over the local steps, at
readjustment rounds (zeros at the others); they count in `bytes_uploaded`
(dense float32), not in the parameter counts of Appendix E.

Measurements (Appendix E of the paper, in parameters): `params_downloaded`,
the non-zero trainable parameters the clients received; `params_uploaded`,
the non-zero trainable parameters of the models they trained (the paper's
w_k); `mask_bits_uploaded`, one bit per prunable parameter per client when
masks travel (local mode); `transmission_mbits`, the paper's transmission
cost of the round, (32 * (downloaded + uploaded) + mask bits) / 1e6. And in
bytes of the encodings of `compression.codecs` (the smallest lossless
non-zlib one per tensor): `bytes_uploaded`, the weights the client trained,
inside the global mask only (the server sent that mask, so positions outside
it are never sent); in local mode, its mask as positions inside the global
mask, then the values inside its mask. With `quantize_bits` and
`quantizer='sparse'` (ours), large tensors count as the deltas at the
positions sent, rounded stochastically (`codecs.tf_quantize`). With
`quantizer='tff'`, TFF's aggregator encodes the deltas and counts them
(`compression.aggregators.QuantizedMeanFactory`); the client counts only
its mask (local mode).
All are summed over the round's clients. What the clients receive, and its
bytes, is the distributor's (`compression.distributors`): with the sparse
quantizer the clients train from the dequantized broadcast.

Optionally the upload is pruned as in arXiv 2310.14693: the smallest
`message_prune_rate` of the trained weights are zeroed before sending. With
`message_prune_target='delta'` the aggregator prunes the update instead
(`compression.aggregators.SparseDeltaMeanFactory`), quantizes and counts it;
this client work then neither prunes, quantizes nor counts the upload.

A model with moving statistics (BatchNormalization) also sends how they
moved, `statistics = initial - final` (`learning.statistics`), dense, counted
in `bytes_uploaded`.
"""

import collections
import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import _tff_internals as tffi
from tff_sparsify.compression import codecs
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.core import schedules
from tff_sparsify.learning import configs
from tff_sparsify.learning import layout as layout_lib
from tff_sparsify.learning import pruning
from tff_sparsify.learning import statistics as statistics_lib



def _reduce_loop(loop_implementation):
  if loop_implementation == tff.learning.LoopImplementation.DATASET_REDUCE:
    return lambda fn, data, init: data.reduce(init(), fn)

  def iterate(fn, data, init):
    state = init()
    for batch in iter(data):
      state = fn(state, batch)
    return state
  return iterate


def _zero_all_if_any_non_finite(structure):
  """As TFF's `tensor_utils.zero_all_if_any_non_finite` (not public in 0.87)."""
  flat = tf.nest.flatten(structure)
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
  zeroed = [tf.where(finite, t, tf.zeros_like(t)) for t in flat]
  return tf.nest.pack_sequence_as(structure, zeroed), tf.logical_not(finite)


def build_train_step(model, optimizer, trainable, keep, proximal_strength: float = 0.0,
                     anchor=None, squares_of=None):
  """The local step, as a `dataset.reduce` function over (examples, opt state).

  Forward pass, gradient, `optimizer.next`, then each trainable variable is
  set to the update masked by `keep` (boolean tensors, None = not pruned).
  With `proximal_strength` mu > 0 (FedProx), the gradient of
  mu/2 ||w - w_t||^2, mu (w - w_t), is added, w_t being `anchor` (the model
  the client received). With `squares_of` (indices into `trainable`), the
  state has a third part, the squared gradients of those tensors summed over
  the steps (PruneFL's importance; the gradient is not masked, so pruned
  positions have theirs too).
  """
  def step(state, batch):
    if squares_of is not None:
      num_examples, optimizer_state, squares = state
    else:
      num_examples, optimizer_state = state
    with tf.GradientTape() as tape:
      output = model.forward_pass(batch, training=True)
    gradients = tape.gradient(output.loss, trainable)
    if proximal_strength > 0:
      gradients = [g + proximal_strength * (w - w_t)
                   for g, w, w_t in zip(gradients, trainable, anchor)]
    optimizer_state, updated = optimizer.next(
        optimizer_state, tuple(trainable), tuple(gradients))
    for variable, value, kept in zip(trainable, updated, keep):
      variable.assign(masks_lib.mask_tensor(value, kept))
    if output.num_examples is None:
      num_examples += tf.shape(output.predictions, out_type=tf.int64)[0]
    else:
      num_examples += tf.cast(output.num_examples, tf.int64)
    if squares_of is not None:
      squares = tuple(s + tf.square(gradients[i]) for s, i in zip(squares, squares_of))
      return num_examples, optimizer_state, squares
    return num_examples, optimizer_state
  return step


def _build_client_update(model_fn, optimizer, config: configs.FedSparsifyConfig,
                         loop_implementation, aggregate_statistics: bool = True):
  """The per-client `tf.function`, as TFF's model delta client update."""
  mode = config.mode
  prunefl = config.pruning_method == 'prunefl'
  sparsity_placement = config.sparsity_placement
  compression = config.compression
  # With message_prune_target='delta' the aggregator prunes, quantizes and
  # counts the upload (`compression.aggregators.SparseDeltaMeanFactory`).
  by_aggregator = compression.aggregator_encodes_upload  # TFF's quantizer too.
  message_prune_rate = (0.0 if compression.delta_aggregator
                        else compression.client_message_prune_rate)
  quantize_threshold = compression.quantize_threshold
  model = model_fn()
  layout = layout_lib.pruning_layout(model, config.sparsity_granularity)
  if not aggregate_statistics:
    layout = dataclasses.replace(layout, statistics=())
  # The weights are masked below after every step, so the wrappers' own
  # per-step work is redundant (and costs as much as the training itself).
  pruning.skip_wrapper_updates(tffi.keras_model_of(model))
  reduce_loop = _reduce_loop(loop_implementation)
  sparse_bits = 0 if compression.delta_aggregator else compression.sparse_bits

  def quantized(t):
    return sparse_bits and t.shape.num_elements() > quantize_threshold

  @tf.function
  def client_update(initial_weights, data, should_prune, sparsity):
    weights = tff.learning.models.ModelWeights.from_model(model)
    # The model as the client decoded it (the distributor encodes it).
    received = list(initial_weights.trainable)
    for variable, value in zip(weights.trainable, received):
      variable.assign(value)
    for variable, value in zip(weights.non_trainable, initial_weights.non_trainable):
      variable.assign(value)
    trainable = list(weights.trainable)
    keep = [None if m is None else tf.not_equal(m, 0)
            for m in layout.masks_by_trainable(initial_weights.non_trainable)]

    # What the wrappers would do before the first forward pass; a global
    # model from the server is already masked, one set by the user may not be.
    for variable, kept in zip(trainable, keep):
      variable.assign(masks_lib.mask_tensor(variable, kept))

    reduce_fn = build_train_step(model, optimizer, trainable, keep,
                                 config.proximal_strength, received,
                                 squares_of=layout.prunable if prunefl else None)

    def initial_state():
      specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
      state = (tf.zeros([], tf.int64), optimizer.initialize(specs))
      if prunefl:
        state += (tuple(tf.zeros_like(trainable[i]) for i in layout.prunable),)
      return state

    reduced = reduce_loop(reduce_fn, data, initial_state)
    num_examples = reduced[0]
    trained = [tf.identity(v) for v in trainable]
    # How the moving statistics (BatchNormalization) moved in the forward passes.
    statistics_delta = [a - b for a, b in zip(
        layout.statistics_list(initial_weights.non_trainable),
        layout.statistics_list(weights.non_trainable))]
    global_masks = layout.mask_list(initial_weights.non_trainable)
    if mode == 'local':
      def purge():
        new = layout.placed_masks(trained, sparsity, sparsity_placement)
        return [n * old for n, old in zip(new, global_masks)]
      local_masks = tf.cond(should_prune, purge, lambda: list(global_masks))
      for i, mask in zip(layout.prunable, local_masks):
        trained[i] = masks_lib.mask_tensor(trained[i], mask)
    if message_prune_rate > 0:
      # 2310.14693: the smallest weights of the upload, no persistent mask.
      trained = masks_lib.apply_masks(
          trained, masks_lib.magnitude_masks(trained, message_prune_rate))

    # What the client sends: the values at `sent`, and `sent` itself as a
    # mask message inside the global mask where the server cannot know it
    # (local masks, message pruning). The server knows the global mask it
    # broadcast, and everything outside `sent` is zero.
    local_keep = {i: tf.not_equal(m, 0) for i, m in zip(layout.prunable, local_masks)} if (
        mode == 'local') else {}
    delta = [a - b for a, b in zip(received, trained)]
    bytes_uploaded = []
    for i, (t, kept) in enumerate(zip(trained, keep)):
      if mode == 'local':
        sent = local_keep.get(i, kept)
      elif message_prune_rate > 0 and sparse_bits:
        sent = tf.not_equal(t, 0)
      else:
        sent = kept
      if sent is not kept:
        bytes_uploaded.append(codecs.tf_mask_size(
            sent if kept is None else tf.boolean_mask(sent, kept)))
      if quantized(t):
        # Stochastic rounding, seeded by what the client trained.
        sent = tf.ones_like(t, tf.bool) if sent is None else sent
        seed = tf.stack([tf.bitcast(tf.reduce_sum(t), tf.int32), tf.constant(i)])
        delta[i] = codecs.tf_quantize_at(delta[i], sent, sparse_bits, seed)
        bytes_uploaded.append(codecs.tf_quantized_values_size(
            tf.math.count_nonzero(sent, dtype=tf.int64), sparse_bits))
      elif not by_aggregator:  # The values at `sent` (with any zeros' positions).
        bytes_uploaded.append(codecs.tf_encoded_size(
            t if sent is None else tf.boolean_mask(t, sent)))
      # Else the aggregator encodes the whole delta and counts it
      # (`compression.aggregators`: TFF's quantizing mean, or ours over deltas).
    if prunefl:
      # PruneFL: the squared gradients go up at readjustment rounds only
      # (`should_prune`); zeros (not sent, not counted) at the others.
      importance = tuple(tf.where(should_prune, s, tf.zeros_like(s)) for s in reduced[2])
      bytes_uploaded.append(tf.where(
          should_prune, tf.add_n([codecs.tf_encoded_size(s) for s in importance]),
          tf.constant(0, tf.int64)))
    # The statistics go up dense and unquantized (`statistics.StatisticsMeanFactory`).
    bytes_uploaded.extend(codecs.tf_encoded_size(d) for d in statistics_delta)
    bytes_uploaded = (tf.add_n(bytes_uploaded) if bytes_uploaded
                      else tf.constant(0, tf.int64))

    (delta, statistics_delta), non_finite = _zero_all_if_any_non_finite(
        (tuple(delta), tuple(statistics_delta)))
    if non_finite:
      model.reset_metrics()
    client_weight = tf.where(
        non_finite, 0.0, tf.cast(num_examples, tf.float32))
    if mode == 'local':
      update = collections.OrderedDict(model_delta=delta, mask=tuple(local_masks))
      mask_bits = tf.constant(
          sum(int(np.prod(m.shape)) for m in global_masks), tf.int64)
    elif prunefl:
      # A client whose update is dropped sends no importance either.
      importance, _ = _zero_all_if_any_non_finite(importance)
      importance = tuple(tf.where(non_finite, tf.zeros_like(s), s) for s in importance)
      update = collections.OrderedDict(model_delta=delta, importance=importance)
      mask_bits = tf.constant(0, tf.int64)
    else:
      update = delta
      mask_bits = tf.constant(0, tf.int64)
    downloaded = masks_lib.num_nonzero(initial_weights.trainable)
    uploaded = masks_lib.num_nonzero(trained)
    communication = collections.OrderedDict(
        params_downloaded=downloaded, params_uploaded=uploaded,
        mask_bits_uploaded=mask_bits,
        transmission_mbits=tf.cast(32 * (downloaded + uploaded) + mask_bits, tf.float64) / 1e6,
        bytes_uploaded=bytes_uploaded)
    update = statistics_lib.with_statistics(update, statistics_delta)
    return (tff.learning.templates.ClientResult(update=update, update_weight=client_weight),
            model.report_local_unfinalized_metrics(), communication)

  return client_update


def build_fed_sparsify_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    config: configs.FedSparsifyConfig,
    *,
    metrics_aggregator: Optional[tff.learning.metrics.MetricsAggregatorType] = None,
    loop_implementation: tff.learning.LoopImplementation = tff.learning.LoopImplementation.DATASET_REDUCE,
    aggregate_statistics: bool = True,
) -> tff.learning.templates.ClientWorkProcess:
  """A `ClientWorkProcess` that trains under the global mask.

  Args:
    model_fn: no-arg callable returning `tff.learning.models.from_keras_model`
      of a Keras model wrapped by `tff_sparsify.learning.pruning.wrap_for_pruning`.
    optimizer: a `tff.learning.optimizers.Optimizer` for the clients.
    config: the algorithm's configuration. Used here: `schedule` (s_t, what
      clients prune to in local mode), `mode` ('global': clients keep the
      server's mask; 'local': they prune to s_t after training and send
      their masks), `sparsity_placement` (local mode) and `compression`:
      `client_message_prune_rate` (the smallest uploaded weights over all
      trainable tensors zeroed before sending, no persistent mask) and the
      quantization. `quantizer='tff'`: TFF's uniform quantization of the
      uploaded deltas, applied and counted by the aggregator
      (`compression.aggregators.QuantizedMeanFactory`); this client work
      then counts only its mask (local mode). 'sparse': this client work
      quantizes the non-zero values of the deltas it sends
      (`codecs.tf_quantize`), and counts them as sent (the broadcast is the
      distributor's).
    metrics_aggregator: as in TFF; default `tff.learning.metrics.sum_then_finalize`.
    loop_implementation: how clients iterate over their data.
    aggregate_statistics: send how the moving statistics moved
      (`learning.statistics`); False: not (TFF's behaviour).

  Returns:
    A `tff.learning.templates.ClientWorkProcess` whose state is the round
    number, with measurements `train` (the model's metrics) and
    `communication` (the round's counts of the module docstring, summed over
    its clients). The bytes of the broadcast are the distributor's
    (`compression.distributors`).
  """
  if not isinstance(optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(
        'client_optimizer_fn must be a tff.learning.optimizers.Optimizer, got '
        f'{type(optimizer).__name__}')
  schedule = schedules.FedSparsifySchedule(config.schedule)
  metrics_aggregator = metrics_aggregator or tff.learning.metrics.sum_then_finalize
  with tf.Graph().as_default():
    model = model_fn()
    metrics_aggregation_fn = metrics_aggregator(model.metric_finalizers())
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  weights_type = tff.learning.models.weights_type_from_model(model)

  @tff.tensorflow.computation
  def initial_state():
    return tf.constant(0, tf.int32)  # The round number.

  @tff.federated_computation
  def init_fn():
    return tff.federated_eval(initial_state, tff.SERVER)

  @tff.tensorflow.computation(np.int32)
  def schedule_fn(round_num):
    if config.pruning_method == 'prunefl':  # Readjustment rounds: importance goes up.
      return (schedules.readjusts(round_num, config.readjust_every),
              tf.constant(config.schedule.final_sparsity, tf.float64))
    return schedule(round_num)

  @tff.tensorflow.computation(weights_type, data_type, np.bool_, np.float64)
  def client_update_computation(initial_weights, dataset, should_prune, sparsity):
    client_update = _build_client_update(model_fn, optimizer, config, loop_implementation,
                                         aggregate_statistics)
    return client_update(initial_weights, dataset, should_prune, sparsity)

  @tff.tensorflow.computation(np.int32)
  def increment(round_num):
    return round_num + 1

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    round_num = tff.federated_map(increment, state)
    should_prune, sparsity = tff.federated_map(schedule_fn, round_num)
    client_result, model_outputs, communication = tff.federated_map(
        client_update_computation,
        (weights, client_data, tff.federated_broadcast(should_prune),
         tff.federated_broadcast(sparsity)))
    measurements = tff.federated_zip(collections.OrderedDict(
        train=metrics_aggregation_fn(model_outputs),
        communication=tff.federated_sum(communication)))
    return tff.templates.MeasuredProcessOutput(round_num, client_result, measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
