"""The paper's no-pruning baselines (Stripelis et al., Section 4), from `tff.learning`.

FedAvg with vanilla SGD (McMahan et al. 2017), FedAvg with momentum SGD at
the clients ("MFL", Liu et al. 2020; momentum 0.75 in the paper's Appendix C)
and FedProx (Li et al. 2020, mu = 0.001). FedAvg with compression (message
pruning, quantization) is FedSparsify with S_T = 0, which equals TFF's FedAvg
when nothing compresses (tested), so that its bytes are measured; so is
FedAvg of a model with BatchNormalization, so that its moving statistics
are aggregated.
"""

import dataclasses
from typing import Callable

import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.learning import configs
from tff_sparsify.learning import fed_sparsify
from tff_sparsify.learning import layout as layout_lib


def build_fed_avg(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    config: configs.FedAvgConfig,
    **components,
) -> tff.learning.templates.LearningProcess:
  """FedAvg or MFL: `tff.learning.algorithms.build_weighted_fed_avg`.

  With compression, or for a model with moving statistics (BatchNormalization,
  which TFF's FedAvg never aggregates: `learning.statistics`), FedSparsify
  with S_T = 0, which equals TFF's FedAvg on the trainable weights (tested).

  Args:
    model_fn: no-arg `model_fn`; with compression, of a model wrapped for
      pruning (`models.build_model_fn(..., prunable=True)`).
    config: a `configs.FedAvgConfig` (or `FedAvgMomentumConfig`).
    **components: TFF's optional keyword-only components
      (`model_aggregator`, `loop_implementation`, ...).
  """
  if config.compression.enabled or layout_lib.layout_from_model_fn(model_fn).statistics:
    return fed_sparsify.build_weighted_fed_sparsify(
        model_fn, configs.FedSparsifyConfig(
            schedule=configs.NEVER_PRUNE,
            **{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}),
        **components)
  client, server = fed_sparsify.client_and_server_optimizers(config)
  return tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=client, server_optimizer_fn=server, **components)


def build_fed_prox(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    config: configs.FedProxConfig,
    **components,
) -> tff.learning.templates.LearningProcess:
  """FedProx: FedSparsify with S_T = 0 whose clients add mu (w - w_t) to the gradient.

  Not `tff.learning.algorithms.build_weighted_fed_prox`: in TFF 0.87 its
  client step adds mu (w_t - w), which pushes the client away from the
  global model (`tests/test_fed_sparsify.py` shows it against NumPy).
  `model_fn` must wrap the model for pruning (`models.build_model_fn(...,
  prunable=True)`), as the client work finds its weights there.
  """
  return fed_sparsify.build_weighted_fed_sparsify(
      model_fn, configs.FedSparsifyConfig(
          schedule=configs.NEVER_PRUNE, client_learning_rate=config.client_learning_rate,
          server_learning_rate=config.server_learning_rate,
          client_momentum=config.client_momentum,
          proximal_strength=config.proximal_strength),
      **components)
