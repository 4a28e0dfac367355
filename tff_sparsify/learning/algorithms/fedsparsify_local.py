"""FedSparsify-Local (Stripelis et al., Algorithm 1 and Eq. 2): clients prune, the server merges.

    client:  m_k = purging_mask(w_k^(S), s_t) (.) m          where Eq. 1 prunes
    server:  [m]_i = 1  if  sum_k [m_k]_i >= N / 2  else 0   (majority vote)
             m^(t+1) = m (.) m^(t)

Each client prunes its trained model to s_t by magnitude (already pruned
weights stay pruned) and sends its mask beside its delta,
`OrderedDict(model_delta=..., mask=...)`; the bytes of the mask are those of
the positions it sends its values at (counted with them, by the client
work), and Appendix E counts one bit per prunable parameter. The server
counts the masks with an unweighted `federated_sum` and merges them by
majority vote, or, for `mask_aggregation='mean'` (the plain-average variant
of the paper's Figure 4), keeps wherever any client kept the weight: a
weighted average of pruned models is zero only where every client pruned.
The merged mask is applied after the server optimizer step.

Measurement `mask_agreement` (aggregator): over all prunable positions, the
mean fraction of participating clients whose mask agrees with the merged
one (1.0 when all clients send the same mask).
"""

import numpy as np

from tff_sparsify import _lazy
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base

tf = _lazy.load('tensorflow')
tff = _lazy.load('tensorflow_federated')
masks_lib = _lazy.load('tff_sparsify.core.masks')
fed_sparsify = _lazy.load('tff_sparsify.learning.fed_sparsify')


class LocalRules(base.Rules):
  """Clients purge and send their masks; the server merges them by vote."""
  message = 'mask'

  def client_masks(self, client: base.ClientRound) -> list:
    def purge():
      new = client.layout.placed_masks(client.trained, client.sparsity,
                                       self.config.sparsity_placement)
      return [n * old for n, old in zip(new, client.global_masks)]
    return tf.cond(client.should_prune, purge, lambda: list(client.global_masks))

  def client_message(self, client: base.ClientRound, client_masks):
    del client  # The positions are counted with the values sent at them.
    return tuple(client_masks), tf.constant(0, tf.int64)

  def merge(self, message_type, messages):
    mask_aggregation = self.config.mask_aggregation

    @tff.tensorflow.computation(message_type, np.int32)
    def merge_votes(votes, num_clients):
      merged, agreement = masks_lib.merge_votes(list(votes), num_clients, mask_aggregation)
      return tuple(merged), agreement

    votes = tff.federated_sum(messages)
    num_clients = tff.federated_sum(tff.federated_value(np.int32(1), tff.CLIENTS))
    merged, agreement = tff.federated_map(merge_votes, (votes, num_clients))
    return merged, dict(mask_agreement=agreement)

  def server_masks(self, server: base.ServerRound) -> list:
    return [m * c for m, c in zip(server.message, server.current)]


def build(model_fn, config: configs.FedSparsifyConfig, **components):
  return fed_sparsify.build_weighted_fed_sparsify(
      model_fn, config, LocalRules(config), **components)


ALGORITHMS = (base.Algorithm(
    'fedsparsify_local', configs.FedSparsifyConfig, build,
    base.fed_sparsify_from_flags('local'), prunes=True,
    accepts=base.is_fed_sparsify('local', 'magnitude'),
    description='FedSparsify-Local: clients prune, masks merged by majority vote'),)
