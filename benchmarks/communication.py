r"""Bytes on the wire: message pruning (arXiv 2310.14693) and FedSparsify.

FashionMNIST, 10 clients all participating, batch 32, SGD lr 0.02, seed
1990, each configuration one run of `binaries/train.py` (resumable):

- `near_iid` (the setting of 2310.14693, Dirichlet alpha = 100): FedAvg, and
  FedAvg with message pruning at 0.3, 0.5 and 0.7 (clients and server), and
  0.5 stacked with TFF's 8-bit uniform quantization of the uploads;
- `non_iid` (FedSparsify's, 2 classes per client, its paper's 200 rounds):
  FedAvg, FedSparsify-Global and -Local (majority vote, masks travel) at 0.9,
  and Global 0.9 with 8-bit quantization, TFF's (uploads, dense) and ours
  (`--quantizer=sparse`: non-zero values, both directions).

FedAvg runs as FedSparsify-Global with S_T = 0, which equals TFF's FedAvg
(tests/test_fed_sparsify.py, to 1e-6), so that its bytes are measured by the
same client work. Bytes are the process's measurements
(`client_work/communication/bytes_*`: the smallest lossless non-zlib
encoding of `tff_sparsify.compression.codecs` per tensor, or TFF's quantized form).

Checks on each run's global model at its last checkpoint c (the message the
clients download in round c + 1):
- the process's `bytes_downloaded` of round c + 1 equals the length of
  the encoder's real output on those tensors (`codecs.encode`; with the sparse
  quantizer, `codecs.encode_mask` and `codecs.encode_quantized`), times the
  clients (within 1%);
- the lossless message (the whole model: n parameters, d the fraction of
  them kept) is within 1.1x the entropy bound 4 nnz + n H(d) / 8
  (`codecs.entropy_bound_bytes`); the worst single tensor is shown too (a
  10-element bias carries a 4-byte header the bound does not count).

  python -m benchmarks.communication                 # near-IID 50, non-IID 200 rounds, 1 epoch
  python -m benchmarks.communication --report_only   # tables from the runs

Results: benchmarks/results/communication.{csv,md,png}.
"""

import collections
import csv
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
# At module level: TF imported inside an absl main builds Keras models in v1
# mode (BUILD_NOTES.md), which load_checkpoint_model cannot use.
from benchmarks import runs  # pylint: disable=g-import-not-at-top
from tff_sparsify import files  # pylint: disable=g-import-not-at-top
from tff_sparsify.compression import codecs  # pylint: disable=g-import-not-at-top
from tff_sparsify.simulation import run_reader  # pylint: disable=g-import-not-at-top
from tff_sparsify.learning import models  # pylint: disable=g-import-not-at-top
from tff_sparsify.simulation import execution  # pylint: disable=g-import-not-at-top

# Before absl parses the flags: a flag it refuses exits at once, and TFF's
# import-time context would then print a traceback at shutdown.
execution.drop_import_time_default_context()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'benchmarks', 'results')
FEDAVG = dict(algorithm='fedsparsify_global', final_sparsity=0.0)
SETTINGS = collections.OrderedDict(
    near_iid=dict(partition='dirichlet', dirichlet_alpha=100.0),
    non_iid=dict(partition='non_iid', classes_per_client=2),
)
# Rounds per setting unless --total_rounds: FedSparsify's byte targets are
# for its paper's 200 rounds (Eq. 1 averages to 1/3.08 of the parameters).
DEFAULT_ROUNDS = dict(near_iid=50, non_iid=200)


def _prune(rate, **extra):
  return dict(algorithm='fedavg', client_message_prune_rate=rate,
              server_message_prune_rate=rate, **extra)


CONFIGS = collections.OrderedDict([
    (('near_iid', 'fedavg'), FEDAVG),
    (('near_iid', 'prune_0.3'), _prune(0.3)),
    (('near_iid', 'prune_0.5'), _prune(0.5)),
    (('near_iid', 'prune_0.7'), _prune(0.7)),
    (('near_iid', 'prune_0.5_q8'), _prune(0.5, quantize_bits=8)),
    # Top-k of the update in the aggregator (SparseDeltaMeanFactory), not of the model.
    (('near_iid', 'prune_delta_0.5'), _prune(0.5, message_prune_target='delta')),
    (('non_iid', 'fedavg'), FEDAVG),
    (('non_iid', 'global_0.9'), dict(algorithm='fedsparsify_global', final_sparsity=0.9)),
    (('non_iid', 'local_0.9'), dict(algorithm='fedsparsify_local', final_sparsity=0.9)),
    (('non_iid', 'global_0.9_q8'),
     dict(algorithm='fedsparsify_global', final_sparsity=0.9, quantize_bits=8)),
    (('non_iid', 'global_0.9_q8_sparse'),
     dict(algorithm='fedsparsify_global', final_sparsity=0.9, quantize_bits=8,
          quantizer='sparse')),
    # Every kernel quantized (the 128x128 and 128x10 ones too), biases lossless.
    (('non_iid', 'global_0.9_q8_sparse_kernels'),
     dict(algorithm='fedsparsify_global', final_sparsity=0.9, quantize_bits=8,
          quantizer='sparse', quantize_threshold=1000)),
])
COMMON_FLAGS = dict(
    dataset='fashion_mnist', num_clients=10, clients_per_round=10,
    client_batch_size=32, client_learning_rate=0.02, seed=1990,
    rounds_per_eval=1, rounds_per_checkpoint=5, progress=False)
CLIENTS = COMMON_FLAGS['clients_per_round']
LAST_ROUNDS = 10
MB = 1e6

_TOTAL_ROUNDS = flags.DEFINE_integer(
    'total_rounds', None, f'Rounds per run; default per setting: {DEFAULT_ROUNDS}.')
_EPOCHS = flags.DEFINE_integer('client_epochs_per_round', 1, 'Local epochs.')
_WORK_DIR = flags.DEFINE_string(
    'work_dir', os.path.join(REPO, 'output', 'communication'),
    'root_output_dir of the runs (checkpoints for resuming).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'FashionMNIST IDX directory.')
_CONFIGS = flags.DEFINE_list(
    'configs', None, 'Subset, as setting/config: '
    f'{[f"{s}/{c}" for s, c in CONFIGS]}; default: all.')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(RESULTS, 'communication'),
    'Output path prefix (.csv, .md and .png are appended).')
_SEEDS = flags.DEFINE_list(
    'seeds', ['1990'], 'Seeds (data partition, model init, sampling); with several, '
    'each configuration runs once per seed and the targets use the mean over seeds.')
_REPORT_ONLY = flags.DEFINE_bool(
    'report_only', False, 'Do not train; report the runs found in --work_dir.')


def _rounds(key):
  return _TOTAL_ROUNDS.value or DEFAULT_ROUNDS[key[0]]


def _experiment(key):
  """`key`: (setting, config, seed)."""
  setting, config, seed = key
  suffix = '' if seed == COMMON_FLAGS['seed'] else f'_s{seed}'
  return f'{setting}_{config}_{_rounds(key)}x{_EPOCHS.value}{suffix}'


def _run(key):
  argv = dict(COMMON_FLAGS, **SETTINGS[key[0]], **CONFIGS[key[:2]], seed=key[2],
              total_rounds=_rounds(key),
              client_epochs_per_round=_EPOCHS.value,
              root_output_dir=_WORK_DIR.value, experiment_name=_experiment(key))
  if _DATA_DIR.value:
    argv['data_dir'] = _DATA_DIR.value
  command = [sys.executable, '-m', 'binaries.train'] + [f'--{k}={v}' for k, v in argv.items()]
  os.makedirs(_WORK_DIR.value, exist_ok=True)
  print(f'[{time.strftime("%H:%M:%S")}] {key}: {" ".join(command[1:])}', flush=True)
  with open(os.path.join(_WORK_DIR.value, _experiment(key) + '.log'), 'a') as f:
    runs.call(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True)


def _read(key):
  path = os.path.join(_WORK_DIR.value, 'results', _experiment(key), 'metrics.csv')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [r for r in csv.DictReader(f) if int(r['round_num']) >= 1]
  rows.sort(key=lambda r: int(r['round_num']))
  if not rows or int(rows[-1]['round_num']) < _rounds(key):
    return None
  return rows[:_rounds(key)]


def _column(rows, name, cast=float):
  """Per round, the sum of the metrics named `name` (bytes_uploaded: the client
  work's and, with TFF's quantizer, the aggregator's), cumulative totals aside."""
  paths = [p for p in rows[0] if p.rsplit('/', 1)[-1] == name and not p.startswith('cumulative/')]
  return [sum(cast(r[p]) for p in paths if r[p] not in ('', None)) for r in rows]


def _summarize(key, rows):
  accuracy = [float(r['evaluation/accuracy']) for r in rows]
  up = np.cumsum(_column(rows, 'bytes_uploaded', int)) / MB
  down = np.cumsum(_column(rows, 'bytes_downloaded', int)) / MB
  return collections.OrderedDict(
      setting=key[0], config=key[1], seed=key[2], final_accuracy=round(accuracy[-1], 4),
      mean_accuracy_last_10=round(statistics.mean(accuracy[-LAST_ROUNDS:]), 4),
      mb_uploaded=round(float(up[-1]), 2), mb_downloaded=round(float(down[-1]), 2),
      mb_total=round(float(up[-1] + down[-1]), 2),
      params_exchanged_millions=round(sum(
          a + b for a, b in zip(_column(rows, 'params_downloaded', int),
                                _column(rows, 'params_uploaded', int))) / 1e6, 2),
      sparsity=round(float(rows[-1]['finalizer/sparsity']), 4),
      mb_bound=_bound_mb(key, rows))


def _bound_mb(key, rows):
  """The issue's entropy bound summed over the run, in MB, or None.

  Every download is a whole model (n parameters, nnz of them non-zero):
  4 nnz + n H(nnz / n) / 8 bytes. An upload of global mode or FedAvg lies
  inside the mask the server sent, so its positions need no bytes: 4 nnz.
  It is the length of float32 values plus positions drawn independently at
  the model's density; per-tensor densities (concavity of H) or structured
  masks can come in a little under it. Other configurations (local masks,
  message pruning, quantization) are left out.
  """
  config = CONFIGS[key[:2]]
  if (config.get('quantize_bits') or config.get('client_message_prune_rate')
      or config['algorithm'] != 'fedsparsify_global'):
    return None
  n = models.create_model('fashion_mnist').count_params()
  nnz_down = np.array(_column(rows, 'params_downloaded', int), np.float64) / CLIENTS
  down = CLIENTS * codecs.bound_bytes(n, nnz_down)
  up = 4 * np.array(_column(rows, 'params_uploaded', int), np.float64)
  return round(float(np.sum(down) + np.sum(up)) / MB, 2)


def _message_bytes(tensors, config):
  """Lengths of the encoder's real output for the broadcast of `tensors`."""
  bits = config.get('quantize_bits', 0) if config.get('quantizer') == 'sparse' else 0
  threshold = config.get('quantize_threshold', codecs.QUANTIZATION_THRESHOLD)
  total = 0
  for t in tensors:
    if bits and t.size > threshold:  # As the client work's.
      present = t != 0
      total += len(codecs.encode_mask(present, methods=codecs.METHODS)) + len(
          codecs.encode_quantized(*codecs.quantize(t[present], bits), bits))
    else:
      total += len(codecs.encode(t, methods=codecs.METHODS))
  return total


def _check_bytes(key, rows):
  """Process bytes vs the encoder's output, and the entropy bound (module doc)."""
  every = COMMON_FLAGS['rounds_per_checkpoint']
  checkpoint = (_rounds(key) - 1) // every * every
  if checkpoint < 1:
    return None
  path = os.path.join(_WORK_DIR.value, 'checkpoints', _experiment(key),
                      f'program_state_{checkpoint}')
  tensors = [w.numpy() for w in run_reader.load_checkpoint_model(path).trainable_weights]
  config = CONFIGS[key[:2]]
  encoded = _message_bytes(tensors, config)
  reported = int(rows[checkpoint]['distributor/bytes_downloaded'])
  lossless = not config.get('quantize_bits')
  ratios = [len(codecs.encode(t, methods=codecs.METHODS)) / codecs.entropy_bound_bytes([t])
            for t in tensors if codecs.entropy_bound_bytes([t]) > 0]
  return collections.OrderedDict(
      setting=key[0], config=key[1], seed=key[2], round=checkpoint + 1,
      reported_bytes_downloaded=reported, encoder_bytes_times_clients=CLIENTS * encoded,
      reported_over_encoder=round(reported / (CLIENTS * encoded), 5),
      worst_tensor_over_entropy_bound=round(max(ratios), 4) if lossless else None,
      model_over_entropy_bound=round(encoded / codecs.entropy_bound_bytes(tensors), 4)
      if lossless else None)


def _mb_to_reach(rows, target):
  total = np.cumsum(np.add(_column(rows, 'bytes_uploaded', int),
                           _column(rows, 'bytes_downloaded', int))) / MB
  for accuracy, mb in zip((float(r['evaluation/accuracy']) for r in rows), total):
    if accuracy >= target:
      return round(float(mb), 2)
  return None


def _plot(histories):
  settings = [s for s in SETTINGS if any(k[0] == s for k in histories)]
  fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4), squeeze=False)
  for ax, setting in zip(axes[0], settings):
    for (s, config, seed), rows in histories.items():
      if s != setting:
        continue
      label = config if len(_SEEDS.value) == 1 else f'{config} seed {seed}'
      total = np.cumsum(np.add(_column(rows, 'bytes_uploaded', int),
                               _column(rows, 'bytes_downloaded', int))) / MB
      ax.plot(total, [float(r['evaluation/accuracy']) for r in rows], label=label)
    ax.set_xscale('log')
    ax.set_xlabel('cumulative MB (uploads + downloads)')
    ax.set_ylabel('test accuracy')
    ax.set_title(f'FashionMNIST {setting}, 10 clients')
    ax.legend()
  fig.tight_layout()
  fig.savefig(_OUTPUT.value + '.png', dpi=120)


def _targets(by_key, checks, seeds):
  lines = []
  fedavg, pruned = by_key.get(('near_iid', 'fedavg')), by_key.get(('near_iid', 'prune_0.5'))
  if fedavg and pruned:
    loss = fedavg['mean_accuracy_last_10'] - pruned['mean_accuracy_last_10']
    cut = 1 - pruned['mb_uploaded'] / fedavg['mb_uploaded']
    lines.append(
        f'- near_iid prune_0.5 loses under 1 point (mean of last {LAST_ROUNDS} '
        f'rounds{", mean over the seeds" if len(seeds) > 1 else ""}) and cuts '
        f'upload bytes by at least 45%: loses {loss * 100:.2f} '
        f'points, cuts {cut * 100:.1f}%: {"met" if loss < 0.01 and cut >= 0.45 else "NOT met"}')
  fedavg = by_key.get(('non_iid', 'fedavg'))
  for config, limit in (('global_0.9', 3), ('global_0.9_q8', 10), ('global_0.9_q8_sparse', 10),
                        ('global_0.9_q8_sparse_kernels', 10)):
    if fedavg and (('non_iid', config) in by_key):
      ratio = fedavg['mb_total'] / by_key[('non_iid', config)]['mb_total']
      lines.append(f'- non_iid {config}: cumulative bytes at most 1/{limit} of FedAvg\'s: '
                   f'1/{ratio:.2f}: {"met" if ratio >= limit else "NOT met"}')
      bound = by_key[('non_iid', config)].get('mb_bound')
      if bound and fedavg.get('mb_bound'):
        values = 4 * by_key[('non_iid', config)]['params_exchanged_millions']
        lines.append(
            f'  - at the issue\'s bound summed over the run (`mb_bound`: 4 nnz + n H(d) / 8 '
            f'per download, 4 nnz per upload; FedAvg\'s likewise): '
            f'1/{fedavg["mb_bound"] / bound:.3f}; the float32 values alone (4 bytes per '
            f'non-zero exchanged): 1/{fedavg["mb_bound"] / values:.3f}, so 1/3 leaves '
            f'{fedavg["mb_bound"] / 3 - values:.1f} MB for every position of the run, '
            f'against {bound - values:.1f} MB at the bound')
  lossless = [c for c in checks if c['model_over_entropy_bound'] is not None]
  if lossless:
    worst = max(c['model_over_entropy_bound'] for c in lossless)
    lines.append(f'- every lossless message (the model) within 1.1x the entropy bound: '
                 f'worst {worst:.4f}x: {"met" if worst <= 1.1 else "NOT met"} (worst '
                 f'single tensor {max(c["worst_tensor_over_entropy_bound"] for c in lossless):.4f}x)')
  if checks:
    off = max(abs(c['reported_over_encoder'] - 1) for c in checks)
    lines.append(f'- process bytes equal the encoder\'s output within 1%: worst '
                 f'{off * 100:.3f}% off: {"met" if off <= 0.01 else "NOT met"}')
  return lines


def _table(rows):
  return files.markdown_table(list(rows[0]), rows)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  for holder in (_TOTAL_ROUNDS, _EPOCHS):
    if holder.value is not None and holder.value < 1:
      raise app.UsageError(f'--{holder.name} must be >= 1, got {holder.value}')
  try:
    seeds = [int(x) for x in _SEEDS.value]
  except ValueError:
    raise app.UsageError(f'--seeds must be integers, got {_SEEDS.value}') from None
  if not seeds:
    raise app.UsageError('--seeds: give at least one seed')
  keys = list(CONFIGS)
  if _CONFIGS.value:
    keys = [tuple(c.split('/', 1)) for c in _CONFIGS.value]
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown:
      raise app.UsageError(f'--configs: unknown {["/".join(k) for k in unknown]}; '
                           f'allowed: {["/".join(k) for k in CONFIGS]}')
  keys = [k + (seed,) for k in keys for seed in seeds]
  for key in keys:
    if not _REPORT_ONLY.value and _read(key) is None:
      _run(key)
  histories = collections.OrderedDict((k, _read(k)) for k in keys)
  histories = collections.OrderedDict((k, h) for k, h in histories.items() if h)
  if not histories:
    raise app.UsageError(f'no finished runs in {_WORK_DIR.value}')
  summaries = [_summarize(k, h) for k, h in histories.items()]
  by_run = {(s['setting'], s['config'], s['seed']): s for s in summaries}
  for s in summaries:
    base = by_run.get((s['setting'], 'fedavg', s['seed']))
    s['total_vs_fedavg'] = round(s['mb_total'] / base['mb_total'], 4) if base else None
    s['mb_to_95pct_of_fedavg_final'] = _mb_to_reach(
        histories[(s['setting'], s['config'], s['seed'])],
        0.95 * base['final_accuracy']) if base else None
  # The targets read the mean over the seeds each configuration finished.
  by_key = {}
  for s in summaries:
    by_key.setdefault((s['setting'], s['config']), []).append(s)
  by_key = {k: {f: statistics.mean(r[f] for r in v) if all(
      r[f] is not None for r in v) else None for f in
                ('mean_accuracy_last_10', 'mb_uploaded', 'mb_total', 'mb_bound',
                 'params_exchanged_millions')}
            for k, v in by_key.items()}
  checks = [c for c in (_check_bytes(k, h) for k, h in histories.items()
                        if CONFIGS[k[:2]].get('quantizer', 'tff') == 'sparse'
                        or not CONFIGS[k[:2]].get('quantize_bits')) if c]
  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  stem = _OUTPUT.value
  with open(stem + '.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(summaries[0]))
    writer.writeheader()
    writer.writerows(summaries)
  _plot(histories)
  command = ('python -m benchmarks.communication' + (
      f' --total_rounds={_TOTAL_ROUNDS.value}' if _TOTAL_ROUNDS.value else '') +
             f' --client_epochs_per_round={_EPOCHS.value}' + (
                 f' --seeds={",".join(_SEEDS.value)}' if _SEEDS.value != _SEEDS.default else '') + (
                 f' --configs={",".join(_CONFIGS.value)}' if _CONFIGS.value else '') + (
                 f' --output={os.path.relpath(_OUTPUT.value, REPO)}'
                 if _OUTPUT.value != _OUTPUT.default else ''))
  rounds = ', '.join(sorted({f'{k[0]} {_rounds(k)}' for k in histories}))
  lines = [
      '# Communication: measured bytes, FashionMNIST', '', f'Command: `{command}`', '',
      f'Settings: rounds {rounds}, {_EPOCHS.value} local epochs; ' + ', '.join(
          f'{k}={v}' for k, v in COMMON_FLAGS.items() if k != 'progress') +
      f'; near_iid: {SETTINGS["near_iid"]}; non_iid: {SETTINGS["non_iid"]}. '
      f'Machine: {platform.machine()}, {os.cpu_count()} CPUs.', '',
      'MB are 10^6 bytes summed over all clients and rounds; `_q8`: 8-bit TFF '
      'quantization of the uploads (tensors over 20000 elements, counted as TFF '
      'encodes them: every element, zeros included, and the other tensors as they '
      'are, 4 bytes an element; downloads not quantized); '
      '`_q8_sparse`: this package\'s 8-bit quantization of the non-zero values '
      'of the same tensors, uploads and downloads (positions as a mask message '
      'where the receiver does not know them); `_kernels`: of every kernel '
      '(threshold 1000 elements; the biases stay lossless).', '',
      *_table(summaries), '',
      'Checks on the global model of the last checkpoint (downloaded in the next round):', '',
      *(_table(checks) if checks else ['(no checkpoint)']), '',
      'Targets:', *_targets(by_key, checks, seeds),
  ]
  with open(stem + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
