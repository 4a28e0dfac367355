"""Tables, figures and the list of claims of `benchmarks/paper.py` (issue 13).

Reads the runs `benchmarks.paper` trained under its work_dir and writes
benchmarks/results/paper/: `runs.csv` (one row per finished run), `index.md`
(each paper figure and table -> its file, and what is missing), `table2.md`,
`claims.md` (targets and the paper's claims, each holds / does not hold /
not measured), and the figures `fig2a_{env}_{TxE}.png`, `fig2c_{env}_{TxE}.png`,
`fig3.png`, `fig4.png`, `fig6_{TxE}.png` (Appendix E count) and `fig6_mb_{TxE}.png`
(our encoders' bytes).

  python -m benchmarks.paper --report_only
"""

import collections
import csv
import os
import statistics

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from benchmarks import paper_grid as paper  # pylint: disable=g-import-not-at-top
from tff_sparsify import files  # pylint: disable=g-import-not-at-top

COMMAND = 'python -m benchmarks.paper --report_only'
PAPER_TABLE2 = collections.OrderedDict([  # sparsity: (accuracy, params, C.C. millions)
    (0.0, (0.7489, 118_282, 473)), (0.8, (0.74, 23_657, 190)), (0.85, (0.735, 17_743, 173)),
    (0.9, (0.749, 11_829, 155)), (0.95, (0.735, 5_915, 137)), (0.99, (0.687, 1_183, 123))])
FAMILIES = collections.OrderedDict([
    ('global', ('FedSparsify-Global', 'o')), ('local', ('FedSparsify-Local', 's')),
    ('random', ('Random', 'x')), ('snip', ('SNIP', '^')), ('grasp', ('GraSP', 'v'))])
ENV_TITLES = dict(shards10='non-IID (shards), 10 clients', iid10='IID, 10 clients',
                  shards100='non-IID (shards), 100 clients, 10 per round',
                  iid100='IID, 100 clients, 10 per round')
PAPER = f'{paper.PAPER_PROTOCOL[0]}x{paper.PAPER_PROTOCOL[1]}'
SHORT = f'{paper.SHORT_PROTOCOL[0]}x{paper.SHORT_PROTOCOL[1]}'


def _protocol(run) -> str:
  return f'{run.rounds}x{run.epochs}'


def load(work_dir: str, runs) -> dict:
  """{run: (summary, rows)} of the finished runs.

  A run finished by an earlier session whose per-round metrics were not kept
  (before they were archived) keeps its committed runs.csv summary with rows
  None: it counts in the tables and claims, not in the per-round figures.
  """
  committed = paper.committed_summaries()
  found = collections.OrderedDict()
  for run in runs:
    rows = paper.read_rows(work_dir, run)
    if rows is not None:
      found[run] = (paper.summarize(run, rows), rows)
    elif run.name in committed:
      found[run] = (committed[run.name], None)
  return found


def _lookup(found, environment, method, protocol, seed=paper.PAPER_SEED):
  for run, (summary, rows) in found.items():
    if (run.environment, run.method, _protocol(run), run.seed) == (
        environment, method, protocol, seed):
      return summary, rows
  return None


def _accuracy(found, environment, method, protocol):
  hit = _lookup(found, environment, method, protocol)
  return hit[0]['mean_accuracy_last_10'] if hit else None


def _fig2a(found, environment, protocol, path) -> bool:
  fig, ax = plt.subplots(figsize=(6, 4))
  drawn = False
  for method, style in (('fedavg', '--'), ('fedprox', ':')):
    value = _accuracy(found, environment, method, protocol)
    if value is not None:
      ax.axhline(value, color='gray', ls=style, label=method.replace('fed', 'Fed')
                 .replace('avg', 'Avg').replace('prox', 'Prox'))
      drawn = True
  prunefl = _accuracy(found, environment, 'prunefl_0.3', protocol)
  if prunefl is not None:
    ax.plot([0.3], [prunefl], marker='*', ls='none', label='PruneFL (0.3)')
    drawn = True
  for family, (label, marker) in FAMILIES.items():
    points = [(float(s), _accuracy(found, environment, f'{family}_{s}', protocol))
              for s in paper.SPARSITIES]
    points = [p for p in points if p[1] is not None]
    if points:
      ax.plot(*zip(*points), marker=marker, label=label)
      drawn = True
  if not drawn:
    plt.close(fig)
    return False
  ax.set_xlabel('sparsity')
  ax.set_ylabel(f'test accuracy (mean of last {paper.LAST_ROUNDS} rounds)')
  ax.set_title(f'FashionMNIST {ENV_TITLES[environment]}\n{protocol} (rounds x epochs)',
               fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def _fig2c(found, environment, protocol, path) -> bool:
  methods = ['fedavg', 'fedprox', 'global_0.9', 'local_0.9', 'random_0.9', 'snip_0.9',
             'grasp_0.9', 'prunefl_0.3']
  fig, ax = plt.subplots(figsize=(7, 4))
  ax2 = ax.twinx()
  drawn = False
  for method in methods:
    hit = _lookup(found, environment, method, protocol)
    if not hit or hit[1] is None:
      continue
    _accuracy_and_params(ax, ax2, hit[1], method)
    drawn = True
  return _finish_rounds_figure(fig, ax, ax2, drawn, path,
                               f'{ENV_TITLES[environment]}, {protocol}')


def _accuracy_and_params(ax, ax2, rows, label):
  """Accuracy per round (solid, left axis) and non-zero parameters (dashed, right axis)."""
  x = [int(r['round_num']) for r in rows]
  line, = ax.plot(x, [float(r['evaluation/accuracy']) for r in rows], lw=0.8, label=label)
  params = ([int(r['finalizer/nonzero_params']) for r in rows]
            if 'finalizer/nonzero_params' in rows[0] else [paper.NUM_PARAMS] * len(x))
  ax2.plot(x, params, ls='--', lw=0.8, color=line.get_color())


def _finish_rounds_figure(fig, ax, ax2, drawn, path, title) -> bool:
  """Labels and saves a rounds figure like the paper's (parameters on a right axis)."""
  if not drawn:
    plt.close(fig)
    return False
  ax.set_xlabel('round')
  ax.set_ylabel('test accuracy (solid)')
  ax2.set_ylabel('non-zero parameters (dashed)')
  ax2.set_yscale('log')
  ax.set_title(title, fontsize=9)
  ax.legend(loc='lower right', fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def _curves(found, series, path, title) -> bool:
  """Accuracy and parameters per round for each (label, environment, method, protocol)."""
  fig, ax = plt.subplots(figsize=(7, 4))
  ax2 = ax.twinx()
  drawn = False
  for label, environment, method, protocol in series:
    hit = _lookup(found, environment, method, protocol)
    if not hit or hit[1] is None:
      continue
    _accuracy_and_params(ax, ax2, hit[1], label)
    drawn = True
  return _finish_rounds_figure(fig, ax, ax2, drawn, path, title)


# Figure 6: every scheme at 0.9 (PruneFL at 0.3); 10 clients top row, 100 bottom.
FIG6_METHODS = collections.OrderedDict([
    ('fedavg', 'FedAvg'), ('fedprox', 'FedProx'), ('global_0.9', 'FedSparsify-Global'),
    ('local_0.9', 'FedSparsify-Local'), ('random_0.9', 'Random'), ('snip_0.9', 'SNIP'),
    ('grasp_0.9', 'GraSP'), ('prunefl_0.3', 'PruneFL 0.3')])
FIG6_PANELS = (('iid10', 'shards10'), ('iid100', 'shards100'))


def _cumulative(rows, environment, measured) -> tuple[list[float], bool]:
  """Cumulative exchange after each round: Appendix E Mbit, or our encoders' MB.

  The second value says whether the figure is computed rather than measured: TFF's
  own FedAvg / FedProx processes have no encoder of ours, so their MB is the dense
  float32 payload (4 bytes per parameter, each way, each participating client).
  """
  if measured and 'cumulative/bytes_uploaded' in rows[0]:
    return [(float(r['cumulative/bytes_uploaded']) + float(r['cumulative/bytes_downloaded']))
            / 1e6 for r in rows], False
  x, total = [], 0.0
  for r in rows:
    total += _round_mbits(r, environment) / (8 if measured else 1)
    x.append(total)
  return x, measured


def _fig6(found, protocol, path, measured) -> bool:
  """Accuracy against cumulative transmission, one panel per environment (paper Fig. 6)."""
  fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey=True)
  drawn = False
  for row, envs in enumerate(FIG6_PANELS):
    for col, env in enumerate(envs):
      ax = axes[row][col]
      for method, label in FIG6_METHODS.items():
        hit = _lookup(found, env, method, protocol)
        if not hit or hit[1] is None:
          continue
        x, computed = _cumulative(hit[1], env, measured)
        ax.plot(x, [float(r['evaluation/accuracy']) for r in hit[1]], lw=0.8,
                label=label + (' (dense, computed)' if computed else ''))
        drawn = True
      ax.set_xscale('log')
      ax.set_title(ENV_TITLES[env], fontsize=9)
      ax.set_xlabel('cumulative MB, up + down' if measured else 'cumulative Mbit',
                    fontsize=8)
      if col == 0:
        ax.set_ylabel('test accuracy')
      if ax.lines:
        ax.legend(fontsize=6)
      else:
        ax.text(0.5, 0.5, 'no finished run', ha='center', va='center',
                transform=ax.transAxes, fontsize=9, color='grey')
  if not drawn:
    plt.close(fig)
    return False
  unit = ('bytes our encoders wrote' if measured else
          'Appendix E count: 32 bits per non-zero parameter + mask bits')
  fig.suptitle(f'Accuracy vs cumulative transmission ({unit}), {protocol} (rounds x epochs)',
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def _round_mbits(row, environment) -> float:
  if 'client_work/communication/transmission_mbits' in row:
    return float(row['client_work/communication/transmission_mbits'])
  clients = paper.ENVIRONMENTS[environment]['clients_per_round']
  return 32 * 2 * clients * paper.NUM_PARAMS / 1e6


def _table2(found) -> list[str]:
  header = ['sparsity', 'method', 'our accuracy (last 10)', 'our final accuracy',
            'paper accuracy', 'our non-zero params', 'paper params',
            'our C.C. (M params)', 'paper C.C. (M)', 'our measured MB up+down']
  rows = []
  for sparsity, (p_acc, p_params, p_cc) in PAPER_TABLE2.items():
    method = 'fedavg' if sparsity == 0.0 else f'global_{sparsity}'
    hit = _lookup(found, 'shards10', method, PAPER)
    if hit:
      s = hit[0]
      measured = s.get('measured_mb', 'per-round metrics lost; re-running')
      rows.append([sparsity, method, s['mean_accuracy_last_10'], s['final_accuracy'], p_acc,
                   s['nonzero_params'], p_params, s['params_exchanged_millions'], p_cc,
                   measured])
    else:
      rows.append([sparsity, method, 'not run', '', p_acc, '', p_params, '', p_cc, ''])
  return files.markdown_table(header, [dict(zip(header, row)) for row in rows])


def _seeds(found) -> list[str]:
  lines = []
  by_method = {}
  seeds = (paper.PAPER_SEED, paper.PAPER_SEED + 1, paper.PAPER_SEED + 2)
  for method in ('fedavg', 'global_0.9'):
    values = []
    for seed in seeds:
      hit = _lookup(found, 'shards10', method, PAPER, seed)
      if hit:
        values.append((seed, hit[0]['mean_accuracy_last_10']))
    by_method[method] = dict(values)
    if values:
      accs = [v for _, v in values]
      spread = f', spread (max - min) {max(accs) - min(accs):.4f}' if len(accs) > 1 else ''
      lines.append(f'- {method}: ' + ', '.join(f'seed {s}: {v:.4f}' for s, v in values)
                   + f'; mean {statistics.mean(accs):.4f}{spread}')
  both = [s for s in seeds if s in by_method['fedavg'] and s in by_method['global_0.9']]
  if both:
    gaps = [by_method['fedavg'][s] - by_method['global_0.9'][s] for s in both]
    mean_gap = statistics.mean(gaps)
    lines.append(f'- FedAvg minus Global 0.9, same seed: '
                 + ', '.join(f'seed {s}: {g * 100:+.2f}' for s, g in zip(both, gaps))
                 + f' points; mean {mean_gap * 100:+.2f} over {len(both)} seed(s) '
                 f'(target: within 1.5): {"met" if mean_gap <= 0.015 else "NOT met"}')
  return lines or ['- not run yet']


def _verdict(ok) -> str:
  return 'holds' if ok else 'does NOT hold'


def _claims(found) -> list[str]:
  """The issue's targets and the paper's FashionMNIST claims, each with its figures."""
  acc = lambda env, m, p=PAPER: _accuracy(found, env, m, p)  # noqa: E731
  lines = ['## Targets (shards, 10 clients, paper protocol; mean test accuracy of the '
           'last 10 rounds)', '']
  fedavg = acc('shards10', 'fedavg')
  if fedavg is None:
    lines.append('- FedAvg: not run yet.')
  else:
    gap = abs(fedavg - 0.7489)
    lines.append(f'- FedAvg within 2 points of the paper\'s 0.7489: {fedavg:.4f} '
                 f'({gap * 100:.2f} points away): {"met" if gap <= 0.02 else "NOT met"}')
    for s in paper.SPARSITIES:
      value = acc('shards10', f'global_{s}')
      allowed = 0.07 if s == '0.99' else 0.015
      if value is None:
        lines.append(f'- Global {s} within {allowed * 100:g} points of FedAvg: not run yet')
        continue
      gap = fedavg - value
      lines.append(f'- Global {s} within {allowed * 100:g} points of FedAvg: {value:.4f} '
                   f'(FedAvg minus Global: {gap * 100:+.2f} points): '
                   f'{"met" if gap <= allowed else "NOT met"}')
  global99 = acc('shards10', 'global_0.99')
  for method in ('snip_0.99', 'grasp_0.99', 'random_0.99'):
    value = acc('shards10', method)
    if value is None or global99 is None:
      lines.append(f'- {method} below Global 0.99: not run yet')
    else:
      lines.append(f'- {method} below Global 0.99: {value:.4f} vs {global99:.4f} '
                   f'({(global99 - value) * 100:+.2f} points): '
                   f'{"met" if value < global99 - 0.01 else "NOT met"}')
  lines += ['', '## The paper\'s FashionMNIST claims', '']

  def claim(text, pairs):
    """pairs: (description, ours, theirs-or-None, holds) per measured comparison."""
    measured = [p for p in pairs if p[1] is not None]
    if not measured:
      lines.append(f'- {text}: not measured yet.')
      return
    ok = all(p[3] for p in measured)
    details = '; '.join(p[0] for p in measured)
    lines.append(f'- {text}: **{_verdict(ok)}** here ({details}).')

  def cmp(env, better, worse, protocol=PAPER, margin=0.0):
    a, b = acc(env, better, protocol), acc(env, worse, protocol)
    if a is None or b is None:
      return (None, None, None, None)
    return (f'{env} {protocol}: {better} {a:.4f} vs {worse} {b:.4f}', a, b, a > b + margin)

  claim('Non-IID is harder than IID for every method (lines 92-93)',
        [pair for m in ('fedavg', 'global_0.9', 'local_0.9', 'random_0.9', 'snip_0.9',
                        'grasp_0.9') for pair in _iid_vs_non_iid(found, m)])
  claim('SNIP and GraSP at 0.8 fall clearly (> 2 points) below FedSparsify (line 94)',
        [cmp(env, 'global_0.8', m, p, 0.02) for env in paper.ENVIRONMENTS for p in (PAPER, SHORT)
         for m in ('snip_0.8', 'grasp_0.8')])
  claim('FedSparsify outperforms the other pruning methods at 0.95 and 0.99 (line 94)',
        [cmp(env, f'global_{s}', f'{m}_{s}', p) for env in paper.ENVIRONMENTS
         for p in (PAPER, SHORT) for s in ('0.95', '0.99') for m in ('random', 'snip', 'grasp')])
  claim('Random pruning cannot keep up at extreme sparsity: below FedSparsify at 0.99 '
        '(line 104)', [cmp(env, 'global_0.99', 'random_0.99', p)
                       for env in paper.ENVIRONMENTS for p in (PAPER, SHORT)])
  claim('FedSparsify at 0.9 comparable to FedAvg: within 1.5 points (lines 100, 104)',
        [_within(found, env, p) for env in paper.ENVIRONMENTS for p in (PAPER, SHORT)])
  claim('100 clients: FedSparsify at 0.99 greatly (> 5 points) outperforms SNIP and GraSP at '
        '0.99, non-IID (line 290)',
        [cmp('shards100', 'global_0.99', m, p, 0.05) for p in (PAPER, SHORT)
         for m in ('snip_0.99', 'grasp_0.99')])
  claim('PruneFL (0.3) does not reach a sparse model of performance comparable to '
        'FedSparsify: below Global 0.9 (line 104)',
        [cmp(env, 'global_0.9', 'prunefl_0.3', p) for env in paper.ENVIRONMENTS
         for p in (PAPER, SHORT)])
  claim('Sparsification frequency: F = 1 and F = 2 behave alike (within 1 point); at F = 5, '
        '10, 20 accuracy drops more where pruning takes place (mean drop over the pruning '
        'rounds more than 1 point above F = 1\'s) (line 196, Fig. 3)', _frequency_pairs(found))
  claim('Majority voting keeps the clients\' sparsity early in training, plain averaging '
        f'resurrects parameters: fewer non-zero parameters over rounds 1-{EARLY_ROUNDS} '
        '(line 204, Fig. 4)', [_vote_vs_mean(found, env) for env in ('shards10', 'iid10')])
  return lines


EARLY_ROUNDS = 20  # Fig. 4's inset: the beginning of training


def _rows_with_params(found, environment, method):
  """The 200x1 run's rounds (1 on: read_rows drops round 0, which has no count)."""
  hit = _lookup(found, environment, method, SHORT)
  return hit[1] if hit else None


def _pruning_drops(rows) -> list[float]:
  """Accuracy lost from the round before at each round whose model has fewer non-zeros."""
  acc = [float(r['evaluation/accuracy']) for r in rows]
  params = [int(r['finalizer/nonzero_params']) for r in rows]
  return [acc[t - 1] - acc[t] for t in range(1, len(rows)) if params[t] < params[t - 1]]


def _frequency_pairs(found) -> list:
  """Fig. 3's runs (shards10, Global 0.95, 200x1) against F = 1."""
  method = lambda f: 'global_0.95' if f == 1 else f'global_0.95_F{f}'  # noqa: E731
  pairs = []
  one, two = (_accuracy(found, 'shards10', method(f), SHORT) for f in (1, 2))
  if one is not None and two is not None:
    pairs.append((f'F = 1 {one:.4f} vs F = 2 {two:.4f}', one, two, abs(one - two) <= 0.01))
  base = _rows_with_params(found, 'shards10', method(1))
  for f in (5, 10, 20):
    rows = _rows_with_params(found, 'shards10', method(f))
    if base is None or rows is None:
      continue
    a, b = (sum(d) / len(d) for d in (_pruning_drops(rows), _pruning_drops(base)))
    pairs.append((f'mean drop at pruning rounds F = {f} {a * 100:+.2f} vs F = 1 {b * 100:+.2f} '
                  'points', a, b, a > b + 0.01))
  return pairs


def _vote_vs_mean(found, env):
  vote, mean = (_rows_with_params(found, env, m) for m in ('local_0.9', 'local_0.9_mean'))
  if vote is None or mean is None:
    return (None, None, None, None)
  a, b = (sum(int(r['finalizer/nonzero_params']) for r in rows[:EARLY_ROUNDS])
          / len(rows[:EARLY_ROUNDS]) for rows in (vote, mean))
  return (f'{env}: vote {a:,.0f} vs averaging {b:,.0f}', a, b, a < b)


def _iid_vs_non_iid(found, method) -> list:
  """IID against shards for `method`, 10 and 100 clients, each at the first protocol run."""
  pairs = []
  for clients in (10, 100):
    for protocol in (PAPER, SHORT):
      iid, non_iid = (_accuracy(found, f'iid{clients}', method, protocol),
                      _accuracy(found, f'shards{clients}', method, protocol))
      if iid is not None and non_iid is not None:
        pairs.append((f'{method} {clients} clients {protocol}: IID {iid:.4f} vs non-IID '
                      f'{non_iid:.4f}', iid, non_iid, iid > non_iid))
        break
  return pairs


def _within(found, env, protocol):
  a, b = _accuracy(found, env, 'global_0.9', protocol), _accuracy(found, env, 'fedavg', protocol)
  if a is None or b is None:
    return (None, None, None, None)
  return (f'{env} {protocol}: Global 0.9 {a:.4f} vs FedAvg {b:.4f}', a, b, b - a <= 0.015)


def write(work_dir: str, runs) -> None:
  """Writes every table and figure that the finished runs allow, and the index."""
  out = paper.RESULTS
  os.makedirs(out, exist_ok=True)
  found = load(work_dir, runs)
  summaries = [s for s, _ in found.values()]
  if summaries:
    with open(os.path.join(out, 'runs.csv'), 'w', newline='') as f:
      fields = list(collections.OrderedDict.fromkeys(k for s in summaries for k in s))
      writer = csv.DictWriter(f, fieldnames=fields, restval='')
      writer.writeheader()
      writer.writerows(summaries)
  index = ['# The paper\'s FashionMNIST experiments: index', '',
           f'Made by `{COMMAND}` from the runs of `python -m benchmarks.paper --plan=required` '
           f'(paper protocol, {PAPER} = rounds x local epochs) and `--plan=short` '
           f'({SHORT}: the rest of the grid, stated as such in every file). Every run is '
           '`binaries/train.py` with the flags of `benchmarks/paper.py` (batch 32, SGD lr 0.02, '
           'FedProx mu 0.001, t_0 = 1, S_0 = 0, F = 1, n = 3, seed 1990, FashionMNIST from '
           'the Debian package); `runs.csv` has one row per finished run.', '',
           f'Finished runs: {len(found)} of {len(runs)} planned.', '',
           '| Paper | Ours |', '|---|---|']
  for protocol in (PAPER, SHORT):
    for env in paper.ENVIRONMENTS:
      name = f'fig2a_{env}_{protocol}.png'
      if _fig2a(found, env, protocol, os.path.join(out, name)):
        index.append(f'| Fig. 2a / 5a, {ENV_TITLES[env]} ({protocol}) | [{name}]({name}) |')
      name = f'fig2c_{env}_{protocol}.png'
      if _fig2c(found, env, protocol, os.path.join(out, name)):
        index.append(f'| Fig. 2c / 5c, {ENV_TITLES[env]} ({protocol}) | [{name}]({name}) |')
  series = [(f'F = {f}', 'shards10', 'global_0.95' if f == 1 else f'global_0.95_F{f}', SHORT)
            for f in (1, 2, 5, 10, 20)]
  if _curves(found, series, os.path.join(out, 'fig3.png'),
             f'FedSparsify-Global 0.95, non-IID (shards), 10 clients, {SHORT}: frequency F'):
    index.append('| Fig. 3 | [fig3.png](fig3.png) |')
  series = [(f'{env} {label}', env, method, SHORT) for env in ('shards10', 'iid10')
            for label, method in (('majority vote', 'local_0.9'), ('mean', 'local_0.9_mean'))]
  if _curves(found, series, os.path.join(out, 'fig4.png'),
             f'FedSparsify-Local 0.9, 10 clients, {SHORT}: majority vote vs plain averaging'):
    index.append('| Fig. 4 | [fig4.png](fig4.png) |')
  for protocol in (PAPER, SHORT):
    for measured, name in ((False, f'fig6_{protocol}.png'), (True, f'fig6_mb_{protocol}.png')):
      if _fig6(found, protocol, os.path.join(out, name), measured):
        unit = 'our measured MB' if measured else 'Appendix E count'
        index.append(f'| Fig. 6 ({protocol}, {unit}) | [{name}]({name}) |')
  table = ['# Table 2 side by side: shards, 10 clients, paper protocol', '',
           f'Made by `{COMMAND}`. Ours: mean test accuracy of the last 10 rounds and of the '
           'last round; non-zero trainable parameters at the end; C.C. = parameters exchanged '
           '(Appendix E count: non-zero parameters down and up, millions); measured MB = '
           'the bytes our encoders wrote (uploads and broadcasts, cumulative).', '',
           *_table2(found), '',
           '## The headline pair over 3 seeds (1990, 1991, 1992)', '', *_seeds(found)]
  files.atomic_write_text(os.path.join(out, 'table2.md'), '\n'.join(table) + '\n')
  index.append('| Table 2 | [table2.md](table2.md) |')
  claims = ['# Targets and the paper\'s claims, checked on our runs', '',
            f'Made by `{COMMAND}`; a claim is "not measured yet" until its runs finish.', '',
            *_claims(found)]
  files.atomic_write_text(os.path.join(out, 'claims.md'), '\n'.join(claims) + '\n')
  index.append('| Claims (lines 92-104, 196, 204, 290) and the issue\'s targets | [claims.md](claims.md) |')
  missing = [r.name for r in runs if r not in found]
  summary_only = [r.name for r, (_, rows) in found.items() if rows is None]
  if summary_only:
    index += ['', f'## Summary only ({len(summary_only)})', '',
              'Finished by an earlier session whose disk, with the per-round metrics, was not '
              'kept (finished runs are archived under `metrics/` since): their runs.csv rows '
              'count in the tables and claims, not in the per-round figures (2c, 3, 4, 6) '
              'until they are trained again.', '', ', '.join(summary_only)]
  if missing:
    index += ['', f'## Not finished ({len(missing)})', '', ', '.join(missing)]
  index += ['', '## PruneFL', '',
            'PruneFL here keeps its sparsity (0.3) at every readjustment, as the issue '
            'defines it; the paper\'s Fig. 2c shows its model growing (the authors\' code '
            'grows the density by the readjustment ratio): see BUILD_NOTES.']
  files.atomic_write_text(os.path.join(out, 'index.md'), '\n'.join(index) + '\n')
  print('\n'.join(index[:40]))
