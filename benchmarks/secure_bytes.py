r"""Secure aggregation's bytes against sparsity: does a smaller model cut "encrypted communication"?

The FedSparsify paper says its smaller models cut the cost of encrypted
communication. This trains FedSparsify-Global to each `--sparsities` value
through the training binary, with `--secure_aggregation` and without, and
reads the last round's bytes per client from metrics.csv (S_0 = S_T: the
model is pruned to S_T after round 1 and the later rounds train under that
mask):

- secure sum as TFF runs it (`aggregator/.../bytes_uploaded`, measured by
  the secure-sum factory): every coordinate, 32 + ceil(log2 m) bits;
- secure sum of the kept coordinates only, which a mask known to the
  server allows (`client_work/communication/secure_sum_bytes_known_mask`,
  counted by the client work, not sent);
- the plain upload without secure aggregation (`client_work/communication/
  bytes_uploaded`: this package's encoder, the kept values only).

  python -m benchmarks.secure_bytes --output=benchmarks/results/secure_bytes.md
"""

import csv
import os
import tempfile

from absl import app
from absl import flags

from benchmarks import runs
COMMON = dict(dataset='fashion_mnist', partition='iid', num_clients=10, clients_per_round=10,
              total_rounds=3, client_epochs_per_round=1, seed=1990, progress=False,
              rounds_per_eval=3, algorithm='fedsparsify_global')

_OUTPUT = flags.DEFINE_string('output', None, 'Markdown file for the table.')
_SPARSITIES = flags.DEFINE_list('sparsities', ['0', '0.5', '0.9', '0.95'], 'S_T of the runs.')


def last_round(out: str, name: str, secure: bool, sparsity: str) -> dict:
  # S_0 = S_T: pruned to S_T after round 1, so the later rounds send at S_T.
  values = dict(COMMON, final_sparsity=sparsity, initial_sparsity=sparsity,
                root_output_dir=out, experiment_name=name, secure_aggregation=secure)
  runs.train(values, name)
  with open(os.path.join(out, 'results', name, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  return rows[-1]


def per_client(row: dict, suffix: str) -> float:
  """The round's bytes of the columns ending in `suffix` (not the totals), per client."""
  total = sum(float(v) for k, v in row.items()
              if k.endswith(suffix) and not k.startswith('cumulative/') and v)
  return total / COMMON['clients_per_round']


def main(argv):
  del argv
  lines = [
      '# Secure aggregation\'s bytes against sparsity (FashionMNIST, paper network)', '',
      '`python -m benchmarks.secure_bytes` (flags: `{}`); bytes per client in the last round '
      '(round {}, at S_T).'.format(' '.join(f'--{k}={v}' for k, v in COMMON.items()),
                                   COMMON['total_rounds']), '',
      '| S_T | non-zero parameters | secure sum, TFF (measured) | secure sum of the kept '
      'coordinates (counted) | plain upload, no secure aggregation (measured) | float32 dense |',
      '|---|---|---|---|---|---|']
  with tempfile.TemporaryDirectory() as out:
    for sparsity in _SPARSITIES.value:
      secure = last_round(out, f'secure_{sparsity}', True, sparsity)
      plain = last_round(out, f'plain_{sparsity}', False, sparsity)
      dense = 118282 * 4
      lines.append('| {} | {} | {:,.0f} | {:,.0f} | {:,.0f} | {:,} |'.format(
          sparsity, int(float(secure['client_work/communication/params_downloaded'])
                        / COMMON['clients_per_round']),
          per_client(secure, 'aggregator/mean_value/bytes_uploaded')
          + per_client(secure, 'aggregator/mean_weight/bytes_uploaded'),
          per_client(secure, 'secure_sum_bytes_known_mask'),
          per_client(plain, 'client_work/communication/bytes_uploaded'), dense))
      print(lines[-1], flush=True)
  runs.write_report(lines, _OUTPUT.value)


if __name__ == '__main__':
  app.run(main)
