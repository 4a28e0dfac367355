"""Every non-public API of TFF (and of gRPC and protobuf under it) that this package uses.

Pinned against tensorflow-federated 0.87.0, grpcio 1.85.1 and protobuf
4.25.5. Nothing else in the package imports `tensorflow_federated.python` or touches a private member
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
  differential-privacy aggregators (adaptive clipping's noise split); the
  distributed-DP factory itself (`tff.learning.ddp_secure_aggregator`
  fixes its clip) and its scale heuristic, rounding-norm inflation and
  clip-probability helper (the parameters the guarantee is computed from);
  protobuf's (upb's) switch for messages nested deeper than 100 levels
  (`allow_deep_protos`), which that aggregator needs.
- `simulation/evaluation.py`: `build_fed_eval`'s client computation (each
  client's unfinalized metrics, returned per client in one call).
- `simulation/training.py`: the checkpoint directory and per-version path of
  `tff.program.FileProgramStateManager`.
"""

from typing import Any, Optional

from google._upb import _message as _upb_message
import tensorflow_federated as tff
# pylint: disable=g-direct-tensorflow-import,unused-import
from tensorflow_federated.python.aggregators import differential_privacy as _differential_privacy
from tensorflow_federated.python.aggregators import discretization as _discretization
from tensorflow_federated.python.aggregators import distributed_dp as _distributed_dp
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.impl.context_stack import context_base
from tensorflow_federated.python.core.impl.context_stack import set_default_context
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context as _mergeable
from tensorflow_federated.python.core.impl.executors import cardinalities_utils
from tensorflow_federated.python.core.impl.executors import executors_errors
from tensorflow_federated.python.core.impl.types import type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions
from tensorflow_federated.python.learning.algorithms import fed_eval as _fed_eval
# pylint: enable=g-direct-tensorflow-import,unused-import

PINNED = {'tensorflow-federated': '0.87.0', 'grpcio': '1.85.1', 'protobuf': '4.25.5'}

# TFF's nested values (`Struct`, `iter_elements`, `from_container`).
Struct = structure.Struct
iter_elements = structure.iter_elements
from_container = structure.from_container
# (value noise multiplier, clipped-count stddev) of `gaussian_adaptive` for a
# total noise multiplier: what TFF's adaptive clipping uses, not exported.
adaptive_clip_noise_params = _differential_privacy.adaptive_clip_noise_params
# Distributed DP: the factory `tff.learning.ddp_secure_aggregator` builds (not
# exported: the public function fixes an adaptive clip from 0.1), and
# `_build_aggregation_factory`'s parameters (eager TF).
DistributedDpSumFactory = _distributed_dp.DistributedDpSumFactory
ddp_clip_prob_to_num_stddevs = _distributed_dp._clip_prob_to_num_stddevs  # pylint: disable=protected-access
ddp_heuristic_scale_factor = _distributed_dp._heuristic_scale_factor  # pylint: disable=protected-access
DDP_MAX_SCALE_FACTOR = _distributed_dp.MAX_SCALE_FACTOR
inflated_l2_norm_bound = _discretization.inflated_l2_norm_bound

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


def local_evaluation(model_fn, model_weights_type, batch_type) -> tff.Computation:
  """`build_fed_eval`'s client computation: `(weights, batches) -> <local_outputs, num_examples>`.

  `local_outputs` are the model's unfinalized metrics on the batches, what
  `build_fed_eval` sums over clients (`SumThenFinalizeFactory`) before
  finalizing them.
  """
  return _fed_eval._build_local_evaluation(  # pylint: disable=protected-access
      model_fn, model_weights_type, batch_type, tff.learning.LoopImplementation.DATASET_REDUCE)


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


def allow_deep_protos():
  """Lets protobuf parse messages nested deeper than its limit of 100, from now on.

  TFF builds a computation's proto from its building blocks by parsing each
  part; TFF's distributed-DP aggregator (rotation, discretization, two
  modular clips, the secure sum) inside a mean, a learning process, the
  dataset composition and the replacement of its secure intrinsics by their
  bodies nests deeper than that, and upb refuses it ("Error parsing
  message") at several of those steps. upb's `SetAllowOversizeProtos(True)`
  lifts its depth limit (and its size limit) for the whole process: called
  only when that aggregator is built.
  """
  _upb_message.SetAllowOversizeProtos(True)
