"""The algorithms of the paper by name, for binaries and benchmarks.

Stripelis et al., Section 4. No-pruning baselines from `tff.learning`: FedAvg
with vanilla SGD (McMahan et al. 2017), FedAvg with momentum SGD at the
clients ("MFL", Liu et al. 2020; momentum 0.75 in the paper's Appendix C) and
FedProx (Li et al. 2020, mu = 0.001). Pruning ones from `fed_sparsify`:
FedSparsify-Global and -Local, progressive random pruning (the paper's
Random) and one-shot pruning (S_0 = S_T at t_0).
"""

import collections
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import comm
from tff_sparsify import config as config_lib
from tff_sparsify import fed_sparsify
from tff_sparsify import models
from tff_sparsify import pruning
from tff_sparsify import schedules

BASELINES = config_lib.BASELINES
SPARSIFYING = config_lib.SPARSIFYING
ALGORITHMS = config_lib.ALGORITHMS
MFL_DEFAULT_MOMENTUM = config_lib.MFL_DEFAULT_MOMENTUM
FEDPROX_DEFAULT_STRENGTH = config_lib.FEDPROX_DEFAULT_STRENGTH


def input_spec(dataset: str) -> collections.OrderedDict:
  """The batched element spec that the client datasets produce."""
  if dataset not in models.INPUT_SHAPES:
    raise ValueError(
        f'dataset must be one of {tuple(models.INPUT_SHAPES)}, got {dataset!r}'
    )
  return collections.OrderedDict(
      x=tf.TensorSpec((None,) + models.INPUT_SHAPES[dataset], tf.float32),
      y=tf.TensorSpec((None,), tf.int32),
  )


def loss_fn() -> tf.keras.losses.Loss:
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def uses_fed_sparsify(name: str, client_message_prune_rate: float = 0.0,
                      server_message_prune_rate: float = 0.0,
                      quantize_bits: int = 0) -> bool:
  """Whether `build_algorithm` builds it with `fed_sparsify` (a prunable model).

  FedAvg with message pruning or quantization is FedSparsify with S_T = 0
  (which equals TFF's FedAvg when nothing compresses, tested), so that its
  bytes are measured.
  """
  return name in SPARSIFYING or (
      name in ('fedavg', 'fedavg_momentum')
      and (client_message_prune_rate > 0 or server_message_prune_rate > 0
           or quantize_bits > 0))


def create_keras_model(dataset: str, seed: int = 0, *, prunable: bool = False) -> tf.keras.Model:
  """The paper's model for `dataset`, wrapped for pruning if `prunable`."""
  model = models.create_model(dataset, seed)
  return pruning.wrap_for_pruning(model) if prunable else model


def build_model_fn(
    dataset: str, seed: int = 0,
    keras_model_fn: Optional[Callable[[], tf.keras.Model]] = None,
    *, prunable: bool = False,
) -> Callable[[], tff.learning.models.VariableModel]:
  """A no-arg `model_fn` wrapping the paper's Keras model for `dataset`.

  `prunable=True` wraps it in tfmot's `prune_low_magnitude`, as the
  `SPARSIFYING` algorithms need.
  """
  spec = input_spec(dataset)
  keras_model_fn = keras_model_fn or (
      lambda: create_keras_model(dataset, seed, prunable=prunable))

  def model_fn():
    return tff.learning.models.from_keras_model(
        keras_model_fn(), loss=loss_fn(), input_spec=spec,
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )

  return model_fn


def _check_positive(name: str, value: float):
  if not value > 0 or not np.isfinite(value):
    raise ValueError(f'{name} must be a positive number, got {value}')


def build_algorithm(
    name: str, model_fn: Callable[[], tff.learning.models.VariableModel], *,
    client_learning_rate: float, server_learning_rate: float = 1.0,
    client_momentum: Optional[float] = None,
    proximal_strength: float = FEDPROX_DEFAULT_STRENGTH,
    schedule: Optional[schedules.FedSparsifySchedule] = None,
    mask_aggregation: str = 'majority_vote',
    seed: int = 0,
    client_message_prune_rate: float = 0.0,
    server_message_prune_rate: float = 0.0,
    quantize_bits: int = 0,
    quantizer: str = 'tff',
    quantize_threshold: int = comm.QUANTIZATION_THRESHOLD,
    sparsity_placement: str = 'global',
    loop_implementation: tff.learning.LoopImplementation = tff.learning.LoopImplementation.DATASET_REDUCE,
) -> tff.learning.templates.LearningProcess:
  """Builds a weighted (by examples) learning process by name.

  Args:
    name: one of `ALGORITHMS`.
    model_fn: no-arg callable returning a `tff.learning.models.VariableModel`
      (for `SPARSIFYING` ones, of a model wrapped for pruning:
      `build_model_fn(..., prunable=True)`).
    client_learning_rate: client SGD learning rate (> 0).
    server_learning_rate: server SGD learning rate (> 0); 1.0 is plain FedAvg.
    client_momentum: client SGD momentum in [0, 1). `None` means 0 for
      'fedavg' and 'fedprox' and 0.75 (the paper's) for 'fedavg_momentum'.
    proximal_strength: FedProx's mu (> 0), used by 'fedprox' only.
    schedule: the sparsity schedule of the `SPARSIFYING` algorithms; for
      'oneshot_pruning' it prunes once, to its `final_sparsity` at its
      `sparsify_start_round`.
    mask_aggregation: 'fedsparsify_local' only: 'majority_vote' or 'mean'.
    seed: seed of 'random_pruning'.
    client_message_prune_rate: message pruning of arXiv 2310.14693 at the
      clients (fedavg, fedavg_momentum and the `SPARSIFYING` algorithms).
    server_message_prune_rate: the same for the server's broadcast.
    quantize_bits: 0, or the bits of the uniform quantization, in [1, 16]
      (as `client_message_prune_rate`).
    quantizer: 'tff' (TFF's, of the uploaded deltas, every element) or
      'sparse' (ours, the non-zero values of uploads and broadcasts), see
      `fed_sparsify.build_weighted_fed_sparsify`.
    quantize_threshold: tensors with more elements than this are quantized
      (TFF's default, 20000, leaves small kernels and biases lossless).
    sparsity_placement: the `SPARSIFYING` magnitude algorithms: 'global',
      'uniform' or 'compute' (`fed_sparsify.build_weighted_fed_sparsify`).
    loop_implementation: how clients iterate over their datasets.

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  if name not in ALGORITHMS:
    raise ValueError(f'algorithm must be one of {ALGORITHMS}, got {name!r}')
  _check_positive('client_learning_rate', client_learning_rate)
  _check_positive('server_learning_rate', server_learning_rate)
  if client_momentum is None:
    client_momentum = MFL_DEFAULT_MOMENTUM if name == 'fedavg_momentum' else 0.0
  if not 0.0 <= client_momentum < 1.0:
    raise ValueError(f'client_momentum must be in [0, 1), got {client_momentum}')
  if name == 'fedavg_momentum' and client_momentum == 0.0:
    raise ValueError('client_momentum must be > 0 for fedavg_momentum, got 0.0')
  client_optimizer = tff.learning.optimizers.build_sgdm(
      client_learning_rate, momentum=client_momentum or None
  )
  server_optimizer = tff.learning.optimizers.build_sgdm(server_learning_rate)
  if name == 'fedprox' and (client_message_prune_rate or server_message_prune_rate):
    raise ValueError('message pruning rates must be 0 for fedprox, got '
                     f'{client_message_prune_rate}, {server_message_prune_rate}')
  comm.check_quantize_bits(quantize_bits)
  comm.check_quantizer(quantizer)
  if name == 'fedprox' and quantize_bits:
    raise ValueError(f'quantize_bits must be 0 for fedprox, got {quantize_bits}')
  if uses_fed_sparsify(name, client_message_prune_rate, server_message_prune_rate,
                       quantize_bits):
    if name not in SPARSIFYING:
      schedule = schedules.FedSparsifySchedule(0.0, 2)  # Never prunes.
    if schedule is None:
      raise ValueError(f'schedule is required for {name}, got None')
    if name == 'oneshot_pruning':
      schedule = schedules.FedSparsifySchedule.one_shot(
          schedule.final_sparsity, schedule.total_rounds,
          sparsify_start_round=schedule.sparsify_start_round)
    return fed_sparsify.build_weighted_fed_sparsify(
        model_fn, client_optimizer, server_optimizer, schedule=schedule,
        mode='local' if name == 'fedsparsify_local' else 'global',
        mask_aggregation=mask_aggregation,
        pruning_method='random' if name == 'random_pruning' else 'magnitude',
        seed=seed, client_message_prune_rate=client_message_prune_rate,
        server_message_prune_rate=server_message_prune_rate,
        quantize_bits=quantize_bits, quantizer=quantizer,
        quantize_threshold=quantize_threshold, sparsity_placement=sparsity_placement,
        loop_implementation=loop_implementation)
  if name == 'fedprox':
    _check_positive('proximal_strength', proximal_strength)
    return tff.learning.algorithms.build_weighted_fed_prox(
        model_fn, proximal_strength=proximal_strength,
        client_optimizer_fn=client_optimizer,
        server_optimizer_fn=server_optimizer,
        loop_implementation=loop_implementation,
    )
  return tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=client_optimizer,
      server_optimizer_fn=server_optimizer,
      loop_implementation=loop_implementation,
  )


def schedule_from_config(config: config_lib.TrainConfig) -> schedules.FedSparsifySchedule:
  """The sparsity schedule of a run (`oneshot_pruning`: S_0 = S_T)."""
  final = config.final_sparsity
  return schedules.FedSparsifySchedule(
      final, config.total_rounds,
      initial_sparsity=final if config.algorithm == 'oneshot_pruning' else config.initial_sparsity,
      sparsify_start_round=config.sparsify_start_round,
      sparsify_frequency=config.sparsify_frequency,
      sparsify_exponent=config.sparsify_exponent)


def build_from_config(
    config: config_lib.TrainConfig,
) -> tuple[tff.learning.templates.LearningProcess, Callable[[], tf.keras.Model]]:
  """The process and Keras model of a training run.

  Args:
    config: the run's validated configuration (`binaries/train.py` makes it
      from its flags and saves it as `config.json`).

  Returns:
    (the learning process, a no-arg function building the matching Keras
    model, wrapped for pruning when the process prunes).
  """
  name = config.algorithm
  prunable = uses_fed_sparsify(name, config.client_message_prune_rate,
                               config.server_message_prune_rate, config.quantize_bits)
  schedule = schedule_from_config(config) if name in SPARSIFYING else None
  process = build_algorithm(
      name, build_model_fn(config.dataset, seed=config.seed, prunable=prunable),
      client_learning_rate=config.client_learning_rate,
      server_learning_rate=config.server_learning_rate,
      client_momentum=config.client_momentum,
      proximal_strength=config.proximal_strength, schedule=schedule,
      mask_aggregation=config.mask_aggregation, seed=config.seed,
      client_message_prune_rate=config.client_message_prune_rate,
      server_message_prune_rate=config.server_message_prune_rate,
      quantize_bits=config.quantize_bits, quantizer=config.quantizer,
      quantize_threshold=config.quantize_threshold,
      sparsity_placement=config.sparsity_placement)
  return process, lambda: create_keras_model(config.dataset, config.seed, prunable=prunable)
