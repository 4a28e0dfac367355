r"""Time to build a FedSparsify learning process, with upb and pure-Python protobuf.

TFF serializes every computation to protobuf while building a process; with
the pure-Python protobuf implementation that dominates. Each variant runs in
a fresh process (`PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION` must be set before
protobuf is imported) and builds the same process twice.

  python -m benchmarks.build_time

Prints one line per variant (first and second build, in seconds).
"""

import os
import sys
import time

from benchmarks import runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_twice():
  from google.protobuf.internal import api_implementation  # pylint: disable=g-import-not-at-top
  from tff_sparsify.learning import configs, models, registry  # pylint: disable=g-import-not-at-top,g-multiple-import
  from tff_sparsify.simulation import execution  # pylint: disable=g-import-not-at-top
  execution.drop_import_time_default_context()
  times = []
  for _ in range(2):
    start = time.perf_counter()
    registry.build_process(
        models.build_model_fn('fashion_mnist', prunable=True),
        configs.FedSparsifyConfig(schedule=configs.ScheduleConfig(0.9, 10)))
    times.append(time.perf_counter() - start)
  print(f'protobuf {api_implementation.Type()}: build {times[0]:.2f} s, '
        f'again {times[1]:.2f} s', flush=True)


def main():
  if len(sys.argv) > 1 and sys.argv[1] == '--child':
    _build_twice()
    return
  for implementation in ('upb', 'python'):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    if implementation == 'python':
      env['PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION'] = 'python'
    result = runs.call([sys.executable, '-m', 'benchmarks.build_time', '--child'],
                       cwd=REPO, env=env, capture_output=True, text=True, check=True)
    print([l for l in result.stdout.splitlines() if l.startswith('protobuf')][-1])


if __name__ == '__main__':
  main()
