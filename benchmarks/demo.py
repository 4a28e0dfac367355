"""`make demo`: the product's main job, end to end, in a few minutes.

Trains FedSparsify-Global to S_T = 0.9, FedAvg and FedSparsify-Global at
channel granularity (half the units, exported compact) for the same
rounds on FashionMNIST (10 clients, 2 classes each), exports the final models
(SavedModel, ONNX and TFLite, float32 and INT8), times every file on the
runtimes present, and prints a short
summary: accuracy, sparsity and bytes exchanged against FedAvg, file sizes,
speed-ups, the file a device downloads (the smallest float32 and INT8 file,
gzip'd where smaller) with its accuracy and speed, whether the channel-pruned
model is both smaller and faster than FedAvg's on ONNX Runtime or LiteRT, and
where the outputs are. Everything goes through the binaries
(`python -m binaries.train|export|benchmark_inference`), as a user runs them;
a second `make demo` resumes or reuses what the first one wrote.

    python -m benchmarks.demo --output_dir=output/demo --rounds=20
"""

import argparse
import csv
import json
import os

from benchmarks import runs

TRAIN_FLAGS = dict(dataset='fashion_mnist', partition='non_iid', classes_per_client=2,
                   num_clients=10, clients_per_round=10, client_epochs_per_round=1,
                   client_batch_size=32, client_learning_rate=0.02, seed=1990,
                   progress='false')
# FedAvg runs as FedSparsify with S_T = 0 (the same algorithm, tested equal to
# TFF's FedAvg), so that its bytes are measured the same way.
# The channel run removes whole units (exported `--compact`): unstructured
# sparsity buys size but not speed on these runtimes (BUILD_NOTES, "LiteRT 2").
RUNS = {'fedsparsify_global_090': dict(algorithm='fedsparsify_global', final_sparsity=0.9),
        'fedavg': dict(algorithm='fedsparsify_global', final_sparsity=0.0),
        'fedsparsify_channel_050': dict(
            algorithm='fedsparsify_global', final_sparsity=0.5, sparsity_granularity='channel',
            sparsity_placement='uniform', channel_multiple=16)}
MAINTAINED = ('onnxruntime', 'litert')


def _last_row(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))[-1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--output_dir', default=os.path.join('output', 'demo'))
  parser.add_argument('--rounds', type=int, default=20)
  parser.add_argument('--budget_seconds', type=float, default=3.0)
  args = parser.parse_args()
  if args.rounds < 2:
    parser.error(f'--rounds={args.rounds}: must be >= 2 (FedSparsify prunes from round 1 to S_T '
                 'at the last)')
  out = os.path.abspath(args.output_dir)
  found = {}
  for name, flags in RUNS.items():
    runs.run_binary('train', dict(TRAIN_FLAGS, **flags, total_rounds=args.rounds,
                                  root_output_dir=out, experiment_name=name), 'demo')
    results = os.path.join(out, 'results', name)
    runs.run_binary('export', dict(run_dir=results, formats='onnx,tflite', int8=True,
                                   compact='sparsity_granularity' in flags), 'demo')
    with open(os.path.join(results, 'summary.json')) as f:
      summary = json.load(f)
    with open(os.path.join(results, 'export', 'export_report.json')) as f:
      report = json.load(f)
    found[name] = dict(summary=summary, report=report,
                       metrics=_last_row(os.path.join(results, 'metrics.csv')),
                       onnx=os.path.join(results, 'export', 'model.onnx'),
                       onnx_int8=os.path.join(results, 'export', 'model_int8.onnx'))
  timings = os.path.join(out, 'timings')
  paths = [r[key] for key in ('onnx', 'onnx_int8') for r in found.values()]
  runs.run_binary('benchmark_inference', dict(onnx=','.join(paths),
                                              budget_seconds=args.budget_seconds,
                                              warmup_seconds=1, output=timings), 'demo')
  with open(timings + '.json') as f:
    rows = json.load(f)
  speed = {(r['model'], r['runtime']): r['items_per_second'] for r in rows if not r['unavailable']}

  sparse, dense = found['fedsparsify_global_090'], found['fedavg']

  def total_mb(run):
    return (float(run['metrics']['cumulative/bytes_downloaded'])
            + float(run['metrics']['cumulative/bytes_uploaded'])) / 1e6

  print('\n# Demo summary (FashionMNIST, 10 non-IID clients, '
        f'{args.rounds} rounds x 1 epoch)\n')
  print(f'- test accuracy: FedSparsify-Global 0.9 {sparse["summary"]["test_accuracy"]:.4f}, '
        f'FedAvg {dense["summary"]["test_accuracy"]:.4f}')
  print(f'- sparsity of the prunable weights: {sparse["summary"]["sparsity"]:.4f}; non-zero '
        f'parameters {sparse["summary"]["nonzero_params"]:,} of {sparse["summary"]["total_params"]:,}')
  print(f'- bytes exchanged (downloads + uploads, all clients and rounds): FedSparsify '
        f'{total_mb(sparse):.1f} MB, FedAvg {total_mb(dense):.1f} MB '
        f'({total_mb(dense) / total_mb(sparse):.2f}x more)')
  print(f'- ONNX file: {sparse["report"]["onnx_bytes"]:,} bytes '
        f'({sparse["report"]["onnx_gzip_bytes"]:,} gzipped) against FedAvg\'s '
        f'{dense["report"]["onnx_bytes"]:,} ({dense["report"]["onnx_gzip_bytes"]:,} gzipped)')
  for f in sparse['report']['files']:
    print(f'- {os.path.basename(f["path"])}: {f["bytes"]:,} bytes ({f["gzip_bytes"]:,} gzipped), '
          f'test accuracy {f["test_accuracy"]:.4f}')
  print(f'- throughput, {args.budget_seconds:g} s each, one run (noisy; '
        '`benchmarks.inference_table` repeats them), against the dense float32 FedAvg model '
        'on the same runtime:')
  for runtime in ('onnxruntime', 'litert', 'tflite', 'tensorflow', 'deepsparse'):
    b = speed.get((dense['onnx'], runtime))
    if not b:
      print(f'  - {runtime}: not available here')
      continue
    shown = [f'{b:,.0f} items/s dense']
    for label, key, run in (('sparse', 'onnx', sparse), ('INT8 dense', 'onnx_int8', dense),
                            ('INT8 sparse', 'onnx_int8', sparse)):
      a = speed.get((run[key], runtime))
      if a:
        shown.append(f'{label} {a / b:.2f}x')
    print(f'  - {runtime}: ' + ', '.join(shown))
  for precision in ('float32', 'int8'):
    print(_download_line(precision, sparse, dense, speed))
  print(_smaller_and_faster(found['fedsparsify_channel_050'], dense, speed))
  print(f'- outputs: {out}/results/<run>/ (metrics.csv, summary.json, final_model.keras, '
        f'export/), {timings}.md')


def _smaller_and_faster(channel, dense, speed):
  """Lines: the channel run's model against FedAvg's, float32: download, speed on the
  maintained runtimes, accuracy, and whether it is both smaller and faster on one."""
  _, c_size, c_accuracy, _, _ = _download(channel, 'float32')
  _, d_size, d_accuracy, _, _ = _download(dense, 'float32')
  ratios = {r: speed[(channel['onnx'], r)] / speed[(dense['onnx'], r)] for r in MAINTAINED
            if speed.get((channel['onnx'], r)) and speed.get((dense['onnx'], r))}
  # One timing each: a ratio within 10% of 1 is not called faster.
  faster = [r for r, x in ratios.items() if x > 1.1 and d_size > c_size]
  lines = [
      f'- channel pruning ({RUNS["fedsparsify_channel_050"]["final_sparsity"]} of the units, '
      '--compact), float32: '
      f'{channel["report"]["total_params"]:,} parameters against '
      f'{dense["report"]["total_params"]:,}, download {c_size:,} bytes against {d_size:,} '
      f'({d_size / c_size:.1f}x smaller), test accuracy {c_accuracy:.4f} against '
      f'{d_accuracy:.4f}; speed against FedAvg\'s float32 model: ' + (', '.join(
          f'{r} {x:.2f}x' for r, x in ratios.items()) or 'not timed here')]
  if faster:
    lines.append(f'- smaller and faster (over 1.1x, one timing) than FedAvg\'s model on a '
                 'maintained runtime: yes '
                 f'({", ".join(faster)}), at {100 * (d_accuracy - c_accuracy):.2f} points of '
                 'test accuracy')
  else:
    lines.append('- smaller and faster than FedAvg\'s model on a maintained runtime: no (the '
                 'figures above)')
  return '\n'.join(lines)


def _download(run, precision):
  """(file, bytes shipped, test accuracy, its runtime, its timing key): the smallest file
  of `precision` a device downloads, each counted gzip'd where that is smaller."""
  report = run['report']
  onnx = run['onnx'] if precision == 'float32' else run['onnx_int8']
  found = []
  if precision == 'float32':
    found.append(('model.onnx', min(report['onnx_bytes'], report['onnx_gzip_bytes']),
                  report.get('onnx_test_accuracy'), 'onnxruntime', onnx))
  for f in report['files']:
    if f['precision'] == precision:
      runtime = 'litert' if f['format'] == 'tflite' else 'onnxruntime'
      found.append((os.path.basename(f['path']), min(f['bytes'], f['gzip_bytes']),
                    f['test_accuracy'], runtime, onnx))
  return min(found, key=lambda x: x[1])


def _download_line(precision, sparse, dense, speed):
  """One line: the download of each run at `precision`, its accuracy and speed, the ratios."""
  parts = []
  for label, run in (('FedSparsify', sparse), ('FedAvg', dense)):
    name, size, accuracy, runtime, key = _download(run, precision)
    rate = speed.get((key, runtime))
    parts.append((label, name, size, accuracy, runtime, rate))
  (_, _, s_size, _, s_runtime, s_rate), (_, _, d_size, _, d_runtime, d_rate) = parts
  text = '; '.join(
      f'{label} {name} {size:,} bytes, test accuracy {accuracy:.4f}, '
      + (f'{rate:,.0f} items/s on {runtime}' if rate else f'{runtime} not timed here')
      for label, name, size, accuracy, runtime, rate in parts)
  ratio = f': {d_size / s_size:.1f}x smaller'
  if s_rate and d_rate and s_runtime == d_runtime:
    ratio += f', {s_rate / d_rate:.2f}x the speed'
  return f'- the download, {precision} (smallest file, gzip\'d where smaller): {text}{ratio}'


if __name__ == '__main__':
  main()
