"""Every byte on the wire counted once (issue 36): the process's byte metrics against NumPy.

Oracle: the NumPy encoders of `compression.codecs` (tested against their
own decoders and hand-computed lengths in `tests/test_codecs.py`) applied,
here, to what each message holds. The clients' examples are all zeros, so
the linear model's gradients are zero and every client trains back exactly
what it received: what each one sends is then known in NumPy from the
global weights and mask at the start of the round (the process's own, so
the count is checked round by round, not the training).

The options are combined over a covering grid: every pair of values of
(mode, quantizer, client message pruning, its target, server message
pruning) meets in at least one run (`covering_grid`; the full product is
48 runs of a few seconds each). A component that counts what another also
counts, or a message nobody counts, makes the sum differ.
"""

import itertools

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.test_fed_sparsify import LINEAR_LAYOUT
from tests.test_fed_sparsify import linear_model_fn
from tests.test_fed_sparsify import np_purge
from tff_sparsify import validation
from tff_sparsify.compression import codecs
from tff_sparsify.learning import configs
from tff_sparsify.learning import registry
from tff_sparsify.simulation import execution

SIZES = (4, 6, 2)
THRESHOLD = 4  # The 6-weight kernel is quantized where a quantizer is on.
BITS = 8
# Eq. 1 by hand, S_0 = 0.2, S_T = 0.5, T = 2, t_0 = 1: s_1 = S_0, s_2 = S_T.
SCHEDULE = configs.ScheduleConfig(0.5, 2, initial_sparsity=0.2)
SPARSITY = {1: 0.2, 2: 0.5}
OPTIONS = dict(mode=('global', 'local'), quantizer=(None, 'sparse', 'tff'),
               client_rate=(0.0, 0.5), target=('model', 'delta'), server_rate=(0.0, 0.4))


def compression(quantizer, client_rate, target, server_rate):
  return configs.CompressionConfig(
      client_message_prune_rate=client_rate, server_message_prune_rate=server_rate,
      quantize_bits=BITS if quantizer else 0, quantizer=quantizer or 'tff',
      quantize_threshold=THRESHOLD, message_prune_target=target)


def valid(combination) -> bool:
  try:
    compression(*list(combination.values())[1:])
  except validation.ConfigError:
    return False
  return True


def covering_grid():
  """Valid combinations of OPTIONS, picked greedily until every valid pair of values meets."""
  names = list(OPTIONS)
  combos = [dict(zip(names, values)) for values in itertools.product(*OPTIONS.values())]
  combos = [c for c in combos if valid(c)]

  def pairs(c):
    return {((a, c[a]), (b, c[b])) for a, b in itertools.combinations(names, 2)}

  wanted = set().union(*(pairs(c) for c in combos))
  chosen = []
  while wanted:
    best = max(combos, key=lambda c: len(pairs(c) & wanted))
    chosen.append(best)
    wanted -= pairs(best)
  return chosen


def nested_sum(metrics, name: str) -> int:
  """The sum of every metric called `name` in `metrics`, at any depth (as the training loop sums)."""
  if not isinstance(metrics, dict):
    return 0
  return sum(value if key == name and not isinstance(value, dict) else nested_sum(value, name)
             for key, value in metrics.items())


def encoded(x) -> int:
  return len(codecs.encode(np.asarray(x, np.float32) + 0.0, methods=codecs.METHODS))


def mask_size(m) -> int:
  return len(codecs.encode_mask(np.asarray(m) != 0, methods=codecs.METHODS))


def np_round_bytes(w, mask, s, mode, quantizer, client_rate, target, server_rate):
  """(downloaded, uploaded by the client work, uploaded by the aggregator) of one client."""
  del server_rate  # It shapes the next round's model, read from the process.
  kept = mask != 0
  sparse = BITS if quantizer == 'sparse' else 0
  # The broadcast: lossless, or the non-zero positions then their levels.
  nonzero = w != 0
  down = (mask_size(nonzero) + codecs.quantized_values_size(int(nonzero.sum()), sparse)
          if sparse else encoded(w))
  trained = w * mask  # Zero gradients: what the client received.
  received = trained
  send_positions = False
  sent = kept
  if mode == 'local':  # Its own mask, sent as positions inside the global one.
    client_mask = np_purge(trained, s) * mask
    trained = trained * client_mask
    sent, send_positions = client_mask != 0, True
  by_aggregator = quantizer == 'tff' or target == 'delta'
  if client_rate and target == 'model':
    trained = trained * np_purge(trained, client_rate)
    if sparse and mode == 'global':  # Only the non-zeros go, at positions sent.
      sent, send_positions = trained != 0, True
  up = mask_size(sent[kept]) if send_positions else 0
  if sparse and target == 'model':
    up += codecs.quantized_values_size(int(sent.sum()), sparse)
  elif not by_aggregator:
    up += encoded(trained[sent])
  aggregated = 0
  if quantizer == 'tff':  # TFF's encoder: every element of the quantized kernel.
    aggregated = codecs.quantized_size(w.size, BITS)
  elif target == 'delta':  # Top-k of the delta, then its positions and levels.
    delta = received - trained
    delta = delta * np_purge(delta, client_rate)
    present = delta != 0
    aggregated = (mask_size(present) + codecs.quantized_values_size(int(present.sum()), sparse)
                  if sparse else encoded(delta))
  return down, up, aggregated


class WireTest(tf.test.TestCase, parameterized.TestCase):

  def test_the_grid_covers_every_pair_and_is_smaller_than_the_product(self):
    grid = covering_grid()
    names = list(OPTIONS)
    for a, b in itertools.combinations(names, 2):
      for va, vb in itertools.product(OPTIONS[a], OPTIONS[b]):
        if any(valid(c) and c[a] == va and c[b] == vb
               for c in (dict(zip(names, v)) for v in itertools.product(*OPTIONS.values()))):
          self.assertTrue(any(c[a] == va and c[b] == vb for c in grid), (a, va, b, vb))
    self.assertLess(len(grid), 20)

  @parameterized.parameters(*covering_grid())
  def test_bytes_reported_equal_numpy_for(self, mode, quantizer, client_rate, target,
                                          server_rate):
    config = configs.FedSparsifyConfig(
        schedule=SCHEDULE, mode=mode,
        compression=compression(quantizer, client_rate, target, server_rate))
    process = registry.build_process(
        linear_model_fn(), config,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))
    datasets = [tf.data.Dataset.from_tensor_slices(dict(
        x=np.zeros((n, 3), np.float32), y=np.ones((n, 2), np.float32))).batch(2)
                for n in SIZES]
    with execution.local_cpp_execution_context():
      state = process.initialize()
      for round_num in (1, 2):
        weights = process.get_model_weights(state)
        w = np.asarray(weights.trainable[0])
        mask = np.asarray(LINEAR_LAYOUT.mask_list(weights.non_trainable)[0])
        output = process.next(state, datasets)
        state = output.state
        down, up, aggregated = np_round_bytes(
            w, mask, SPARSITY[round_num], mode, quantizer, client_rate, target, server_rate)
        metrics = output.metrics
        where = f'round {round_num}'
        self.assertEqual(metrics['distributor']['bytes_downloaded'], len(SIZES) * down, where)
        self.assertEqual(metrics['client_work']['communication']['bytes_uploaded'],
                         len(SIZES) * up, where)
        self.assertEqual(nested_sum(metrics['aggregator'], 'bytes_uploaded'),
                         len(SIZES) * aggregated, where)
        self.assertEqual(nested_sum(metrics, 'bytes_uploaded'), len(SIZES) * (up + aggregated))
    self.assertGreater(down + up + aggregated, 0)


if __name__ == '__main__':
  tf.test.main()
