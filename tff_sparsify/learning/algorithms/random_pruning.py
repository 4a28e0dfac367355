"""Progressive random pruning (the paper's Random baseline).

FedSparsify-Global's schedule, but where it prunes, the server prunes
uniformly at random among the kept weights to s_t (`masks.random_masks`),
seeded by (seed, round), so a run is reproducible.
"""

from tff_sparsify import _lazy
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base

tf = _lazy.load('tensorflow')
masks_lib = _lazy.load('tff_sparsify.core.masks')
fed_sparsify = _lazy.load('tff_sparsify.learning.fed_sparsify')


class RandomRules(base.Rules):
  """The server purges at random where the schedule prunes."""

  def server_masks(self, server: base.ServerRound) -> list:
    seed = tf.stack([tf.constant(self.config.seed, tf.int32), server.round_num])
    return base.pruned_when_scheduled(
        server, lambda: masks_lib.random_masks(server.current, server.sparsity, seed=seed))


def build(model_fn, config: configs.FedSparsifyConfig, **components):
  return fed_sparsify.build_weighted_fed_sparsify(
      model_fn, config, RandomRules(config), **components)


ALGORITHMS = (base.Algorithm(
    'random_pruning', configs.FedSparsifyConfig, build,
    base.fed_sparsify_from_flags('global', 'random'), prunes=True,
    accepts=base.is_fed_sparsify('global', 'random'),
    description='progressive random pruning (the paper\'s Random)'),)
