"""Every non-public API of TensorFlow Federated (and of gRPC under it) that this package uses.

Pinned against tensorflow-federated 0.87.0 and grpcio 1.85.1. Nothing else in
the package imports `tensorflow_federated.python` or touches a private member
of TFF or gRPC; `tests/test_internals.py` pins each behaviour relied on, so
that when the stack moves, this file and that test say what broke. Who uses
what:

- `simulation/execution.py` (several workers merged in shard order, clients
  cut by silo): TFF's mergeable-comp context and compiler, its `structure`,
  type utilities, cardinality inference, retryable gRPC errors, the
  context-stack default; gRPC's connectivity polling state.
- `learning/client_work.py`, `learning/pruning_layout.py`: the Keras model inside a
  `tff.learning.models.from_keras_model` model.
- `learning/dp_aggregation.py`: `adaptive_clip_noise_params` of TFF's
  differential-privacy aggregators (adaptive clipping's noise split).
- `simulation/training.py`: the checkpoint directory and per-version path of
  `tff.program.FileProgramStateManager`.
"""

from typing import Any, Optional

import tensorflow_federated as tff
# pylint: disable=g-direct-tensorflow-import,unused-import
from tensorflow_federated.python.aggregators import differential_privacy as _differential_privacy
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.impl.context_stack import context_base
from tensorflow_federated.python.core.impl.context_stack import set_default_context
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context as _mergeable
from tensorflow_federated.python.core.impl.executors import cardinalities_utils
from tensorflow_federated.python.core.impl.executors import executors_errors
from tensorflow_federated.python.core.impl.types import type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions
# pylint: enable=g-direct-tensorflow-import,unused-import

PINNED = {'tensorflow-federated': '0.87.0', 'grpcio': '1.85.1'}

# TFF's nested values (`Struct`, `iter_elements`, `from_container`).
Struct = structure.Struct
iter_elements = structure.iter_elements
from_container = structure.from_container
# (value noise multiplier, clipped-count stddev) of `gaussian_adaptive` for a
# total noise multiplier: what TFF's adaptive clipping uses, not exported.
adaptive_clip_noise_params = _differential_privacy.adaptive_clip_noise_params

# The async context one worker's sync context runs behind.
AsyncContext = context_base.AsyncContext

# The mergeable-comp form and context (TFF's multi-worker runtime).
MergeableCompForm = _mergeable.MergeableCompForm
MergeableCompExecutionContext = _mergeable.MergeableCompExecutionContext
MergeableCompExecutionContextValue = _mergeable.MergeableCompExecutionContextValue
compile_to_mergeable_comp_form = mergeable_comp_compiler.compile_to_mergeable_comp_form

infer_cardinalities = cardinalities_utils.infer_cardinalities
contains_only = type_analysis.contains_only
type_to_py_container = type_conversions.type_to_py_container

RetryableError = executors_errors.RetryableError
RetryableGRPCError = executors_errors.RetryableGRPCError
grpc_retryable_error_codes = executors_errors.get_grpc_retryable_error_codes


def repackage_partitioned_values(results, result_type_spec):
  """TFF's `_repackage_partitioned_values`: per-worker results of `after_merge` joined."""
  return _mergeable._repackage_partitioned_values(  # pylint: disable=protected-access
      results, result_type_spec=result_type_spec)


def compile_in(context: MergeableCompExecutionContext, comp) -> MergeableCompForm:
  """`comp` through the context's own compiler pipeline (its `compiler_fn`, cached)."""
  return context._compiler_pipeline.compile(comp)  # pylint: disable=protected-access


def run_coroutine(context: MergeableCompExecutionContext, coroutine) -> Any:
  """Runs `coroutine` on the context's own event-loop runner; its result."""
  return context._async_runner.run_coro_and_return_result(coroutine)  # pylint: disable=protected-access


def set_no_default_context():
  """Removes the C++ context `import tensorflow_federated` installs."""
  set_default_context.set_no_default_context()


def keras_model_of(model: tff.learning.models.VariableModel) -> Optional[Any]:
  """The Keras model inside a `from_keras_model` model (None for other models)."""
  return getattr(model, '_keras_model', None)


def checkpoint_root(manager: tff.program.FileProgramStateManager) -> str:
  """The directory a `FileProgramStateManager` writes its versions into."""
  return manager._root_dir  # pylint: disable=protected-access


def checkpoint_path(manager: tff.program.FileProgramStateManager, version: int) -> str:
  """The directory of one saved version (`{root}/{prefix}{version}`)."""
  return manager._get_path_for_version(version)  # pylint: disable=protected-access


def channel_polling(channel) -> bool:
  """Whether gRPC's connectivity polling thread of `channel` still runs."""
  state = getattr(channel, '_connectivity_state', None)
  return bool(getattr(state, 'polling', False))
