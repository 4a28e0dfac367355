"""MFL (Liu et al. 2020): FedAvg with momentum SGD at the clients (0.75, the paper's Appendix C)."""

from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base
from tff_sparsify.learning.algorithms import fedavg

ALGORITHMS = (base.Algorithm(
    'fedavg_momentum', configs.FedAvgMomentumConfig, fedavg.build,
    fedavg.from_flags(configs.FedAvgMomentumConfig), prunes=False,
    description='MFL: FedAvg with client momentum (0.75)'),)
