"""Inference speed of an exported model on DeepSparse, ONNX Runtime, TFLite and TensorFlow.

The paper's method (Stripelis et al., Section 4, Tables 1-2): run batches
back to back for a fixed time budget after a warm-up (60 s and 10 s there),
batch 128 for CIFAR-10 and 32 for FashionMNIST, and report ms per batch,
iterations and items per second. Every runtime gets the same input batch.

DeepSparse (Neural Magic) needs an x86 CPU with AVX2/AVX-512 (or ARMv8.2) on
Linux, and its licence allows evaluation only; where it cannot run the result
says why in one line and the other runtimes still run. `NM_DISABLE_ANALYTICS`
is set before DeepSparse is imported. TFLite runs `tf.lite.Interpreter`
(with its default XNNPACK delegate) on the `.tflite` file beside the ONNX
one (`model.onnx` -> `model.tflite`, `model_int8.onnx` -> `model_int8.tflite`);
an INT8 TFLite model quantizes the float batch inside the timed call, as the
QDQ ONNX model does in its graph.
"""

import dataclasses
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

import numpy as np

from tff_sparsify.deploy import export_configs as configs
from tff_sparsify.deploy import input_layouts as layouts

DEFAULT_BATCH_SIZES = configs.DEFAULT_BATCH_SIZES
default_batch_size = configs.default_batch_size


class RuntimeUnavailable(RuntimeError):
  """A runtime that cannot run here; the message says why, in one line."""


@dataclasses.dataclass
class Timing:
  runtime: str
  batch_size: int
  iterations: int = 0
  seconds: float = 0.0
  ms_mean: float = float('nan')
  ms_median: float = float('nan')
  ms_p90: float = float('nan')
  ms_p99: float = float('nan')
  items_per_second: float = float('nan')
  unavailable: Optional[str] = None


def _deepsparse_unavailable(e: Exception) -> RuntimeUnavailable:
  """What DeepSparse raised (ImportError, unsupported CPU/OS, bad model), in one line."""
  first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
  return RuntimeUnavailable(f'deepsparse: {first_line}')


DEEPSPARSE_PROBE_SECONDS = 600
_PROBE = ('import sys, deepsparse; '
          'deepsparse.Engine(model=sys.argv[1], batch_size=int(sys.argv[2]), '
          'num_cores=int(sys.argv[3]) or None)')


def probe_deepsparse(onnx_path: str, batch_size: int, num_threads: Optional[int]):
  """Compiles the model with DeepSparse in a child process first.

  DeepSparse aborts its process (a failed C++ assertion, SIGABRT) on some
  graphs it cannot plan, which no `except` catches: the child takes that
  abort, and this raises `RuntimeUnavailable` naming the model instead.
  """
  env = dict(os.environ, NM_DISABLE_ANALYTICS='1')
  try:
    done = subprocess.run(
        [sys.executable, '-c', _PROBE, onnx_path, str(batch_size), str(num_threads or 0)],
        capture_output=True, text=True, timeout=DEEPSPARSE_PROBE_SECONDS, env=env,
        check=False)
  except subprocess.TimeoutExpired:
    raise RuntimeUnavailable(f'deepsparse: compiling {onnx_path} took over '
                             f'{DEEPSPARSE_PROBE_SECONDS} s') from None
  if done.returncode != 0:
    lines = [line for line in done.stderr.splitlines()
             if 'Assertion' in line or 'Error' in line] or done.stderr.splitlines()[-1:]
    why = lines[-1].strip() if lines else f'exit status {done.returncode}'
    raise RuntimeUnavailable(f'deepsparse: the engine failed compiling {onnx_path} '
                             f'(exit status {done.returncode}: {why})')


def _deepsparse_runner(onnx_path: str, batch_size: int, num_threads: Optional[int]):
  os.environ.setdefault('NM_DISABLE_ANALYTICS', '1')
  probe_deepsparse(onnx_path, batch_size, num_threads)
  try:
    import deepsparse  # pylint: disable=g-import-not-at-top
    engine = deepsparse.Engine(model=onnx_path, batch_size=batch_size,
                               num_cores=num_threads)
  except Exception as e:  # pylint: disable=broad-except
    raise _deepsparse_unavailable(e) from e
  return lambda x: engine.run([x])


def _onnxruntime_runner(onnx_path: str, num_threads: Optional[int]):
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  options = ort.SessionOptions()
  if num_threads:
    options.intra_op_num_threads = num_threads
  session = ort.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
  name = session.get_inputs()[0].name
  return lambda x: session.run(None, {name: x})


def _tensorflow_runner(saved_model_dir: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(saved_model_dir)
  serve = loaded.signatures['serving_default']
  name = list(serve.structured_input_signature[1])[0]
  return lambda x: serve(**{name: tf.constant(x)})


def _tflite_runner(tflite_path: str, num_threads: Optional[int], runtime: str = 'tensorflow'):
  from tff_sparsify.deploy import tflite  # pylint: disable=g-import-not-at-top
  # All cores, as the other runtimes: TFLite's own default (None) runs one
  # thread (measured: half the speed on 2 cores).
  return tflite.Model(tflite_path, num_threads=num_threads or os.cpu_count(), runtime=runtime)


@dataclasses.dataclass(frozen=True)
class Runtime:
  """One inference runtime.

  Attributes:
    name: the `--runtime` value.
    model_format: 'onnx' (takes the ONNX file, in its input layout),
      'saved_model' (takes the SavedModel directory, channels-last input) or
      'tflite' (the .tflite file beside the ONNX one, channels-last input).
    make_runner: (model path, batch size, threads or None) -> a callable
      running one batch; raises `RuntimeUnavailable` where it cannot run.
  """
  name: str
  model_format: str
  make_runner: Callable[[str, int, Optional[int]], Callable]


_REGISTRY: dict[str, Runtime] = {}


def register(runtime: Runtime):
  """Adds a runtime: a new one is a runner function and this call."""
  if runtime.name in _REGISTRY:
    raise ValueError(f'runtime {runtime.name!r} is already registered')
  _REGISTRY[runtime.name] = runtime


register(Runtime('deepsparse', 'onnx', _deepsparse_runner))
register(Runtime('onnxruntime', 'onnx',
                 lambda path, batch_size, threads: _onnxruntime_runner(path, threads)))
register(Runtime('tflite', 'tflite',  # TF 2.14's bundled interpreter (2023).
                 lambda path, batch_size, threads: _tflite_runner(path, threads)))
register(Runtime('litert', 'tflite',  # LiteRT 2 (ai-edge-litert), the maintained runtime.
                 lambda path, batch_size, threads: _tflite_runner(path, threads, 'litert')))
register(Runtime('tensorflow', 'saved_model',
                 lambda path, batch_size, threads: _tensorflow_runner(path)))
RUNTIMES = tuple(_REGISTRY)


def tflite_path(onnx_path: str) -> str:
  """The TFLite file an export wrote beside `onnx_path` (same name, .tflite)."""
  return os.path.splitext(onnx_path)[0] + '.tflite'


def build_runner(runtime: str, *, onnx_path: str, saved_model_dir: Optional[str],
                 batch_size: int, num_threads: Optional[int] = None) -> Callable:
  """A callable running one batch on `runtime`.

  Raises:
    ValueError: unknown runtime, a SavedModel runtime without a SavedModel,
      or TFLite without a .tflite file beside `onnx_path`.
    RuntimeUnavailable: the runtime cannot run here (DeepSparse).
  """
  if runtime not in _REGISTRY:
    raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')
  found = _REGISTRY[runtime]
  if found.model_format == 'saved_model':
    if not saved_model_dir:
      raise ValueError(f'{runtime} needs saved_model_dir, got None')
    return found.make_runner(saved_model_dir, batch_size, num_threads)
  if found.model_format == 'tflite':
    path = tflite_path(onnx_path)
    if not os.path.isfile(path):
      raise ValueError(f'{runtime} needs {path!r} beside the ONNX model (binaries/export '
                       '--formats=onnx,tflite writes it)')
    return found.make_runner(path, batch_size, num_threads)
  return found.make_runner(onnx_path, batch_size, num_threads)


def runtimes_for(onnx_path: str, saved_model_dir: Optional[str], runtimes=RUNTIMES) -> list:
  """Those of `runtimes` that have a file to run for the export at `onnx_path`.

  ONNX runtimes always; TFLite where the .tflite file is beside it;
  TensorFlow where there is a SavedModel and the ONNX model is not an INT8
  one (the SavedModel is the float model).
  """
  from tff_sparsify.deploy import onnx_int8  # pylint: disable=g-import-not-at-top
  import onnx  # pylint: disable=g-import-not-at-top
  int8 = onnx_int8.precision(onnx.load(onnx_path, load_external_data=False)) == 'int8'
  found = []
  for runtime in runtimes:
    model_format = _REGISTRY[runtime].model_format
    if (model_format == 'onnx'
        or (model_format == 'tflite' and os.path.isfile(tflite_path(onnx_path)))
        or (model_format == 'saved_model' and saved_model_dir and not int8)):
      found.append(runtime)
  return found


def model_format(runtime: str) -> str:
  """The file `runtime` runs: 'onnx', 'tflite' or 'saved_model'."""
  return _REGISTRY[runtime].model_format


def takes_onnx(runtime: str) -> bool:
  return model_format(runtime) == 'onnx'


def time_runner(run: Callable, batch: np.ndarray, *, budget_seconds: float,
                warmup_seconds: float, runtime: str = '') -> Timing:
  """Runs `run(batch)` for `warmup_seconds` untimed, then `budget_seconds`.

  The seconds are a `configs.TimingConfig`'s, checked there.
  """
  end = time.perf_counter() + warmup_seconds
  run(batch)  # At least one warm-up batch.
  while time.perf_counter() < end:
    run(batch)
  latencies = []
  start = time.perf_counter()
  end = start + budget_seconds
  while True:
    t = time.perf_counter()
    if t >= end and latencies:
      break
    run(batch)
    latencies.append(time.perf_counter() - t)
  seconds = time.perf_counter() - start
  ms = np.array(latencies) * 1e3
  return Timing(
      runtime=runtime, batch_size=len(batch), iterations=len(latencies), seconds=seconds,
      ms_mean=float(ms.mean()), ms_median=float(statistics.median(ms)),
      ms_p90=float(np.percentile(ms, 90)), ms_p99=float(np.percentile(ms, 99)),
      items_per_second=len(batch) * len(latencies) / seconds)


def time_in_turn(cases, config: configs.TimingConfig,
                 log: Optional[Callable[[int, int, Timing], None]] = None) -> list:
  """Times every case `config.repeats` times, going round all cases in turn.

  The machine's slow spells then fall on all cases alike; only the first
  repeat warms up. `cases` are `(runtime, runner or the one-line reason it
  cannot run, batch)`; `log(repeat, case index, timing)` is called after each.

  Returns:
    for each case, its `config.repeats` Timings (unavailable ones say why).
  """
  budget_seconds, warmup_seconds = config.budget_seconds, config.warmup_seconds
  found = [[] for _ in cases]
  for repeat in range(config.repeats):
    for i, (runtime, run, batch) in enumerate(cases):
      if isinstance(run, str):
        timing = Timing(runtime=runtime, batch_size=len(batch), unavailable=run)
      else:
        timing = time_runner(run, batch, budget_seconds=budget_seconds,
                             warmup_seconds=warmup_seconds if repeat == 0 else 0.0,
                             runtime=runtime)
      found[i].append(timing)
      if log:
        log(repeat, i, timing)
  return found


def median_timing(timings: list) -> Timing:
  """The repeat of median throughput (of an odd count; the upper middle otherwise)."""
  ordered = sorted(timings, key=lambda t: -t.items_per_second if not t.unavailable else 0)
  return ordered[len(ordered) // 2]


def make_batches(onnx_path: str, batch_size: int, input_shape: tuple, seed: int = 0):
  """(the Keras-layout batch, the same batch in the ONNX model's layout)."""
  batch = np.random.default_rng(seed).random((batch_size,) + tuple(input_shape), np.float32)
  nchw = layouts.onnx_input_layout(onnx_path) == 'NCHW'
  return batch, layouts.to_nchw(batch) if nchw else batch


def benchmark(onnx_path: str, config: configs.TimingConfig, *, input_shape: tuple,
              saved_model_dir: Optional[str] = None, runtimes=None,
              seed: int = 0) -> list[list[Timing]]:
  """Times the model on each runtime, on the same random batch, `config.repeats` times.

  `input_shape` is the Keras model's (channels last); the batch size is
  `config.batch_size`, or the paper's for that shape. A channels-first ONNX
  model (`layouts.onnx_input_layout`) gets the same batch transposed,
  untimed. `runtimes` defaults to every runtime with a file to run
  (`runtimes_for`).

  Returns:
    for each runtime, its Timings (`time_in_turn`; `median_timing` picks one).
  """
  batch_size = config.batch_size or default_batch_size(input_shape)
  batch, onnx_batch = make_batches(onnx_path, batch_size, input_shape, seed)
  if runtimes is None:
    runtimes = runtimes_for(onnx_path, saved_model_dir)
  cases = []
  for runtime in runtimes:
    try:
      run = build_runner(runtime, onnx_path=onnx_path, saved_model_dir=saved_model_dir,
                         batch_size=batch_size, num_threads=config.num_threads)
    except RuntimeUnavailable as e:
      run = str(e)
    cases.append((runtime, run, onnx_batch if takes_onnx(runtime) else batch))
  return time_in_turn(cases, config)


@dataclasses.dataclass
class LayerTime:
  """One fused kernel of DeepSparse's compiled graph and its mean time."""
  kernel: str  # DeepSparse's name, e.g. 'ks_convolution-94.9%_3', 'pyramid_1'.
  ops: str  # The ONNX/TF ops it runs, comma-separated.
  kernel_sparsity: float
  ms: float


def deepsparse_layer_profile(onnx_path: str, batch: np.ndarray, *, iterations: int = 20,
                             warmup_iterations: int = 5,
                             num_threads: Optional[int] = None) -> list[LayerTime]:
  """Mean time of each kernel DeepSparse compiled the model into.

  DeepSparse's own `DebugAnalysisEngine.analyze` (its per-layer profiler);
  its kernels fuse ops (a `pyramid` runs several convolutions and poolings
  in tiles), so a row can stand for several ONNX ops. Raises
  `RuntimeUnavailable` where DeepSparse cannot run.
  """
  if iterations < 1 or warmup_iterations < 0:
    raise ValueError(f'iterations must be >= 1 and warmup_iterations >= 0, got '
                     f'{iterations} and {warmup_iterations}')
  os.environ.setdefault('NM_DISABLE_ANALYTICS', '1')
  try:
    from deepsparse import engine as ds_engine  # pylint: disable=g-import-not-at-top
    analysis = ds_engine.DebugAnalysisEngine(
        model=onnx_path, batch_size=len(batch), num_cores=num_threads,
        num_iterations=iterations, num_warmup_iterations=warmup_iterations)
    found = analysis.analyze([batch])
  except Exception as e:  # pylint: disable=broad-except
    raise _deepsparse_unavailable(e) from e
  return [LayerTime(kernel=layer['name'], ops=str(layer.get('canonical_name', '')),
                    kernel_sparsity=float(layer.get('kernel_sparsity', 0.0)),
                    ms=float(layer['average_run_time_in_ms']))
          for layer in found['layer_info']]
