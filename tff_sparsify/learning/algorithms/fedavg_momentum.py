"""MFL (Liu et al. 2020): FedAvg with momentum SGD at the clients (0.75, the paper's Appendix C)."""

import dataclasses

from tff_sparsify import validation
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base
from tff_sparsify.learning.algorithms import fedavg

MFL_DEFAULT_MOMENTUM = 0.75  # The paper's Appendix C.


@dataclasses.dataclass(frozen=True)
class FedAvgMomentumConfig(configs.FedAvgConfig):
  """MFL: FedAvg with momentum SGD at the clients."""
  client_momentum: float = MFL_DEFAULT_MOMENTUM

  def __post_init__(self):
    super().__post_init__()
    if self.client_momentum == 0:
      raise validation.ConfigError('client_momentum', self.client_momentum,
                                   'must be > 0 for --algorithm=fedavg_momentum')


ALGORITHMS = (base.Algorithm(
    'fedavg_momentum', FedAvgMomentumConfig, fedavg.build,
    fedavg.from_flags(FedAvgMomentumConfig), prunes=False,
    description='MFL: FedAvg with client momentum (0.75)'),)
