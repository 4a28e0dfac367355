"""Tests for tff_sparsify.simulation.training: the round loop's own pieces."""

import asyncio
import collections
import csv
import os

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.simulation import training


def _round(down, up, mbits):
  return collections.OrderedDict(
      distributor=collections.OrderedDict(bytes_downloaded=down),
      client_work=collections.OrderedDict(communication=collections.OrderedDict(
          bytes_uploaded=up, transmission_mbits=mbits)))


class CumulativeReleaseManagerTest(tf.test.TestCase):

  def _release(self, csv_path, rounds):
    """Releases `rounds` ({round: value}) through a new manager; returns what it passed on."""
    memory = tff.program.MemoryReleaseManager()
    csv_manager = tff.program.CSVFileReleaseManager(
        csv_path, key_fieldname='round_num', save_mode=tff.program.CSVSaveMode.WRITE)
    manager = training.CumulativeReleaseManager([csv_manager, memory], csv_path)
    loop = asyncio.new_event_loop()
    for key, value in rounds.items():
      loop.run_until_complete(manager.release(value, key))
    loop.close()
    return dict(memory.values())

  def test_totals_go_on_across_a_resume(self):
    csv_path = os.path.join(self.create_tempdir().full_path, 'metrics.csv')
    first = self._release(csv_path, {
        0: collections.OrderedDict(evaluation=collections.OrderedDict(accuracy=0.1)),
        1: _round(10, 3, 0.5), 2: _round(20, 5, 0.25)})
    self.assertNotIn('cumulative', first[0])  # Nothing to add up before round 1.
    self.assertEqual(dict(first[1]['cumulative']),
                     dict(bytes_downloaded=10, bytes_uploaded=3, transmission_mbits=0.5))
    self.assertEqual(dict(first[2]['cumulative']),
                     dict(bytes_downloaded=30, bytes_uploaded=8, transmission_mbits=0.75))
    # A new process resuming after round 2 starts from the CSV's totals.
    resumed = self._release(csv_path, {3: _round(7, 1, 0.125)})
    self.assertEqual(dict(resumed[3]['cumulative']),
                     dict(bytes_downloaded=37, bytes_uploaded=9, transmission_mbits=0.875))
    # Resuming from round 1's checkpoint redoes round 2: counted once, not twice.
    redone = self._release(csv_path, {2: _round(20, 5, 0.25)})
    self.assertEqual(redone[2]['cumulative']['bytes_downloaded'], 30)
    with open(csv_path, newline='') as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([r['round_num'] for r in rows], ['0', '1', '2'])
    self.assertEqual(rows[2]['cumulative/bytes_uploaded'], '8')


if __name__ == '__main__':
  tf.test.main()
