"""FedSparsify-Global (Stripelis et al., Algorithm 1): the server prunes after aggregation.

    w^(t+1) = ServerOpt(w^(t), aggregated update)
    m^(t+1) = purging_mask(w^(t+1), s_t) (.) m^(t)         where Eq. 1 prunes

Clients train under the global mask and send their deltas; the server
prunes its stepped model by magnitude (`layout.PruningLayout.placed_masks`:
one ranking over all prunable weights, the paper's, or per layer, or by
compute; weights or whole channels). A pruned weight never regrows.
"""

from tff_sparsify import _lazy
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base

fed_sparsify = _lazy.load('tff_sparsify.learning.fed_sparsify')


class GlobalMagnitudeRules(base.Rules):
  """The server purges by magnitude where the schedule prunes."""

  def server_masks(self, server: base.ServerRound) -> list:
    config = self.config
    return base.pruned_when_scheduled(server, lambda: server.layout.placed_masks(
        server.trainable, server.sparsity, config.sparsity_placement,
        config.channel_multiple))


def build(model_fn, config: configs.FedSparsifyConfig, **components):
  """FedSparsify-Global (and one-shot pruning: the same rules, a one-shot schedule)."""
  return fed_sparsify.build_weighted_fed_sparsify(
      model_fn, config, GlobalMagnitudeRules(config), **components)


ALGORITHMS = (base.Algorithm(
    'fedsparsify_global', configs.FedSparsifyConfig, build,
    base.fed_sparsify_from_flags('global'), prunes=True,
    accepts=base.is_fed_sparsify('global', 'magnitude'),
    description='FedSparsify-Global: the server prunes after aggregation'),)
