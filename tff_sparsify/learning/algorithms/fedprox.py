"""FedProx (Li et al. 2020; the paper's mu = 0.001): local steps with a proximal term.

The clients minimise their loss plus mu/2 ||w - w_t||^2, w_t the model they
received: each local step adds mu (w - w_t) to the gradient
(`FedProxRules.local_gradients`). Built on the generic process of
`learning.fed_sparsify` with S_T = 0, not on
`tff.learning.algorithms.build_weighted_fed_prox`: in TFF 0.87 its client
step adds mu (w_t - w), which pushes the client away from the global model
(`tests/test_fed_sparsify.py` shows it against NumPy). `model_fn` must wrap
the model for pruning (`models.build_model_fn(..., prunable=True)`), as the
client work finds its weights there. Its messages are not compressed.
"""

import dataclasses

from tff_sparsify import _lazy
from tff_sparsify import validation
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base

fed_sparsify = _lazy.load('tff_sparsify.learning.fed_sparsify')

FEDPROX_DEFAULT_STRENGTH = 0.001  # The paper's mu.


@dataclasses.dataclass(frozen=True)
class FedProxConfig:
  """FedProx: FedAvg with the proximal term mu/2 ||w - w_t||^2 (no compression)."""
  client_learning_rate: float = 0.02
  server_learning_rate: float = 1.0
  client_momentum: float = 0.0
  proximal_strength: float = FEDPROX_DEFAULT_STRENGTH
  privacy: configs.PrivacyConfig = configs.PrivacyConfig()

  def __post_init__(self):
    configs.check_optimizers(self)
    if not isinstance(self.privacy, configs.PrivacyConfig):
      raise validation.ConfigError('privacy', self.privacy, 'must be a PrivacyConfig')
    validation.check_positive_number('proximal_strength', self.proximal_strength)


class FedProxRules(base.Rules):
  """No pruning; the proximal term in every local step."""

  def __init__(self, config: configs.FedSparsifyConfig, proximal_strength: float):
    super().__init__(config)
    self.proximal_strength = proximal_strength

  def local_gradients(self, gradients, trainable, received):
    proximal_strength = self.proximal_strength
    gradients = [g + proximal_strength * (w - w_t)
                 for g, w, w_t in zip(gradients, trainable, received)]
    return gradients


def build(model_fn, config: FedProxConfig, **components):
  never_prunes = configs.FedSparsifyConfig(
      schedule=configs.NEVER_PRUNE, client_learning_rate=config.client_learning_rate,
      server_learning_rate=config.server_learning_rate,
      client_momentum=config.client_momentum, privacy=config.privacy)
  return fed_sparsify.build_weighted_fed_sparsify(
      model_fn, never_prunes, FedProxRules(never_prunes, config.proximal_strength),
      **components)


def from_flags(values) -> FedProxConfig:
  # FedProxConfig holds no compression: FedProx messages are not compressed.
  # (The quantizer and its threshold matter only with quantize_bits.)
  for name in ('client_message_prune_rate', 'server_message_prune_rate', 'quantize_bits'):
    if values.get(name):
      raise validation.ConfigError(name, values[name], 'must be 0 for --algorithm=fedprox')
  if values.get('message_prune_target', 'model') != 'model':
    raise validation.ConfigError('message_prune_target', values['message_prune_target'],
                                 'must be model for --algorithm=fedprox')
  return FedProxConfig(**base.optimizers(values), privacy=base.privacy(values),
                               **base.pick(values, ('proximal_strength',)))


ALGORITHMS = (base.Algorithm(
    'fedprox', FedProxConfig, build, from_flags, prunes=False,
    description='FedProx (proximal term, --proximal_strength)'),)
