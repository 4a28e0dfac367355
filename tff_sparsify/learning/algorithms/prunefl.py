"""PruneFL (Jiang et al. 2022), as the FedSparsify paper ran it.

Stripelis et al., line 82: "At the start of training, we randomly pick a
client from the federation and learn the initial pruning mask after
completing 5 reconfigurations. We perform global mask readjustment every 50
rounds and set the sparsification ratio for mask readjustment at round t to
s x 0.5^(t/1000) with s = 0.3."

The federated part (`PruneFLRules`): clients send their squared gradients
summed over their local steps beside their delta at readjustment rounds
(the end of rounds readjust_every - 1, 2 readjust_every - 1, ...; zeros,
not sent nor counted, at the others; dense float32 in `bytes_uploaded`,
not in the parameter counts of Appendix E), the server sums them,
unweighted, and readjusts the mask
(`core.masks.readjusted_masks`: of the kept weights the fraction
s x 0.5^(t/H) of smallest magnitude is pruned, and as many pruned positions
of largest importance are kept again, starting from zero), so the sparsity
stays `final_sparsity` (the paper reports PruneFL at 0.3).

`initial_masks` is the initial pruning, before round 1, on the client drawn with
the seed (`saliency.scoring_client`), from the initial global weights:
`initial_reconfigurations` times, one local epoch of SGD over the client's
examples in partition order (no shuffle; learning rate and batch size of
the run) under the current mask, summing the squared gradients; then the
first reconfiguration prunes the trained weights to `final_sparsity` by
global magnitude and each later one readjusts the mask at ratio s. The mask
is what the federation starts from, applied to the initial global weights
(the authors' code does the same: the client's trained weights are not
used). Choices of ours: one local epoch per reconfiguration (the authors
train 10 epochs, on the whole training set rather than the client's own,
which we take for a slip), and magnitude pruning for the first
reconfiguration (from a dense model there is nothing to regrow).
"""

import dataclasses

import numpy as np

from tff_sparsify import _lazy
from tff_sparsify import validation
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base

tf = _lazy.load('tensorflow')
tff = _lazy.load('tensorflow_federated')
wire = _lazy.load('tff_sparsify.compression.wire')
masks_lib = _lazy.load('tff_sparsify.core.masks')
schedules = _lazy.load('tff_sparsify.core.schedules')
client_work = _lazy.load('tff_sparsify.learning.client_work')
fed_sparsify = _lazy.load('tff_sparsify.learning.fed_sparsify')
pruning = _lazy.load('tff_sparsify.learning.pruning')
saliency = _lazy.load('tff_sparsify.learning.saliency')


# As the FedSparsify paper ran PruneFL (line 82).
READJUST_EVERY = 50
READJUST_RATIO = 0.3
READJUST_HALVING_ROUNDS = 1000
INITIAL_RECONFIGURATIONS = 5


@dataclasses.dataclass(frozen=True)
class PruneFLConfig(configs.FedSparsifyConfig):
  """PruneFL's configuration: FedSparsify's (pruning at initialization) and its own.

  Attributes:
    readjust_every: rounds between readjustments of the mask (the paper's 50).
    readjust_ratio: s of the readjustment ratio s * 0.5^(t / H) (the
      paper's 0.3), the fraction of kept weights swapped at round t.
    readjust_halving_rounds: H (the paper's 1000).
    initial_reconfigurations: reconfigurations of the initial pruning on
      one client (the paper's 5).
  """
  _PRUNING_METHODS = ('prunefl',)
  pruning_method: str = 'prunefl'
  readjust_every: int = READJUST_EVERY
  readjust_ratio: float = READJUST_RATIO
  readjust_halving_rounds: int = READJUST_HALVING_ROUNDS
  initial_reconfigurations: int = INITIAL_RECONFIGURATIONS

  def __post_init__(self):
    super().__post_init__()
    for name in ('readjust_every', 'readjust_halving_rounds', 'initial_reconfigurations'):
      if not validation.is_int(getattr(self, name)) or getattr(self, name) < 1:
        raise validation.ConfigError(name, getattr(self, name), 'must be >= 1')
    validation.check_fraction('readjust_ratio', self.readjust_ratio)


class PruneFLRules(base.Rules):
  """Clients send squared gradients at readjustment rounds; the server readjusts the mask."""
  message = 'importance'
  squares_gradients = True

  def schedule(self, round_num):
    """The flag: a readjustment round (the mask is readjusted at its end)."""
    _, sparsity = super().schedule(round_num)
    return schedules.readjusts(round_num, self.config.readjust_every), sparsity

  def client_message(self, client: base.ClientRound, client_masks):
    del client_masks
    should_prune = client.should_prune
    importance = tuple(tf.where(should_prune, s, tf.zeros_like(s)) for s in client.squares)
    size = tf.where(should_prune, wire.lossless_bytes(importance), tf.constant(0, tf.int64))
    return importance, size

  def dropped_message(self, message, non_finite):
    """A client whose update is dropped sends no importance either."""
    message, _ = client_work.zero_all_if_any_non_finite(message)
    return tuple(tf.where(non_finite, tf.zeros_like(s), s) for s in message)

  def merge(self, message_type, messages):
    del message_type
    return tff.federated_sum(messages), {}

  def server_masks(self, server: base.ServerRound) -> list:
    config = self.config
    ratio = schedules.readjust_ratio(server.round_num, config.readjust_ratio,
                                     config.readjust_halving_rounds)
    return tf.cond(
        schedules.readjusts(server.round_num, config.readjust_every),
        lambda: masks_lib.readjusted_masks(server.layout.prunable_list(server.trainable),
                                           server.current, list(server.message), ratio),
        lambda: list(server.current))


def build(model_fn, config: PruneFLConfig, *, initial_masks, **components):
  return fed_sparsify.build_weighted_fed_sparsify(
      model_fn, config, PruneFLRules(config), initial_masks=initial_masks, **components)


def initial_masks_of_run(train_config, model, loss_fn, client_data, scoring: dict):
  """The masks of a run: its seeded client's examples, all of them (`initial_masks`)."""
  config = train_config.algorithm_config
  x, y = saliency.scoring_batch(client_data, train_config.seed, **scoring)
  return initial_masks(
      model, loss_fn, x, y, sparsity=config.schedule.final_sparsity,
      reconfigurations=config.initial_reconfigurations, ratio=config.readjust_ratio,
      learning_rate=config.client_learning_rate, batch_size=train_config.client_batch_size)


def initial_masks(model, loss_fn, x, y, *, sparsity: float,
                  reconfigurations: int, ratio: float, learning_rate: float,
                  batch_size: int) -> list[np.ndarray]:
  """The initial PruneFL masks of `model`'s prunable weights (`model` is trained in place)."""
  prunable = pruning.prunable_weights(model)
  variables = model.trainable_variables
  index = {v.ref(): i for i, v in enumerate(variables)}
  masks = [tf.ones_like(w) for w in prunable]
  mask_of = {index[w.ref()]: k for k, w in enumerate(prunable)}
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)

  @tf.function
  def epoch(masks):
    def step(squares, batch):
      xb, yb = batch
      with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb, training=False))
      grads = tape.gradient(loss, variables)
      for i, (v, g) in enumerate(zip(variables, grads)):
        updated = v - learning_rate * g
        if i in mask_of:
          updated = masks_lib.mask_tensor(updated, masks[mask_of[i]])
        v.assign(updated)
      return tuple(s + tf.square(grads[index[w.ref()]]) for s, w in zip(squares, prunable))
    return dataset.reduce(tuple(tf.zeros_like(w) for w in prunable), step)

  for r in range(reconfigurations):
    squares = epoch(masks)
    weights = [tf.identity(w) for w in prunable]
    if r == 0:
      masks = masks_lib.magnitude_masks(weights, sparsity)
    else:
      masks = masks_lib.readjusted_masks(weights, masks, squares, ratio)
    for w, m in zip(prunable, masks):
      w.assign(masks_lib.mask_tensor(w, m))
  return [m.numpy() for m in masks]


ALGORITHMS = (base.Algorithm(
    'prunefl', PruneFLConfig, build,
    base.fed_sparsify_from_flags('global', 'prunefl', config_class=PruneFLConfig),
    prunes=True, accepts=base.is_fed_sparsify('global', 'prunefl'),
    initial_masks=initial_masks_of_run,
    description='PruneFL: initial pruning on one seeded client, readjusted every '
                '--readjust_every rounds'),)
