"""Federated training under masks ("Purge-Merge-Tune", Stripelis et al.) as a TFF process.

Built as TFF builds FedAvg (`tff.learning.algorithms.build_weighted_fed_avg`):
`compose_learning_process(initial_weights, broadcast, client_work, aggregator,
finalizer)`, each piece replaceable, each generic over the algorithm's rules
(`learning.algorithms.base.Rules`; one module per algorithm in
`learning.algorithms`, which calls this builder with its rules):

- client work (`client_work.py`): Tune, local SGD under the global mask, and
  what the rules add (FedSparsify-Local: Purge at the client and send the
  mask; PruneFL: send squared gradients; FedProx: the proximal term);
- aggregator (`message_aggregation.py`): weighted mean of the deltas (any weighted TFF
  aggregator) and the rules' merge of the messages (Local: majority vote, Eq. 2);
- finalizer (`finalizers.py`): the server optimizer step, then the rules' new
  masks (Global: Purge at the server to s_t of Eq. 1; masks never regrow).

The model is a Keras model wrapped by tfmot's `prune_low_magnitude`
(`tff_sparsify.learning.pruning.wrap_for_pruning`): the masks are the wrappers' mask
variables, so `process.get_model_weights(state).assign_weights_to(keras_model)`
followed by `tfmot.sparsity.keras.strip_pruning` gives the plain sparse model.
"""

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import validation
from tff_sparsify.compression import aggregators as compression_aggregators
from tff_sparsify.compression import distributors
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.learning import message_aggregation
from tff_sparsify.learning import client_work as client_work_lib
from tff_sparsify.learning import configs
from tff_sparsify.learning import dp_aggregation
from tff_sparsify.learning import finalizers
from tff_sparsify.learning import pruning_layout as layout_lib
from tff_sparsify.learning import statistics as statistics_lib
from tff_sparsify.learning.algorithms import base


def build_initial_weights_fn(model_fn, layout: layout_lib.PruningLayout, initial_masks=None):
  """Initial `ModelWeights` with every wrapper's `pruning_step` at 1.

  tfmot initialises the step to -1 and asserts >= 1 in training; the server
  owns it (the finalizer sets it to the next round number). `initial_masks`
  (one array per prunable weight, or None: all ones) become the wrappers'
  masks, and the kernels are masked by them (pruning at initialization).
  """
  if initial_masks is not None:
    initial_masks = [np.asarray(m, np.float32) for m in initial_masks]

  @tff.tensorflow.computation
  def initial_weights_fn():
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)
    trainable = [tf.identity(v) for v in weights.trainable]
    non_trainable = [tf.identity(v) for v in weights.non_trainable]
    for i in layout.steps:
      non_trainable[i] = tf.ones([], tf.int64)
    if initial_masks is not None:
      for t, n, mask in zip(layout.prunable, layout.masks, initial_masks):
        non_trainable[n] = tf.constant(mask)
        trainable[t] = masks_lib.mask_tensor(trainable[t], non_trainable[n])
    return tff.learning.models.ModelWeights(tuple(trainable), tuple(non_trainable))

  return initial_weights_fn


def client_and_server_optimizers(config) -> tuple[tff.learning.optimizers.Optimizer,
                                                  tff.learning.optimizers.Optimizer]:
  """SGD at the clients (with `client_momentum` if not 0) and at the server."""
  client = tff.learning.optimizers.build_sgdm(
      config.client_learning_rate, momentum=config.client_momentum or None)
  return client, tff.learning.optimizers.build_sgdm(config.server_learning_rate)


def build_weighted_fed_sparsify(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    config: configs.FedSparsifyConfig,
    rules: base.Rules,
    *,
    client_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    model_distributor: Optional[tff.learning.templates.DistributionProcess] = None,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
    metrics_aggregator: Optional[tff.learning.metrics.MetricsAggregatorType] = None,
    loop_implementation: tff.learning.LoopImplementation = tff.learning.LoopImplementation.DATASET_REDUCE,
    initial_masks: Optional[Sequence[np.ndarray]] = None,
    aggregate_statistics: bool = True,
) -> tff.learning.templates.LearningProcess:
  """Builds training under masks with `rules`, weighted by client example counts.

  The algorithms call it with their rules (`learning.algorithms`); users
  build a process through the registry:

  ```python
  import tensorflow_federated as tff
  from tff_sparsify.learning import configs, models, registry

  model_fn = models.build_model_fn('fashion_mnist', seed=1990, prunable=True)
  config = configs.FedSparsifyConfig(
      client_learning_rate=0.02,
      schedule=configs.ScheduleConfig(final_sparsity=0.9, total_rounds=200),
      mode='global')
  process = registry.build_process(model_fn, config)  # FedSparsify-Global's rules.
  state = process.initialize()
  for round_num in range(1, 201):
    output = process.next(state, client_datasets)
    state = output.state
    print(output.metrics['finalizer']['sparsity'])
  ```

  With `schedule.final_sparsity == 0` nothing is pruned and the process
  equals `tff.learning.algorithms.build_weighted_fed_avg` (tested to 1e-6).

  Args:
    model_fn: no-arg callable returning `tff.learning.models.from_keras_model`
      of a Keras model whose prunable layers are wrapped by tfmot's
      `prune_low_magnitude` (`tff_sparsify.learning.pruning.wrap_for_pruning`);
      unwrapped only if `config` never prunes (S_T = 0). Its moving
      statistics (BatchNormalization) are aggregated (`learning.statistics`).
    config: the validated configuration (`configs.FedSparsifyConfig`).
    rules: the algorithm's `learning.algorithms.base.Rules`, made from `config`.
    client_optimizer_fn: the clients' `tff.learning.optimizers.Optimizer`;
      default SGD at `config.client_learning_rate` and `client_momentum`.
    server_optimizer_fn: the server's; default SGD at `config.server_learning_rate`.
    model_distributor: default `distributors.build_encoded_broadcast_process`
      (TFF's broadcast, measuring `bytes_downloaded`; with the sparse
      quantizer, it quantizes the broadcast).
    model_aggregator: weighted aggregation of the model deltas; default
      `tff.aggregators.MeanFactory()`, or TFF's quantizing mean with
      `quantize_bits` and `quantizer='tff'` (not both). Where the rules send
      a message it is wrapped by `message_aggregation.MessageFactory`; with moving statistics,
      by `statistics.StatisticsMeanFactory`.
    metrics_aggregator: as in TFF; default `tff.learning.metrics.sum_then_finalize`.
    loop_implementation: how clients iterate over their data.
    initial_masks: with `pruning_method='snip'|'grasp'` (required there, and
      only there), the fixed masks of the prunable weights
      (`saliency.initial_masks`), which the initial weights carry.
    aggregate_statistics: aggregate the model's moving statistics
      (BatchNormalization, `learning.statistics`); False keeps the server's,
      as TFF's own processes do (they never change).

  Returns:
    A `tff.learning.templates.LearningProcess`. Its metrics hold
    `distributor/bytes_downloaded`, `client_work/communication/*`
    (parameters exchanged, Appendix E, and bytes uploaded, per round),
    the rules' merge measurements (`aggregator/mask_agreement` of Local) and `finalizer/*` (sparsity,
    target s_t, non-zero parameters, see `finalizers.py`). The training loop
    (`simulation.training`) adds the totals over the rounds so far.
  """
  if not isinstance(config, configs.FedSparsifyConfig):
    raise TypeError(f'config must be a FedSparsifyConfig, got {type(config).__name__}')
  base.check_rules(rules, config)
  model_aggregator = _model_aggregator(config, model_aggregator)
  default_client, default_server = client_and_server_optimizers(config)
  client_optimizer_fn = client_optimizer_fn or default_client
  server_optimizer_fn = server_optimizer_fn or default_server
  layout = _checked_layout(model_fn, config, aggregate_statistics, initial_masks)
  initial_weights_fn = build_initial_weights_fn(model_fn, layout, initial_masks)
  model_weights_type = initial_weights_fn.type_signature.result
  if model_distributor is None:
    model_distributor = distributors.build_encoded_broadcast_process(
        model_weights_type, config.compression, layout.statistics)

  client_work = client_work_lib.build_masked_client_work(
      model_fn, client_optimizer_fn, config, rules,
      metrics_aggregator=metrics_aggregator, loop_implementation=loop_implementation,
      aggregate_statistics=aggregate_statistics)
  update_type = client_work.next.type_signature.result.result.member.update
  if rules.message:
    model_aggregator = message_aggregation.MessageFactory(
        rules, model_delta_factory=model_aggregator)
  if layout.statistics:
    model_aggregator = statistics_lib.StatisticsMeanFactory(model_aggregator)
  aggregator = model_aggregator.create(update_type, tff.TensorType(np.float32))
  finalizer = finalizers.build_masked_finalizer(
      server_optimizer_fn, model_weights_type, layout, config, rules)
  return tff.learning.templates.compose_learning_process(
      initial_weights_fn, model_distributor, client_work, aggregator, finalizer)


def _model_aggregator(config, model_aggregator):
  """The deltas' weighted aggregator: TFF's quantizing mean or top-k where compression says,
  the clipped and noised mean with differential privacy (`dp_aggregation`)."""
  compression = config.compression
  if config.privacy.active:
    if model_aggregator is not None:
      raise ValueError(f'privacy.{config.privacy.flag[0]} builds the model aggregator (clipping, '
                       'noise, secure sum); pass neither with a model_aggregator')
    model_aggregator = dp_aggregation.model_aggregator(config.privacy)
  elif compression.tff_bits:
    if model_aggregator is not None:
      raise ValueError(
          'quantize_bits builds the model aggregator; pass quantize_bits=0 '
          f'with a model_aggregator, got quantize_bits={compression.quantize_bits}')
    model_aggregator = compression_aggregators.QuantizedMeanFactory(
        compression.quantize_bits, compression.quantize_threshold)
  elif compression.delta_aggregator:
    if model_aggregator is not None:
      raise ValueError("message_prune_target='delta' builds the model aggregator; pass "
                       'message_prune_target=\'model\' with a model_aggregator')
    model_aggregator = compression_aggregators.SparseDeltaMeanFactory(
        compression.client_message_prune_rate, compression.sparse_bits,
        compression.quantize_threshold)
  return message_aggregation.weighted_factory_or_mean(model_aggregator)


def _checked_layout(model_fn, config, aggregate_statistics: bool, initial_masks):
  """The model's pruning layout, checked against the configuration and `initial_masks`."""
  layout = layout_lib.layout_from_model_fn(model_fn, config.sparsity_granularity)
  if not aggregate_statistics:
    layout = dataclasses.replace(layout, statistics=())
  if layout.statistics and config.privacy.active:
    raise validation.ConfigError(
        *config.privacy.flag,
        'is not available for a model with moving statistics (BatchNormalization): the '
        "clients' statistics are averaged outside the noise and the secure sum; "
        'LayerNormalization has none')
  if config.prunes:
    layout.check_pruning()
  layout.check_placement(config.sparsity_placement)
  layout.check_granularity()
  at_init = config.pruning_method in configs.AT_INITIALIZATION
  if at_init != (initial_masks is not None):
    raise ValueError(
        f'initial_masks must be given with pruning_method in {configs.AT_INITIALIZATION} '
        f'and only then; got pruning_method={config.pruning_method!r} and initial_masks '
        f'{"given" if initial_masks is not None else "None"}')
  if at_init and len(initial_masks) != len(layout.prunable):
    raise ValueError(f'initial_masks must hold {len(layout.prunable)} masks (one per '
                     f'prunable weight), got {len(initial_masks)}')
  return layout
