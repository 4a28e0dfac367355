"""What of benchmarks/paper.py's grid outlives a session's disk: archived metrics and packs."""

import csv
import os

import pytest

from benchmarks import paper_grid as grid
from benchmarks import paper_report

RUN = grid.Run('shards10', 'global_0.9', 3, 1, grid.PAPER_SEED)
FIELDS = ['round_num', 'evaluation/accuracy', 'finalizer/nonzero_params', 'finalizer/sparsity',
          'client_work/communication/params_downloaded',
          'client_work/communication/params_uploaded',
          'client_work/communication/transmission_mbits', 'cumulative/bytes_uploaded',
          'cumulative/bytes_downloaded']


@pytest.fixture
def dirs(tmp_path, monkeypatch):
  results = tmp_path / 'results_paper'
  monkeypatch.setattr(grid, 'RESULTS', str(results))
  monkeypatch.setattr(grid, 'ARCHIVE', str(results / 'metrics'))
  monkeypatch.setattr(grid, 'IN_PROGRESS', str(results / 'in_progress'))
  return tmp_path / 'work', results


def _write_metrics(work_dir, rounds):
  path = work_dir / 'results' / RUN.name / 'metrics.csv'
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    writer.writeheader()
    for r in range(rounds + 1):
      writer.writerow({'round_num': r, 'evaluation/accuracy': 0.5 + r / 10,
                       'finalizer/nonzero_params': 1000 - r, 'finalizer/sparsity': r / 10,
                       'client_work/communication/params_downloaded': 10,
                       'client_work/communication/params_uploaded': 20,
                       'client_work/communication/transmission_mbits': 1.5,
                       'cumulative/bytes_uploaded': 1e6 * r,
                       'cumulative/bytes_downloaded': 2e6 * r})


def test_finished_metrics_are_archived_and_read_back_without_the_work_dir(dirs):
  work_dir, results = dirs
  _write_metrics(work_dir, 2)
  assert not grid.archive(str(work_dir), RUN)  # 2 of 3 rounds: not finished
  assert not (results / 'metrics').exists()
  _write_metrics(work_dir, 3)
  assert grid.archive(str(work_dir), RUN)
  packed = (results / 'metrics' / f'{RUN.name}.csv.gz').read_bytes()
  assert grid.archive(str(work_dir), RUN)
  assert (results / 'metrics' / f'{RUN.name}.csv.gz').read_bytes() == packed  # no churn
  rows = grid.read_rows(str(work_dir / 'gone'), RUN)
  assert [int(r['round_num']) for r in rows] == [1, 2, 3]
  summary = grid.summarize(RUN, rows)
  assert summary['final_accuracy'] == pytest.approx(0.8)
  assert summary['measured_mb'] == 9.0


def test_save_progress_packs_the_latest_checkpoint_and_restore_unpacks_it(dirs):
  work_dir, results = dirs
  _write_metrics(work_dir, 2)
  (work_dir / 'results' / RUN.name / 'config.json').write_text('{"a": 1}')
  for version in (5, 10):
    state = work_dir / 'checkpoints' / RUN.name / f'program_state_{version}'
    state.mkdir(parents=True)
    (state / 'saved_model.pb').write_text(str(version))
  assert grid.save_progress(str(work_dir), RUN)
  fresh = dirs[0].parent / 'fresh'
  assert grid.restore_progress(str(fresh), RUN)
  restored = fresh / 'checkpoints' / RUN.name
  assert os.listdir(restored) == ['program_state_10']
  assert (restored / 'program_state_10' / 'saved_model.pb').read_text() == '10'
  assert (fresh / 'results' / RUN.name / 'config.json').read_text() == '{"a": 1}'
  assert grid.read_rows(str(fresh), RUN) is None  # still unfinished
  assert not grid.restore_progress(str(fresh), RUN)  # has a checkpoint: left alone
  _write_metrics(fresh, 3)
  assert grid.archive(str(fresh), RUN)
  assert not (results / 'in_progress' / f'{RUN.name}.tar.gz').exists()
  assert not grid.save_progress(str(fresh), RUN)  # finished: nothing to pack


def test_report_keeps_committed_summaries_of_runs_without_metrics(dirs):
  work_dir, results = dirs
  results.mkdir()
  other = grid.Run('shards10', 'fedavg', 3, 1, grid.PAPER_SEED)
  with open(results / 'runs.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['run', 'environment', 'method', 'algorithm', 'target_sparsity', 'rounds',
                     'epochs', 'seed', 'sparsity', 'nonzero_params', 'final_accuracy',
                     'mean_accuracy_last_10', 'params_exchanged_millions',
                     'transmission_mbits'])
    writer.writerow([other.name, 'shards10', 'fedavg', 'fedavg', 0.0, 3, 1, 1990, 0.0, 118282,
                     0.7, 0.71, 1.0, 32.0])
  _write_metrics(work_dir, 3)
  found = paper_report.load(str(work_dir), [RUN, other])
  assert found[RUN][1] is not None and found[other][1] is None
  assert found[other][0]['mean_accuracy_last_10'] == 0.71
  assert 'measured_mb' not in found[other][0]


def test_fig6_exchange_is_measured_where_our_encoders_ran_and_dense_otherwise(dirs):
  work_dir, _ = dirs
  _write_metrics(work_dir, 3)
  rows = grid.read_rows(str(work_dir), RUN)
  x, computed = paper_report._cumulative(rows, 'shards10', measured=True)  # pylint: disable=protected-access
  assert (x, computed) == ([3.0, 6.0, 9.0], False)
  x, computed = paper_report._cumulative(rows, 'shards10', measured=False)  # pylint: disable=protected-access
  assert (x, computed) == ([1.5, 3.0, 4.5], False)
  dense = [{'round_num': r} for r in (1, 2)]  # TFF's FedAvg: no communication metrics
  x, computed = paper_report._cumulative(dense, 'shards100', measured=True)  # pylint: disable=protected-access
  per_round = 4 * 2 * 10 * grid.NUM_PARAMS / 1e6  # float32, both ways, 10 clients
  assert computed and x == pytest.approx([per_round, 2 * per_round])


def _rows(accuracy, params):
  return [{'round_num': r, 'evaluation/accuracy': a, 'finalizer/nonzero_params': p}
          for r, (a, p) in enumerate(zip(accuracy, params), start=1)]


def test_pruning_drops_count_only_the_rounds_whose_model_lost_weights():
  rows = _rows([0.5, 0.6, 0.4, 0.45, 0.3], [100, 100, 80, 80, 60])
  assert paper_report._pruning_drops(rows) == pytest.approx([0.2, 0.15])  # pylint: disable=protected-access


def test_frequency_and_vote_claims_read_the_curves():
  def found_with(curves):
    return {grid.Run(env, method, 200, 1, grid.PAPER_SEED):
            ({'mean_accuracy_last_10': rows[-1]['evaluation/accuracy']}, rows)
            for (env, method), rows in curves.items()}

  smooth = _rows([0.5, 0.52, 0.54, 0.56], [100, 90, 80, 70])  # F = 1: gains while pruning
  steep = _rows([0.5, 0.52, 0.40, 0.55], [100, 100, 70, 70])  # F = 5: 12 points lost
  found = found_with({('shards10', 'global_0.95'): smooth,
                      ('shards10', 'global_0.95_F2'): smooth,
                      ('shards10', 'global_0.95_F5'): steep})
  pairs = paper_report._frequency_pairs(found)  # pylint: disable=protected-access
  assert [p[3] for p in pairs] == [True, True]
  assert pairs[1][1] == pytest.approx(0.12) and pairs[1][2] == pytest.approx(-0.02)
  found = found_with({('iid10', 'local_0.9'): _rows([0.5] * 3, [50, 40, 30]),
                      ('iid10', 'local_0.9_mean'): _rows([0.5] * 3, [90, 40, 30])})
  _, vote, mean, holds = paper_report._vote_vs_mean(found, 'iid10')  # pylint: disable=protected-access
  assert (vote, mean, holds) == (pytest.approx(40), pytest.approx(160 / 3), True)
  assert paper_report._vote_vs_mean(found, 'shards10')[1] is None  # pylint: disable=protected-access
