"""GraSP (Wang et al. 2020) as the FedSparsify paper ran it: a mask fixed before round 1.

As SNIP (`snip`), scored by -w (.) Hg, the highest scores pruned
(`learning.saliency`).
"""

from tff_sparsify import _lazy
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base
from tff_sparsify.learning.algorithms import snip

saliency = _lazy.load('tff_sparsify.learning.saliency')

ALGORITHMS = (base.Algorithm(
    'grasp', configs.FedSparsifyConfig, snip.build,
    base.fed_sparsify_from_flags('global', 'grasp'), prunes=True,
    accepts=base.is_fed_sparsify('global', 'grasp'),
    initial_masks=lambda *run: saliency.initial_masks_of_run('grasp', *run),
    description='GraSP: -w Hg of the initial model on one seeded client\'s batch, mask fixed'),)
