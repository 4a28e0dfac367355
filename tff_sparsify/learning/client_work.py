"""The generic client work: Tune under the global mask, and what the algorithm's rules add.

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
reaches a kept one.

The algorithm's rules (`learning.algorithms.base.Rules`) add the rest: the
gradient a step applies (FedProx), masks the client prunes its trained model
to before sending (FedSparsify-Local: `Rules.client_masks`; the client then
sends its values at those positions only), and a message beside the delta
(`Rules.message`: the update is `OrderedDict(model_delta=..., <message>=...)`,
e.g. Local's mask, PruneFL's squared gradients), whose bytes the rules count.

Measurements (Appendix E of the paper, in parameters): `params_downloaded`,
the non-zero trainable parameters the clients received; `params_uploaded`,
the non-zero trainable parameters of the models they trained (the paper's
w_k); `mask_bits_uploaded`, one bit per prunable parameter per client when
clients prune (`Rules.client_masks`); `transmission_mbits`, the paper's transmission
cost of the round, (32 * (downloaded + uploaded) + mask bits) / 1e6. And in
bytes of the one encoder, `compression.wire` (the smallest lossless
non-zlib one per tensor): `bytes_uploaded`, the weights the client trained,
inside the global mask only (the server sent that mask, so positions outside
it are never sent); where the client pruned, its mask as positions inside
the global mask, then the values inside its mask; and its message's bytes. With `quantize_bits` and
`quantizer='sparse'` (ours), large tensors count as the deltas at the
positions sent, rounded stochastically (`codecs.tf_quantize`). With
`quantizer='tff'`, TFF's aggregator encodes the deltas and counts them
(`compression.aggregators.QuantizedMeanFactory`); the client counts only
its mask (where it pruned) and its message.
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
from tff_sparsify.compression import wire
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.learning import configs
from tff_sparsify.learning import dp_aggregation
from tff_sparsify.learning import pruning_layout as layout_lib
from tff_sparsify.learning.algorithms import base
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


def zero_all_if_any_non_finite(structure):
  """As TFF's `tensor_utils.zero_all_if_any_non_finite` (not public in 0.87)."""
  flat = tf.nest.flatten(structure)
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
  zeroed = [tf.where(finite, t, tf.zeros_like(t)) for t in flat]
  return tf.nest.pack_sequence_as(structure, zeroed), tf.logical_not(finite)


def build_train_step(model, optimizer, trainable, keep, rules=None, anchor=None,
                     squares_of=None):
  """The local step, as a `dataset.reduce` function over (examples, opt state).

  Forward pass, gradient (`rules.local_gradients` of it, `anchor` being the
  model the client received), `optimizer.next`, then each trainable
  variable is set to the update masked by `keep` (boolean tensors, None =
  not pruned). With `squares_of` (indices into `trainable`), the state has
  a third part, the squared gradients of those tensors summed over the
  steps (PruneFL's importance; the gradient is not masked, so pruned
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
    if rules is not None:
      gradients = rules.local_gradients(gradients, trainable, anchor)
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


@dataclasses.dataclass(frozen=True)
class _UploadEncoding:
  """How a client's trained tensors go up (from `CompressionConfig`)."""
  message_prune_rate: float  # 2310.14693 on the trained model (0: none).
  sparse_bits: int           # This client work quantizes (0: not).
  quantize_threshold: int
  by_aggregator: bool        # The aggregator encodes and counts the delta.

  @classmethod
  def of(cls, compression, secure_aggregation: bool = False):
    # With message_prune_target='delta' the aggregator prunes, quantizes and
    # counts the upload (`compression.aggregators.SparseDeltaMeanFactory`);
    # with secure aggregation, the secure sum (`learning.secure_aggregation`).
    return cls(
        message_prune_rate=(0.0 if compression.delta_aggregator
                            else compression.client_message_prune_rate),
        sparse_bits=0 if compression.delta_aggregator else compression.sparse_bits,
        quantize_threshold=compression.quantize_threshold,
        by_aggregator=compression.aggregator_encodes_upload or secure_aggregation)

  def encode(self, trained, delta, keep, client_keep):
    """(delta as sent, bytes of the trained tensors as sent).

    `keep`: the global mask of each trainable tensor (None: not pruned);
    `client_keep`: {trainable index: the client's own mask} where it pruned,
    else None.

    The values at `sent` go up, and `sent` itself as a mask message inside
    the global mask where the server cannot know it (the client's own
    masks, message pruning): the server knows the global mask it
    broadcast, and everything outside `sent` is zero.
    """
    delta = list(delta)
    sizes = []
    for i, (t, kept) in enumerate(zip(trained, keep)):
      if client_keep is not None:  # The client's own masks (its other tensors whole).
        sent = client_keep.get(i, kept)
      elif self.message_prune_rate > 0 and self.sparse_bits:
        sent = tf.not_equal(t, 0)
      else:
        sent = kept
      positions = dict(sent=sent, send_positions=sent is not kept, within=kept)
      bits = wire.quantized_bits(t, self.sparse_bits, self.quantize_threshold)
      if bits:  # The delta's levels, stochastic rounding seeded by what the client trained.
        seed = tf.stack([tf.bitcast(tf.reduce_sum(t), tf.int32), tf.constant(i)])
        delta[i], size = wire.encode_tensor(delta[i], bits=bits, seed=seed, **positions)
      else:  # The trained values at `sent`, unless the aggregator encodes and counts
        # the delta (`compression.aggregators`: TFF's quantizing mean, or top-k).
        _, size = wire.encode_tensor(t, count_values=not self.by_aggregator, **positions)
      sizes.append(size)
    return delta, sizes


def _communication(initial_trainable, trained, mask_bits, bytes_uploaded):
  downloaded = masks_lib.num_nonzero(initial_trainable)
  uploaded = masks_lib.num_nonzero(trained)
  return collections.OrderedDict(
      params_downloaded=downloaded, params_uploaded=uploaded,
      mask_bits_uploaded=mask_bits,
      transmission_mbits=tf.cast(32 * (downloaded + uploaded) + mask_bits, tf.float64) / 1e6,
      bytes_uploaded=bytes_uploaded)


def _known_mask_bytes(keep, trained, privacy):
  """Bytes of the secure-sum message of the values inside the global mask only.

  The server broadcast the mask, so the clients could secure-sum the kept
  coordinates alone (and the weight, in the weighted mean without DP).
  Counted, not sent: the simulation sums every coordinate
  (`learning.secure_aggregation`).
  """
  kept = tf.add_n([tf.constant(int(np.prod(t.shape)), tf.int64) if k is None
                   else tf.reduce_sum(tf.cast(k, tf.int64)) for t, k in zip(trained, keep)])
  weight = 0 if privacy.enabled else wire.secure_sum_bytes(1, privacy.clients_per_round)
  return wire.secure_sum_bytes(kept, privacy.clients_per_round) + weight


def _train(model, optimizer, rules, layout, initial_weights, data, reduce_loop):
  """Local training from `initial_weights`: (reduced state, the model's weights, keep)."""
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

  squares_of = layout.prunable if rules.squares_gradients else None
  reduce_fn = build_train_step(model, optimizer, trainable, keep, rules, received,
                               squares_of=squares_of)

  def initial_state():
    specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
    state = (tf.zeros([], tf.int64), optimizer.initialize(specs))
    if squares_of is not None:
      state += (tuple(tf.zeros_like(trainable[i]) for i in squares_of),)
    return state

  return reduce_loop(reduce_fn, data, initial_state), weights, keep


def _upload(rules, encoding: _UploadEncoding, client: base.ClientRound, keep, received):
  """What the client sends besides its statistics, after its rules and message pruning.

  Returns (the trained tensors as sent, the delta as sent, the bytes of
  each part, the rules' message or None, the client's own masks or None).
  """
  trained = list(client.trained)
  layout = client.layout
  client_masks = rules.client_masks(client)
  if client_masks is not None:
    for i, mask in zip(layout.prunable, client_masks):
      trained[i] = masks_lib.mask_tensor(trained[i], mask)
  if encoding.message_prune_rate > 0:
    # 2310.14693: the smallest weights of the upload, no persistent mask.
    trained = masks_lib.apply_masks(
        trained, masks_lib.magnitude_masks(trained, encoding.message_prune_rate))
  client_keep = None if client_masks is None else {
      i: tf.not_equal(m, 0) for i, m in zip(layout.prunable, client_masks)}
  delta, sizes = encoding.encode(
      trained, [a - b for a, b in zip(received, trained)], keep, client_keep)
  message = None
  if rules.message:
    message, message_size = rules.client_message(client, client_masks)
    sizes.append(message_size)
  return trained, delta, sizes, message, client_masks


def _build_client_update(model_fn, optimizer, config: configs.FedSparsifyConfig, rules,
                         loop_implementation, aggregate_statistics: bool = True):
  """The per-client `tf.function`, as TFF's model delta client update."""
  encoding = _UploadEncoding.of(
      config.compression, config.privacy.secure_aggregation or config.privacy.distributed)
  model = model_fn()
  layout = layout_lib.pruning_layout(model, config.sparsity_granularity)
  if not aggregate_statistics:
    layout = dataclasses.replace(layout, statistics=())
  # The weights are masked below after every step, so the wrappers' own
  # per-step work is redundant (and costs as much as the training itself).
  pruning.skip_wrapper_updates(tffi.keras_model_of(model))
  reduce_loop = _reduce_loop(loop_implementation)

  @tf.function
  def client_update(initial_weights, data, should_prune, sparsity):
    reduced, weights, keep = _train(model, optimizer, rules, layout, initial_weights, data,
                                    reduce_loop)
    num_examples = reduced[0]
    trained = [tf.identity(v) for v in weights.trainable]
    # How the moving statistics (BatchNormalization) moved in the forward passes.
    statistics_delta = [a - b for a, b in zip(
        layout.statistics_list(initial_weights.non_trainable),
        layout.statistics_list(weights.non_trainable))]
    client = base.ClientRound(
        layout=layout, trained=trained, global_masks=layout.mask_list(
            initial_weights.non_trainable),
        squares=reduced[2] if rules.squares_gradients else None,
        should_prune=should_prune, sparsity=sparsity)
    trained, delta, sizes, message, client_masks = _upload(
        rules, encoding, client, keep, initial_weights.trainable)
    # The statistics go up dense and unquantized (`statistics.StatisticsMeanFactory`).
    sizes.append(wire.lossless_bytes(statistics_delta))
    if config.privacy.distributed:  # The whole update, rotated, as 20-bit integers.
      sizes.append(tf.constant(dp_aggregation.distributed_bytes(
          sum(int(np.prod(t.shape)) for t in trained)), tf.int64))
    bytes_uploaded = tf.add_n(sizes) if sizes else tf.constant(0, tf.int64)

    (delta, statistics_delta), non_finite = zero_all_if_any_non_finite(
        (tuple(delta), tuple(statistics_delta)))
    if non_finite:
      model.reset_metrics()
    client_weight = tf.where(non_finite, 0.0, tf.cast(num_examples, tf.float32))
    update = delta
    if rules.message:
      update = collections.OrderedDict(
          [('model_delta', delta), (rules.message, rules.dropped_message(message, non_finite))])
    # Appendix E: one bit per prunable parameter where clients prune.
    mask_bits = tf.constant(0 if client_masks is None else sum(
        int(np.prod(m.shape)) for m in client.global_masks), tf.int64)
    update = statistics_lib.with_statistics(update, statistics_delta)
    communication = _communication(initial_weights.trainable, trained, mask_bits, bytes_uploaded)
    if config.privacy.secure_aggregation:
      communication['secure_sum_bytes_known_mask'] = _known_mask_bytes(keep, trained,
                                                                        config.privacy)
    return (tff.learning.templates.ClientResult(update=update, update_weight=client_weight),
            model.report_local_unfinalized_metrics(), communication)

  return client_update


def build_masked_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    config: configs.FedSparsifyConfig,
    rules: base.Rules,
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
    config: the algorithm's configuration. Used here: `sparsity_granularity`
      and `compression`:
      `client_message_prune_rate` (the smallest uploaded weights over all
      trainable tensors zeroed before sending, no persistent mask) and the
      quantization. `quantizer='tff'`: TFF's uniform quantization of the
      uploaded deltas, applied and counted by the aggregator
      (`compression.aggregators.QuantizedMeanFactory`); this client work
      then counts only its mask and message. 'sparse': this client work
      quantizes the non-zero values of the deltas it sends
      (`codecs.tf_quantize`), and counts them as sent (the broadcast is the
      distributor's).
    rules: the algorithm's `learning.algorithms.base.Rules` (its schedule,
      what clients do besides training, what they send).
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
    return rules.schedule(round_num)

  @tff.tensorflow.computation(weights_type, data_type, np.bool_, np.float64)
  def client_update_computation(initial_weights, dataset, should_prune, sparsity):
    client_update = _build_client_update(model_fn, optimizer, config, rules,
                                         loop_implementation, aggregate_statistics)
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
