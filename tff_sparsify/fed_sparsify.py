"""FedSparsify ("Purge-Merge-Tune", Stripelis et al.) as a TFF learning process.

Built as TFF builds FedAvg (`tff.learning.algorithms.build_weighted_fed_avg`):
`compose_learning_process(initial_weights, broadcast, client_work, aggregator,
finalizer)`, each piece replaceable:

- client work (`client_work.py`): Tune, local SGD under the global mask; in
  local mode also Purge at the client to s_t and send the mask;
- aggregator (`aggregators.py`): weighted mean of the deltas (any weighted TFF
  aggregator) and, in local mode, Merge of the masks by majority vote (Eq. 2);
- finalizer (`finalizers.py`): the server optimizer step, then in global mode
  Purge at the server to s_t (Eq. 1 schedule); masks never regrow.

The model is a Keras model wrapped by tfmot's `prune_low_magnitude`
(`tff_sparsify.pruning.wrap_for_pruning`): the masks are the wrappers' mask
variables, so `process.get_model_weights(state).assign_weights_to(keras_model)`
followed by `tfmot.sparsity.keras.strip_pruning` gives the plain sparse model.
"""

from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import aggregators
from tff_sparsify import client_work as client_work_lib
from tff_sparsify import comm
from tff_sparsify import finalizers
from tff_sparsify import schedules


def build_initial_weights_fn(model_fn, layout: client_work_lib.PruningLayout):
  """Initial `ModelWeights` with every wrapper's `pruning_step` at 1.

  tfmot initialises the step to -1 and asserts >= 1 in training; the server
  owns it (the finalizer sets it to the next round number).
  """

  @tff.tensorflow.computation
  def initial_weights_fn():
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)
    non_trainable = [tf.identity(v) for v in weights.non_trainable]
    for i in layout.steps:
      non_trainable[i] = tf.ones([], tf.int64)
    return tff.learning.models.ModelWeights(
        tuple(tf.identity(v) for v in weights.trainable), tuple(non_trainable))

  return initial_weights_fn


def build_weighted_fed_sparsify(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    *,
    schedule: schedules.FedSparsifySchedule,
    mode: str = 'global',
    mask_aggregation: str = 'majority_vote',
    pruning_method: str = 'magnitude',
    seed: int = 0,
    client_message_prune_rate: float = 0.0,
    server_message_prune_rate: float = 0.0,
    quantize_bits: int = 0,
    quantizer: str = 'tff',
    quantize_threshold: int = comm.QUANTIZATION_THRESHOLD,
    sparsity_placement: str = 'global',
    model_distributor: Optional[tff.learning.templates.DistributionProcess] = None,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
    metrics_aggregator: Optional[tff.learning.metrics.MetricsAggregatorType] = None,
    loop_implementation: tff.learning.LoopImplementation = tff.learning.LoopImplementation.DATASET_REDUCE,
) -> tff.learning.templates.LearningProcess:
  """Builds FedSparsify-Global or -Local, weighted by client example counts.

  Example:

  ```python
  import tensorflow_federated as tff
  from tff_sparsify import algorithms, fed_sparsify, models, pruning, schedules

  def model_fn():
    keras_model = pruning.wrap_for_pruning(models.fashion_mnist_fc(seed=1990))
    return tff.learning.models.from_keras_model(
        keras_model, loss=algorithms.loss_fn(),
        input_spec=algorithms.input_spec('fashion_mnist'),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

  process = fed_sparsify.build_weighted_fed_sparsify(
      model_fn, tff.learning.optimizers.build_sgdm(0.02),
      schedule=schedules.FedSparsifySchedule(final_sparsity=0.9, total_rounds=200),
      mode='global')
  state = process.initialize()
  for round_num in range(1, 201):
    output = process.next(state, client_datasets)
    state = output.state
    print(output.metrics['finalizer']['sparsity'])
  ```

  With `schedule.final_sparsity == 0` nothing is pruned and the process
  equals `tff.learning.algorithms.build_weighted_fed_avg` (tested to 1e-6).
  Baselines: `pruning_method='random'` is the paper's progressive Random
  pruning; `schedules.FedSparsifySchedule.one_shot(...)` prunes once.

  Args:
    model_fn: no-arg callable returning `tff.learning.models.from_keras_model`
      of a Keras model whose prunable layers are wrapped by tfmot's
      `prune_low_magnitude` (`tff_sparsify.pruning.wrap_for_pruning`).
    client_optimizer_fn: the clients' `tff.learning.optimizers.Optimizer`.
    server_optimizer_fn: the server's; default SGD with learning rate 1.0.
    schedule: `schedules.FedSparsifySchedule` giving s_t (Eq. 1).
    mode: 'global' (prune at the server after aggregation) or 'local'
      (clients prune, the server merges their masks).
    mask_aggregation: local mode: 'majority_vote' (Eq. 2) or 'mean' (keep a
      weight that any client kept, the paper's plain-average variant).
    pruning_method: global mode: 'magnitude' or 'random'.
    seed: seed of random pruning.
    client_message_prune_rate: message compression of arXiv 2310.14693 at
      the clients: the fraction of the uploaded weights, smallest by
      magnitude, zeroed before sending (no persistent mask), in [0, 1).
    server_message_prune_rate: the same for the server's broadcast.
    quantize_bits: if not 0, the bits per value of the quantization of
      tensors over `quantize_threshold` elements, by `quantizer`.
    quantizer: 'tff': the model deltas are aggregated by TFF's uniform
      quantization (`aggregators.quantized_mean_factory`; every element,
      zeros included; uploads only); not with `model_aggregator`. 'sparse':
      the non-zero values only, of the broadcast and of the uploads
      (`client_work.build_fed_sparsify_client_work`).
    quantize_threshold: tensors with more elements than this are quantized.
    sparsity_placement: 'global' (one magnitude ranking over all prunable
      weights, the paper's), 'uniform' (each prunable tensor pruned to s_t
      by its own ranking: every layer equally sparse, which sparse CPU
      engines run faster) or 'compute' (per-layer sparsities that minimise
      the multiply-adds at total s_t, `masks.compute_layer_sparsities`);
      magnitude pruning only.
    model_distributor: default `tff.learning.templates.build_broadcast_process`.
    model_aggregator: weighted aggregation of the model deltas; default
      `tff.aggregators.MeanFactory()`. In local mode it is wrapped by
      `aggregators.MaskMergingFactory`.
    metrics_aggregator: as in TFF; default `tff.learning.metrics.sum_then_finalize`.
    loop_implementation: how clients iterate over their data.

  Returns:
    A `tff.learning.templates.LearningProcess`. Its metrics hold
    `client_work/communication/*` (parameters exchanged, Appendix E, and
    bytes of the encodings, per round), `client_work/cumulative/*` (bytes
    and transmission summed over the rounds so far),
    `aggregator/mask_agreement` (local mode) and `finalizer/*` (sparsity,
    target s_t, non-zero parameters, see `finalizers.py`).
  """
  if not isinstance(schedule, schedules.FedSparsifySchedule):
    raise TypeError(
        f'schedule must be a FedSparsifySchedule, got {type(schedule).__name__}')
  finalizers.check_pruning_method(mode, pruning_method)
  client_work_lib.check_message_prune_rate('client_message_prune_rate', client_message_prune_rate)
  client_work_lib.check_message_prune_rate('server_message_prune_rate', server_message_prune_rate)
  aggregators.check_mask_aggregation(mask_aggregation)
  comm.check_quantize_bits(quantize_bits)
  comm.check_quantizer(quantizer)
  comm.check_quantize_threshold(quantize_threshold)
  if quantize_bits and quantizer == 'tff':
    if model_aggregator is not None:
      raise ValueError(
          'quantize_bits builds the model aggregator; pass quantize_bits=0 '
          f'with a model_aggregator, got quantize_bits={quantize_bits}')
    model_aggregator = aggregators.quantized_mean_factory(quantize_bits, quantize_threshold)
  model_aggregator = aggregators.weighted_factory_or_mean(model_aggregator)
  if server_optimizer_fn is None:
    server_optimizer_fn = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  layout = client_work_lib.layout_from_model_fn(model_fn)
  initial_weights_fn = build_initial_weights_fn(model_fn, layout)
  model_weights_type = initial_weights_fn.type_signature.result
  if model_distributor is None:
    model_distributor = tff.learning.templates.build_broadcast_process(model_weights_type)

  client_work = client_work_lib.build_fed_sparsify_client_work(
      model_fn, client_optimizer_fn, schedule, mode=mode,
      message_prune_rate=client_message_prune_rate, quantize_bits=quantize_bits,
      quantizer=quantizer, quantize_threshold=quantize_threshold,
      sparsity_placement=sparsity_placement,
      metrics_aggregator=metrics_aggregator, loop_implementation=loop_implementation)
  update_type = client_work.next.type_signature.result.result.member.update
  if mode == 'local':
    model_aggregator = aggregators.MaskMergingFactory(
        mask_aggregation, model_delta_factory=model_aggregator)
  aggregator = model_aggregator.create(update_type, tff.TensorType(np.float32))
  finalizer = finalizers.build_fed_sparsify_finalizer(
      server_optimizer_fn, model_weights_type, layout, schedule,
      mode=mode, pruning_method=pruning_method, seed=seed,
      message_prune_rate=server_message_prune_rate,
      sparsity_placement=sparsity_placement)
  return tff.learning.templates.compose_learning_process(
      initial_weights_fn, model_distributor, client_work, aggregator, finalizer)
