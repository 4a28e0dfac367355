"""What an algorithm module holds: its registry entry and its rules, the small interface.

Each algorithm is one module of this package (Flower's strategy per file, TFF's
module per algorithm): its registry entry (`Algorithm`: name, configuration
class, how flags make that configuration, builder) and, for the algorithms
built on training under masks, its `Rules`: what its clients do besides
local training, what they send besides the update, how the server merges
that and updates the masks. The generic client work (`learning.client_work`),
aggregator (`learning.aggregators.MessageFactory`) and finalizer
(`learning.finalizers`) call the rules; `learning.fed_sparsify` composes them.

A new algorithm is a module here with `ALGORITHMS = (Algorithm(...),)`, listed
in `learning.registry`. Pure Python at import: TensorFlow is named through
`_lazy` and loaded when a process is built, so that a binary checks its flags
before TensorFlow loads.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional

from tff_sparsify import _lazy
from tff_sparsify import validation
from tff_sparsify.learning import configs

tf = _lazy.load('tensorflow')
schedules = _lazy.load('tff_sparsify.core.schedules')


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One registered algorithm.

  Attributes:
    name: the `--algorithm` value.
    config_class: its frozen configuration class (`learning.configs`).
    builder: `builder(model_fn, config, **components) -> LearningProcess`,
      `components` being TFF's optional keyword-only pieces
      (`model_distributor`, `model_aggregator`, `metrics_aggregator`,
      `loop_implementation`) and `initial_masks` where `initial_masks` is set.
    from_flags: flat flag values (the fields of `config.TrainConfig`) to its
      configuration; raises `validation.ConfigError` naming the flag.
    prunes: whether it prunes the model (needs S_T and the Eq. 1 flags).
    description: one line for `--help`.
    accepts: whether a configuration of `config_class` is this algorithm's
      (several share `configs.FedSparsifyConfig`); default: all.
    initial_masks: `initial_masks(train_config, keras_model, loss, client_data,
      element_fn)`: the masks the initial weights carry, scored on one
      client's data before round 1 (`learning.saliency`); None: not scored.
  """
  name: str
  config_class: type
  builder: Callable[..., Any]
  from_flags: Callable[[Mapping[str, Any]], Any]
  prunes: bool
  description: str
  accepts: Callable[[Any], bool] = lambda config: True
  initial_masks: Optional[Callable[..., Any]] = None

  @property
  def scores_at_init(self) -> bool:
    return self.initial_masks is not None

  def build(self, model_fn, config, **components):
    """The learning process of `config` (an instance of `config_class`)."""
    if type(config) is not self.config_class:  # pylint: disable=unidiomatic-typecheck
      raise TypeError(f'{self.name} takes a {self.config_class.__name__}, '
                      f'got {type(config).__name__}')
    if not self.accepts(config):
      raise TypeError(f'{self.name} does not take this {type(config).__name__}, another '
                      f'algorithm\'s (`registry.for_config` finds it): {config!r}')
    return self.builder(model_fn, config, **components)


@dataclasses.dataclass
class ClientRound:
  """What a client holds after local training (tensors in its `tf.function`).

  Attributes:
    layout: the model's `layout.PruningLayout`.
    trained: the trainable tensors it trained.
    global_masks: the masks it received, one per prunable weight.
    squares: with `Rules.squares_gradients`, the squared gradients of the
      prunable weights summed over its steps; else None.
    should_prune: the round's flag of `Rules.schedule` (bool tensor).
    sparsity: the round's s_t (float64 tensor).
  """
  layout: Any
  trained: list
  global_masks: list
  squares: Optional[tuple]
  should_prune: Any
  sparsity: Any


@dataclasses.dataclass
class ServerRound:
  """What the server holds after its optimizer step (tensors in a `tf.function`).

  Attributes:
    layout: the model's `layout.PruningLayout`.
    trainable: the stepped trainable tensors, masked by the current masks.
    current: the current masks, one per prunable weight.
    round_num: the round (int32 tensor, 1 for the first).
    should_prune: the round's flag of `Rules.schedule`.
    sparsity: the round's s_t.
    message: the clients' messages merged by `Rules.merge`; None without one.
  """
  layout: Any
  trainable: list
  current: list
  round_num: Any
  should_prune: Any
  sparsity: Any
  message: Any


class Rules:
  """What an algorithm adds to training under masks. The defaults: nothing.

  The base class keeps every mask as it is (FedAvg, FedProx, and SNIP and
  GraSP after their masks are made). Subclasses override what their
  algorithm does; the generic pieces call each hook at one place.
  """
  # The name of what each client sends beside its model delta, one tensor per
  # prunable weight (the update is then `OrderedDict(model_delta=..., <message>=...)`).
  message: Optional[str] = None
  # Whether clients sum the squared gradients of the prunable weights over
  # their local steps (`ClientRound.squares`).
  squares_gradients: bool = False

  def __init__(self, config: configs.FedSparsifyConfig):
    self.config = config

  def schedule(self, round_num):
    """(flag, s_t) of round `round_num` (int32 tensor): Eq. 1 (`core.schedules`)."""
    return schedules.FedSparsifySchedule(self.config.schedule)(round_num)

  def local_gradients(self, gradients, trainable, received):
    """The gradients a local step applies (FedProx adds its proximal term)."""
    del trainable, received
    return gradients

  def client_masks(self, client: ClientRound) -> Optional[list]:
    """Masks a client prunes its trained model to before sending; None: the global ones."""
    del client
    return None

  def client_message(self, client: ClientRound, client_masks):
    """(the `message` tensors, their bytes as an int64 tensor) a client sends."""
    raise NotImplementedError(f'{type(self).__name__} sends a {self.message}')

  def dropped_message(self, message, non_finite):
    """What a client whose update is dropped (not finite) sends as its message."""
    del non_finite
    return message

  def merge(self, message_type, messages):
    """Federated: the clients' messages to (server value, {name: server measurement})."""
    raise NotImplementedError(f'{type(self).__name__} merges a {self.message}')

  def server_masks(self, server: ServerRound) -> list:
    """The new masks (the old ones ANDed in by the rule itself where it must)."""
    return list(server.current)


def pruned_when_scheduled(server: ServerRound, purge: Callable[[], list]) -> list:
  """`purge()` ANDed with the current masks where the schedule prunes, else the current masks."""
  def purged():
    return [m * c for m, c in zip(purge(), server.current)]
  return tf.cond(server.should_prune, purged, lambda: list(server.current))


# Flat flag values to configurations (`Algorithm.from_flags`).

_OPTIMIZER_FIELDS = ('client_learning_rate', 'server_learning_rate')
_COMPRESSION_FIELDS = tuple(f.name for f in dataclasses.fields(configs.CompressionConfig))
_PRIVACY_FIELDS = tuple(f.name for f in dataclasses.fields(configs.PrivacyConfig))
_SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(configs.ScheduleConfig))
# The rest of a FedSparsifyConfig, each a flag of the same name (read by the
# algorithms that use it; every one settable and saved with the run).
_FED_SPARSIFY_FIELDS = tuple(
    f.name for f in dataclasses.fields(configs.FedSparsifyConfig)
    if f.name not in ('schedule', 'compression', 'privacy', 'mode', 'pruning_method',
                      'client_momentum', *_OPTIMIZER_FIELDS))


def pick(values: Mapping[str, Any], names) -> dict:
  return {name: values[name] for name in names if name in values}


def optimizers(values) -> dict:
  picked = pick(values, _OPTIMIZER_FIELDS)
  if values.get('client_momentum') is not None:  # None: the algorithm's default.
    picked['client_momentum'] = values['client_momentum']
  return picked


def compression(values) -> configs.CompressionConfig:
  return configs.CompressionConfig(**pick(values, _COMPRESSION_FIELDS))


def privacy(values) -> configs.PrivacyConfig:
  return configs.PrivacyConfig(**pick(values, _PRIVACY_FIELDS))


def fed_sparsify_from_flags(mode: str = 'global', pruning_method: str = 'magnitude',
                            one_shot: bool = False, config_class=configs.FedSparsifyConfig):
  """`from_flags` of an algorithm configured by `configs.FedSparsifyConfig` (or a subclass
  of it: its own fields too are taken from the flags of their names)."""
  at_init = pruning_method in configs.AT_INITIALIZATION
  fields = _FED_SPARSIFY_FIELDS + tuple(
      f.name for f in dataclasses.fields(config_class)
      if f.name not in {g.name for g in dataclasses.fields(configs.FedSparsifyConfig)})

  def from_flags(values):
    picked = pick(values, _SCHEDULE_FIELDS)
    if values.get('sparsify_end_round') is not None:  # Eq. 1's T; later rounds tune.
      picked['total_rounds'] = values['sparsify_end_round']
    if (one_shot or at_init) and 'final_sparsity' in picked:  # --initial_sparsity unused.
      picked['initial_sparsity'] = picked['final_sparsity']
    if at_init:  # Pruned before round 1: --sparsify_start_round plays no part.
      picked['sparsify_start_round'] = 0
    schedule = configs.ScheduleConfig(**picked)
    if one_shot or at_init:  # S_0 = S_T: the whole sparsity at t_0 (F and n play no part).
      schedule = configs.ScheduleConfig.one_shot(
          schedule.final_sparsity, schedule.total_rounds,
          sparsify_start_round=schedule.sparsify_start_round)
    return config_class(
        compression=compression(values), privacy=privacy(values), schedule=schedule,
        mode=mode, pruning_method=pruning_method,
        **optimizers(values), **pick(values, fields))
  return from_flags


def is_fed_sparsify(mode: str, pruning_method: str) -> Callable[[Any], bool]:
  """`Algorithm.accepts` of a `FedSparsifyConfig` algorithm."""
  return lambda config: (config.mode, config.pruning_method) == (mode, pruning_method)


def check_rules(rules, config) -> Rules:
  if not isinstance(rules, Rules):
    raise TypeError(f'rules must be a learning.algorithms.base.Rules, got {type(rules).__name__}')
  if rules.config is not config:
    raise ValueError('rules must be made from the same configuration as the process')
  return rules
