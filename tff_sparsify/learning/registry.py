"""The algorithms by name: one module each (`learning.algorithms`), listed here.

Pure Python: the algorithm modules load TensorFlow only when a process is
built, so that a binary checks its flags before TensorFlow loads. A new
algorithm is one module of `learning.algorithms` (its entry, `ALGORITHMS`,
and its rules) and one line in `MODULES`; `binaries/train.py --algorithm`
lists what is registered. See BUILD_NOTES.md, "Algorithm layer", for the
smallest example.
"""

from typing import Any, Mapping, Optional

from tff_sparsify import validation
from tff_sparsify.learning import configs
from tff_sparsify.learning.algorithms import base
from tff_sparsify.learning.algorithms import fedavg
from tff_sparsify.learning.algorithms import fedavg_momentum
from tff_sparsify.learning.algorithms import fedprox
from tff_sparsify.learning.algorithms import fedsparsify_global
from tff_sparsify.learning.algorithms import fedsparsify_local
from tff_sparsify.learning.algorithms import grasp
from tff_sparsify.learning.algorithms import oneshot_pruning
from tff_sparsify.learning.algorithms import prunefl
from tff_sparsify.learning.algorithms import random_pruning
from tff_sparsify.learning.algorithms import snip

Algorithm = base.Algorithm

# In `--algorithm`'s order.
MODULES = (fedavg, fedavg_momentum, fedprox, fedsparsify_global, fedsparsify_local,
           random_pruning, oneshot_pruning, snip, grasp, prunefl)

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


def for_config(config) -> Algorithm:
  """The first registered algorithm that takes `config` (its class and `accepts`)."""
  for algorithm in _REGISTRY.values():
    if type(config) is algorithm.config_class and algorithm.accepts(config):  # pylint: disable=unidiomatic-typecheck
      return algorithm
  raise TypeError(f'no registered algorithm takes {config!r}')


def build_process(model_fn, config, **components):
  """The learning process of `config`, by the algorithm that takes it (`for_config`)."""
  return for_config(config).build(model_fn, config, **components)


def uses_prunable_model(config) -> bool:
  """Whether the model must be wrapped for pruning (tfmot `prune_low_magnitude`).

  Pruning algorithms, FedProx, and FedAvg with compression (built on the
  generic process, whose client work finds the masks in the wrappers).
  """
  return isinstance(config, (configs.FedSparsifyConfig, fedprox.FedProxConfig)) or (
      isinstance(config, configs.FedAvgConfig) and config.compression.enabled)


for _module in MODULES:
  for _algorithm in _module.ALGORITHMS:
    register(_algorithm)


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
  model = keras_model_fn()  # The process's initial weights (same seed).
  if structure_only:
    return [np.ones(w.shape, np.float32) for w in pruning.prunable_weights(model)]
  if client_data is None:
    raise ValueError(f'--algorithm={train_config.algorithm} scores the initial model on '
                     'client data: pass client_data')
  scoring = dict(element_fn=element_fn) if element_fn is not None else {}
  return get(train_config.algorithm).initial_masks(
      train_config, model, loss_fn(), client_data, scoring)
