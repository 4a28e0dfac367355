"""The no-pruning baselines of the paper, built from `tff.learning` algorithms.

Stripelis et al., Section 4: FedAvg with vanilla SGD (McMahan et al. 2017),
FedAvg with momentum SGD at the clients ("MFL", Liu et al. 2020; momentum 0.75
in the paper's Appendix C) and FedProx (Li et al. 2020, mu = 0.001).
"""

import collections
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import models

ALGORITHMS = ('fedavg', 'fedavg_momentum', 'fedprox')
MFL_DEFAULT_MOMENTUM = 0.75
FEDPROX_DEFAULT_STRENGTH = 0.001


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


def build_model_fn(
    dataset: str, seed: int = 0,
    keras_model_fn: Optional[Callable[[], tf.keras.Model]] = None,
) -> Callable[[], tff.learning.models.VariableModel]:
  """A no-arg `model_fn` wrapping the paper's Keras model for `dataset`."""
  spec = input_spec(dataset)
  keras_model_fn = keras_model_fn or (lambda: models.create_model(dataset, seed))

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
    loop_implementation: tff.learning.LoopImplementation = tff.learning.LoopImplementation.DATASET_REDUCE,
) -> tff.learning.templates.LearningProcess:
  """Builds a weighted (by examples) learning process for a baseline.

  Args:
    name: one of `ALGORITHMS`.
    model_fn: no-arg callable returning a `tff.learning.models.VariableModel`.
    client_learning_rate: client SGD learning rate (> 0).
    server_learning_rate: server SGD learning rate (> 0); 1.0 is plain FedAvg.
    client_momentum: client SGD momentum in [0, 1). `None` means 0 for
      'fedavg' and 'fedprox' and 0.75 (the paper's) for 'fedavg_momentum'.
    proximal_strength: FedProx's mu (> 0), used by 'fedprox' only.
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
