"""The algorithms by name: configuration class, mapping from flags, builder.

Pure Python: the builders are named as `module:function` and imported when a
process is built, so that a binary checks its flags before TensorFlow loads.
A new baseline is one module (its builder, taking its configuration) and one
`register` call below; `binaries/train.py --algorithm` lists what is
registered.

Builders have the signature
`builder(model_fn, config, **components) -> tff.learning.templates.LearningProcess`,
`components` being TFF's optional keyword-only pieces (`model_distributor`,
`model_aggregator`, `metrics_aggregator`, `loop_implementation`).
"""

import dataclasses
import importlib
from typing import Any, Callable, Mapping, Optional

from tff_sparsify import validation
from tff_sparsify.learning import configs


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One registered algorithm.

  Attributes:
    name: the `--algorithm` value.
    config_class: its frozen configuration class (`learning.configs`).
    builder: 'module:function' of its builder.
    from_flags: flat flag values (the fields of `config.TrainConfig`) to its
      configuration; raises `validation.ConfigError` naming the flag.
    prunes: whether it prunes the model (needs S_T and the Eq. 1 flags).
    description: one line for `--help`.
    scores_at_init: whether its builder takes `initial_masks`, scored on one
      client's data before round 1 (`learning.saliency`).
  """
  name: str
  config_class: type
  builder: str
  from_flags: Callable[[Mapping[str, Any]], Any]
  prunes: bool
  description: str
  scores_at_init: bool = False

  def build(self, model_fn, config, **components):
    """The learning process of `config` (an instance of `config_class`)."""
    if not isinstance(config, self.config_class):
      raise TypeError(f'{self.name} takes a {self.config_class.__name__}, '
                      f'got {type(config).__name__}')
    module, _, function = self.builder.partition(':')
    return getattr(importlib.import_module(module), function)(model_fn, config, **components)


_REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm):
  if algorithm.name in _REGISTRY:
    raise ValueError(f'algorithm {algorithm.name!r} is already registered')
  _REGISTRY[algorithm.name] = algorithm


def get(name: str) -> Algorithm:
  if name not in _REGISTRY:
    raise validation.ConfigError('algorithm', name, f'must be one of {", ".join(_REGISTRY)}')
  return _REGISTRY[name]


def names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def uses_prunable_model(config) -> bool:
  """Whether the model must be wrapped for pruning (tfmot `prune_low_magnitude`).

  Pruning algorithms, FedProx, and FedAvg with compression (built as
  FedSparsify with S_T = 0, whose client work finds the masks in the
  wrappers).
  """
  return isinstance(config, (configs.FedSparsifyConfig, configs.FedProxConfig)) or (
      isinstance(config, configs.FedAvgConfig) and config.compression.enabled)


# Mapping flat flag values to the configurations.

_OPTIMIZER_FIELDS = ('client_learning_rate', 'server_learning_rate')
_COMPRESSION_FIELDS = tuple(f.name for f in dataclasses.fields(configs.CompressionConfig))
_SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(configs.ScheduleConfig))


_PRUNEFL_FIELDS = ('readjust_every', 'readjust_ratio', 'readjust_halving_rounds',
                   'initial_reconfigurations')


def _pick(values: Mapping[str, Any], names) -> dict:
  return {name: values[name] for name in names if name in values}


def _optimizers(values) -> dict:
  picked = _pick(values, _OPTIMIZER_FIELDS)
  if values.get('client_momentum') is not None:  # None: the algorithm's default.
    picked['client_momentum'] = values['client_momentum']
  return picked


def _compression(values) -> configs.CompressionConfig:
  return configs.CompressionConfig(**_pick(values, _COMPRESSION_FIELDS))


def _fed_avg(config_class):
  def from_flags(values):
    return config_class(compression=_compression(values), **_optimizers(values))
  return from_flags


def _fed_prox(values) -> configs.FedProxConfig:
  # FedProxConfig holds no compression: FedProx messages are not compressed.
  # (The quantizer and its threshold matter only with quantize_bits.)
  for name in ('client_message_prune_rate', 'server_message_prune_rate', 'quantize_bits'):
    if values.get(name):
      raise validation.ConfigError(name, values[name], 'must be 0 for --algorithm=fedprox')
  if values.get('message_prune_target', 'model') != 'model':
    raise validation.ConfigError('message_prune_target', values['message_prune_target'],
                                 'must be model for --algorithm=fedprox')
  return configs.FedProxConfig(**_optimizers(values),
                               **_pick(values, ('proximal_strength',)))


def _fed_sparsify(mode: str = 'global', pruning_method: str = 'magnitude',
                  one_shot: bool = False):
  at_init = pruning_method in configs.AT_INITIALIZATION
  def from_flags(values):
    picked = _pick(values, _SCHEDULE_FIELDS)
    if (one_shot or at_init) and 'final_sparsity' in picked:  # --initial_sparsity unused.
      picked['initial_sparsity'] = picked['final_sparsity']
    if at_init:  # Pruned before round 1: --sparsify_start_round plays no part.
      picked['sparsify_start_round'] = 0
    schedule = configs.ScheduleConfig(**picked)
    if one_shot or at_init:  # S_0 = S_T: the whole sparsity at t_0 (F and n play no part).
      schedule = configs.ScheduleConfig.one_shot(
          schedule.final_sparsity, schedule.total_rounds,
          sparsify_start_round=schedule.sparsify_start_round)
    return configs.FedSparsifyConfig(
        compression=_compression(values), schedule=schedule,
        mode=mode, pruning_method=pruning_method,
        **_optimizers(values),
        **_pick(values, ('mask_aggregation', 'sparsity_placement', 'sparsity_granularity',
                         'channel_multiple', 'seed', *_PRUNEFL_FIELDS)))
  return from_flags


_BASELINES = 'tff_sparsify.learning.baselines'
_FED_SPARSIFY = 'tff_sparsify.learning.fed_sparsify:build_weighted_fed_sparsify'

register(Algorithm(
    'fedavg', configs.FedAvgConfig, f'{_BASELINES}:build_fed_avg',
    _fed_avg(configs.FedAvgConfig), prunes=False,
    description='FedAvg (no pruning)'))
register(Algorithm(
    'fedavg_momentum', configs.FedAvgMomentumConfig, f'{_BASELINES}:build_fed_avg',
    _fed_avg(configs.FedAvgMomentumConfig), prunes=False,
    description='MFL: FedAvg with client momentum (0.75)'))
register(Algorithm(
    'fedprox', configs.FedProxConfig, f'{_BASELINES}:build_fed_prox', _fed_prox,
    prunes=False, description='FedProx (proximal term, --proximal_strength)'))
register(Algorithm(
    'fedsparsify_global', configs.FedSparsifyConfig, _FED_SPARSIFY,
    _fed_sparsify('global'), prunes=True,
    description='FedSparsify-Global: the server prunes after aggregation'))
register(Algorithm(
    'fedsparsify_local', configs.FedSparsifyConfig, _FED_SPARSIFY,
    _fed_sparsify('local'), prunes=True,
    description='FedSparsify-Local: clients prune, masks merged by majority vote'))
register(Algorithm(
    'random_pruning', configs.FedSparsifyConfig, _FED_SPARSIFY,
    _fed_sparsify('global', 'random'), prunes=True,
    description='progressive random pruning (the paper\'s Random)'))
register(Algorithm(
    'oneshot_pruning', configs.FedSparsifyConfig, _FED_SPARSIFY,
    _fed_sparsify('global', one_shot=True), prunes=True,
    description='one-shot pruning to S_T at --sparsify_start_round'))
register(Algorithm(
    'snip', configs.FedSparsifyConfig, _FED_SPARSIFY,
    _fed_sparsify('global', 'snip'), prunes=True, scores_at_init=True,
    description='SNIP: |g w| of the initial model on one seeded client\'s batch, mask fixed'))
register(Algorithm(
    'grasp', configs.FedSparsifyConfig, _FED_SPARSIFY,
    _fed_sparsify('global', 'grasp'), prunes=True, scores_at_init=True,
    description='GraSP: -w Hg of the initial model on one seeded client\'s batch, mask fixed'))
register(Algorithm(
    'prunefl', configs.FedSparsifyConfig, _FED_SPARSIFY,
    _fed_sparsify('global', 'prunefl'), prunes=True, scores_at_init=True,
    description='PruneFL: initial pruning on one seeded client, readjusted every 50 rounds'))


def config_from_flags(values: Mapping[str, Any], name: Optional[str] = None):
  """The configuration of `values['algorithm']` (or `name`) from flat flag values."""
  return get(name or values['algorithm']).from_flags(values)


def build_from_config(train_config, client_data=None, *, structure_only: bool = False,
                      model_source=None, element_fn=None):
  """The learning process and Keras model of a training run.

  Args:
    train_config: the run's `config.TrainConfig` (`binaries/train.py` makes
      it from its flags and saves it as `config.json`).
    client_data: the clients' `tff.simulation.datasets.ClientData`; SNIP,
      GraSP and PruneFL score the initial model on one batch of one of them
      (`learning.saliency`). Other algorithms do not use it.
    structure_only: the process is wanted only for the structure of its
      state (to load a checkpoint into): SNIP and GraSP then skip the
      scoring, and the process's `initialize()` is not theirs.
    model_source: the run's `model_sources.ModelSource`; default: loaded
      from `train_config.model`.
    element_fn: what turns a `client_data` element into the model's
      (`simulation.data.RunData.element_fn`), for the scoring batch.

  Returns:
    (the learning process, a no-arg function building the matching Keras
    model, wrapped for pruning when the process needs it).
  """
  # pylint: disable=g-import-not-at-top  (TensorFlow)
  from tff_sparsify.learning import model_sources
  from tff_sparsify.learning import models
  # pylint: enable=g-import-not-at-top
  config = train_config.algorithm_config
  algorithm = get(train_config.algorithm)
  source = model_source or model_sources.load(train_config.model, train_config.dataset)
  prunable = uses_prunable_model(config)

  def keras_model_fn():
    return models.wrap_if(source.keras_model_fn(train_config.seed), prunable)

  model_fn = models.model_fn_from(keras_model_fn, source.loss_fn, source.metrics_fn)
  components = {}
  if algorithm.scores_at_init:
    components['initial_masks'] = _initial_masks(
        train_config, keras_model_fn, source.loss_fn, client_data, structure_only, element_fn)
  return algorithm.build(model_fn, config, **components), keras_model_fn


def _initial_masks(train_config, keras_model_fn, loss_fn, client_data, structure_only,
                   element_fn):
  # pylint: disable=g-import-not-at-top  (TensorFlow)
  import numpy as np
  from tff_sparsify.learning import pruning
  from tff_sparsify.learning import prunefl
  from tff_sparsify.learning import saliency
  model = keras_model_fn()  # The process's initial weights (same seed).
  if structure_only:
    return [np.ones(w.shape, np.float32) for w in pruning.prunable_weights(model)]
  if client_data is None:
    raise ValueError(f'--algorithm={train_config.algorithm} scores the initial model on '
                     'client data: pass client_data')
  config = train_config.algorithm_config
  scoring = dict(element_fn=element_fn) if element_fn is not None else {}
  if config.pruning_method == 'prunefl':
    x, y = saliency.scoring_batch(client_data, train_config.seed, **scoring)
    return prunefl.initial_masks(
        model, loss_fn(), x, y, sparsity=config.schedule.final_sparsity,
        reconfigurations=config.initial_reconfigurations, ratio=config.readjust_ratio,
        learning_rate=config.client_learning_rate,
        batch_size=train_config.client_batch_size)
  x, y = saliency.scoring_batch(client_data, train_config.seed, train_config.client_batch_size,
                                **scoring)
  return saliency.initial_masks(model, loss_fn(), x, y, method=config.pruning_method,
                                sparsity=config.schedule.final_sparsity)
