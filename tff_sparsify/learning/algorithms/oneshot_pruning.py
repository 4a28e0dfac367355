"""One-shot pruning (the paper's baseline): FedSparsify-Global pruning once, to S_T at t_0.

The schedule is `ScheduleConfig.one_shot(S_T, T, sparsify_start_round=t_0)`
(S_0 = S_T: the whole sparsity at t_0); the rules are FedSparsify-Global's.
"""

from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base
from tff_sparsify.learning.algorithms import fedsparsify_global

ALGORITHMS = (base.Algorithm(
    'oneshot_pruning', configs.FedSparsifyConfig, fedsparsify_global.build,
    base.fed_sparsify_from_flags('global', one_shot=True), prunes=True,
    accepts=base.is_fed_sparsify('global', 'magnitude'),
    description='one-shot pruning to S_T at --sparsify_start_round'),)
