"""FedAvg (McMahan et al. 2017), the paper's first baseline: `tff.learning`'s own.

`tff.learning.algorithms.build_weighted_fed_avg` with SGD at the clients
(and `client_momentum`, `fedavg_momentum`) and at the server. With
compression (message pruning, quantization) or distributed DP, or for a
model with moving statistics (BatchNormalization, which TFF's FedAvg never
aggregates: `learning.statistics`), the generic process of `learning.fed_sparsify` with
the base rules (masks never change) and S_T = 0, which equals TFF's FedAvg
on the trainable weights (tested), so that its bytes are measured and its
statistics aggregated.
"""

import dataclasses

from tff_sparsify import _lazy
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base

tff = _lazy.load('tensorflow_federated')
dp_aggregation = _lazy.load('tff_sparsify.learning.dp_aggregation')
fed_sparsify = _lazy.load('tff_sparsify.learning.fed_sparsify')
layout_lib = _lazy.load('tff_sparsify.learning.pruning_layout')


def build(model_fn, config: configs.FedAvgConfig, **components):
  """FedAvg or MFL (`config` a `FedAvgConfig` or `FedAvgMomentumConfig`).

  Args:
    model_fn: no-arg `model_fn`; with compression, of a model wrapped for
      pruning (`models.build_model_fn(..., prunable=True)`).
    config: a `configs.FedAvgConfig` (or `FedAvgMomentumConfig`).
    **components: TFF's optional keyword-only components
      (`model_aggregator`, `loop_implementation`, ...).
  """
  if (config.compression.enabled or config.privacy.distributed
      or layout_lib.layout_from_model_fn(model_fn).statistics):
    never_prunes = configs.FedSparsifyConfig(
        schedule=configs.NEVER_PRUNE,
        **{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
    return fed_sparsify.build_weighted_fed_sparsify(
        model_fn, never_prunes, base.Rules(never_prunes), **components)
  client, server = fed_sparsify.client_and_server_optimizers(config)
  if config.privacy.active:
    if components.get('model_aggregator') is not None:
      raise ValueError(f'privacy.{config.privacy.flag[0]} builds the model aggregator '
                       '(clipping, noise, secure sum); pass neither with a model_aggregator')
    components = dict(components, model_aggregator=dp_aggregation.model_aggregator(
        config.privacy))
  return tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=client, server_optimizer_fn=server, **components)


def from_flags(config_class):
  def from_flag_values(values):
    return config_class(compression=base.compression(values), privacy=base.privacy(values),
                        **base.optimizers(values))
  return from_flag_values


ALGORITHMS = (base.Algorithm(
    'fedavg', configs.FedAvgConfig, build, from_flags(configs.FedAvgConfig), prunes=False,
    description='FedAvg (no pruning)'),)
