"""SNIP (Lee et al. 2019) as the FedSparsify paper ran it: a mask fixed before round 1.

One client, drawn with the run's seed, scores the initial global model on
its first `client_batch_size` examples by |g (.) w| (`learning.saliency`);
one ranking over all prunable weights keeps the best (1 - S_T). The initial
weights carry that mask and the server never prunes again (the base rules:
masks unchanged); client and server steps enforce it as FedSparsify's do.
"""

from tff_sparsify import _lazy
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base

saliency = _lazy.load('tff_sparsify.learning.saliency')
fed_sparsify = _lazy.load('tff_sparsify.learning.fed_sparsify')


def build(model_fn, config: configs.FedSparsifyConfig, *, initial_masks, **components):
  """SNIP or GraSP: the initial weights carry `initial_masks`, which never change."""
  return fed_sparsify.build_weighted_fed_sparsify(
      model_fn, config, base.Rules(config), initial_masks=initial_masks, **components)


ALGORITHMS = (base.Algorithm(
    'snip', configs.FedSparsifyConfig, build,
    base.fed_sparsify_from_flags('global', 'snip'), prunes=True,
    accepts=base.is_fed_sparsify('global', 'snip'),
    initial_masks=lambda *run: saliency.initial_masks_of_run('snip', *run),
    description='SNIP: |g w| of the initial model on one seeded client\'s batch, mask fixed'),)
