r"""Scripted mutation check: does the suite catch a deliberately broken product?

Each mutation changes one line of one module (a plausible bug: an off-by-one
rounding, a tie going the other way, a sign, a regrowth, a missing absolute
value) in a copy of the committed tree (`git worktree` at HEAD), then runs the
tests that cover that module. A mutation is *killed* if they fail, *survived*
if they pass. Survivors point at promises no test holds.

  python -m benchmarks.mutation                 # all mutations
  python -m benchmarks.mutation --only=masks_tie

Results: benchmarks/results/mutation.md (per mutation and per module).
"""

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'benchmarks', 'results', 'mutation.md')

Mutation = collections.namedtuple('Mutation', 'name path old new tests why')

MUTATIONS = [
    Mutation('masks_rounding', 'tff_sparsify/core/masks.py',
             'tf.cast(n, tf.float64) + 0.5)', 'tf.cast(n, tf.float64) + 0.49)',
             ['tests/test_masks.py'], 'round(s n) rounds halves down'),
    Mutation('masks_vote_tie', 'tff_sparsify/core/masks.py',
             'kept = [2.0 * v >= n for v in votes]', 'kept = [2.0 * v > n for v in votes]',
             ['tests/test_masks.py', 'tests/test_fed_sparsify.py::MaskMergingTest'],
             'Eq. 2: a tie at N/2 prunes'),
    Mutation('masks_stable_ties', 'tff_sparsify/core/masks.py',
             'tf.cumsum(tf.cast(at, tf.int32)) <= room', 'tf.cumsum(tf.cast(at, tf.int32)) < room',
             ['tests/test_masks.py'], 'one tied weight too few pruned'),
    Mutation('masks_negative_zero', 'tff_sparsify/core/masks.py',
             'return tf.where(kept, weight, tf.zeros_like(weight))',
             'return weight * tf.cast(kept, weight.dtype)',
             ['tests/test_masks.py', 'tests/test_fed_sparsify.py::LinearModelTest'],
             'masking leaves -0.0, which a bit-exact encoder sends'),
    Mutation('schedule_frequency', 'tff_sparsify/core/schedules.py',
             'progress = (f * tf.floor(t / f) - t0)', 'progress = (t - t0)',
             ['tests/test_schedules.py'], 'Eq. 1 ignores F'),
    Mutation('schedule_start', 'tff_sparsify/core/schedules.py',
             'started = t >= t0', 'started = t > t0',
             ['tests/test_schedules.py'], 'pruning starts one round late'),
    Mutation('finalizer_regrowth', 'tff_sparsify/learning/algorithms/base.py',
             'return [m * c for m, c in zip(purge(), server.current)]', 'return purge()',
             ['tests/test_fed_sparsify.py::LinearModelTest',
              'tests/test_fed_sparsify.py::MultiLayerTest'],
             'the global mask forgets what was pruned (regrowth)'),
    Mutation('finalizer_no_purge', 'tff_sparsify/learning/finalizers.py',
             '    trainable = masks_lib.apply_masks(trainable, layout.masks_by_trainable(non_trainable))\n    if message_prune_rate',
             '    if message_prune_rate',
             ['tests/test_fed_sparsify.py::LinearModelTest',
              'tests/test_fed_sparsify.py::MultiLayerTest'],
             'the new mask is stored but the weights it prunes are not zeroed'),
    Mutation('fedprox_sign', 'tff_sparsify/learning/algorithms/fedprox.py',
             'gradients = [g + proximal_strength * (w - w_t)',
             'gradients = [g + proximal_strength * (w_t - w)',
             ['tests/test_fed_sparsify.py::LinearModelTest::test_fedprox_proximal_term_acts'],
             "FedProx with TFF 0.87's reversed sign"),
    Mutation('snip_abs', 'tff_sparsify/learning/saliency.py',
             'return [tf.abs(g * w) for g, w in zip(grads, weights)]',
             'return [g * w for g, w in zip(grads, weights)]',
             ['tests/test_saliency.py'], 'SNIP without the absolute value'),
    Mutation('grasp_sign', 'tff_sparsify/learning/saliency.py',
             "ranked = flat if method == 'snip' else -flat", 'ranked = flat',
             ['tests/test_saliency.py'], 'GraSP keeps the highest -w Hg'),
    Mutation('shards_order', 'tff_sparsify/simulation/data_sources.py',
             "by_label = np.argsort(labels, kind='stable')",
             "by_label = np.argsort(labels, kind='stable')[::-1]",
             ['tests/test_data.py::ShardsPartitionTest'], "the authors' chunks taken from the other end"),
    Mutation('client_counts_what_the_aggregator_encodes', 'tff_sparsify/learning/client_work.py',
             'count_values=not self.by_aggregator', 'count_values=True',
             ['tests/test_wire.py'], 'upload bytes counted twice (client and aggregator)'),
    Mutation('seed_not_from_its_flag', 'tff_sparsify/learning/algorithms/base.py',
             "'client_momentum', *_OPTIMIZER_FIELDS))",
             "'client_momentum', 'seed', *_OPTIMIZER_FIELDS))",
             ['tests/test_options.py'], '--seed does not reach the pruning configurations'),
    Mutation('dp_accountant_add_remove', 'tff_sparsify/learning/privacy_accounting.py',
             'dp_accounting.GaussianDpEvent(noise_multiplier / 2)',
             'dp_accounting.GaussianDpEvent(noise_multiplier)',
             ['tests/test_privacy.py::GuaranteeTest'],
             "replace-one's sensitivity 2C forgotten: epsilon too small"),
    Mutation('dp_noise_repeats', 'tff_sparsify/learning/dp_aggregation.py',
             'global_state.stddev, seeds[-1])', 'global_state.stddev, global_state.seed)',
             ['tests/test_privacy.py::NoiseTest'], 'the same noise every round'),
    Mutation('dp_adaptive_seed_lost', 'tff_sparsify/learning/dp_aggregation.py',
             'return result, new_state._replace(sum_state=new_state.sum_state._replace(seed=seed)), event',
             'return result, new_state, event',
             ['tests/test_privacy.py::NoiseTest'],
             "adaptive clipping's update noise restarts from its first seed every round"),
    Mutation('dp_denominator', 'tff_sparsify/learning/dp_aggregation.py',
             'query = tfp.NormalizedQuery(query, denominator=m)',
             'query = tfp.NormalizedQuery(query, denominator=m + 1)',
             ['tests/test_privacy.py::ClippingTest'], 'the DP mean over one client too many'),
    Mutation('secure_bits', 'tff_sparsify/compression/wire.py',
             'return SECURE_SUM_VALUE_BITS + max(0, math.ceil(math.log2(clients)))',
             'return SECURE_SUM_VALUE_BITS',
             ['tests/test_privacy.py::SecureAggregationTest'],
             "secure-sum bytes without the ring's room for the sum"),
    Mutation('rice_length', 'tff_sparsify/compression/codecs.py',
             'return int(np.sum(gaps >> k)) + gaps.size * (1 + k)',
             'return int(np.sum(gaps >> k)) + gaps.size * k',
             ['tests/test_codecs.py'], 'Rice code length without the stop bits'),
]

# Mutants that cannot change behaviour, and why (they count as survived).
EQUIVALENT = {
    'finalizer_regrowth': 'equivalent: magnitude ranking puts the zeros of pruned weights '
                          'first and s_t never decreases, so the new mask already holds the '
                          'old zeros (random masks AND with the old ones themselves); the AND '
                          'is a guard',
}

_ONLY = flags.DEFINE_list('only', None, 'Run only these mutations.')
_TIMEOUT = flags.DEFINE_integer('timeout_seconds', 900, 'Per mutation.')


def _module(path: str) -> str:
  return os.path.splitext(path.replace('tff_sparsify/', ''))[0].replace('/', '.')


def run_one(tree: str, mutation: Mutation) -> tuple[str, float]:
  """'killed' / 'survived' / 'not applied' of one mutation, and its seconds."""
  path = os.path.join(tree, mutation.path)
  with open(path) as f:
    original = f.read()
  if original.count(mutation.old) != 1:
    return 'not applied (line not found once)', 0.0
  try:
    with open(path, 'w') as f:
      f.write(original.replace(mutation.old, mutation.new))
    start = time.monotonic()
    try:
      result = runs.call(
          [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider',
           *mutation.tests], cwd=tree, capture_output=True, text=True,
          timeout=_TIMEOUT.value)
      outcome = 'survived' if result.returncode == 0 else (
          'killed' if result.returncode == 1 else f'error (pytest exit {result.returncode})')
    except subprocess.TimeoutExpired:
      outcome = 'killed (timeout)'
    return outcome, time.monotonic() - start
  finally:
    with open(path, 'w') as f:
      f.write(original)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  names = [m.name for m in MUTATIONS]
  unknown = [n for n in (_ONLY.value or []) if n not in names]
  if unknown:
    raise app.UsageError(f'--only: unknown {unknown}; allowed: {names}')
  chosen = [m for m in MUTATIONS if not _ONLY.value or m.name in _ONLY.value]
  head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO,
                        capture_output=True, text=True, check=True).stdout.strip()
  tree = os.path.join(tempfile.mkdtemp(prefix='mutation-'), 'tree')
  subprocess.run(['git', 'worktree', 'add', '--detach', tree, 'HEAD'], cwd=REPO,
                 capture_output=True, check=True)
  rows = []
  try:
    for mutation in chosen:
      outcome, seconds = run_one(tree, mutation)
      print(f'{mutation.name}: {outcome} ({seconds:.0f} s)', flush=True)
      rows.append((mutation, outcome, seconds))
  finally:
    subprocess.run(['git', 'worktree', 'remove', '--force', tree], cwd=REPO,
                   capture_output=True, check=False)
    shutil.rmtree(os.path.dirname(tree), ignore_errors=True)
  by_module = collections.OrderedDict()
  for mutation, outcome, _ in rows:
    counts = by_module.setdefault(_module(mutation.path), [0, 0])
    counts[0] += outcome.startswith('killed')
    counts[1] += 1
  lines = ['# Mutation check', '',
           f'Command: `python -m benchmarks.mutation` on commit {head}. Each mutation changes '
           'one line in a copy of the tree and runs the tests listed; killed = they fail.', '',
           '| mutation | module | bug it plants | tests run | outcome | seconds |',
           '|---|---|---|---|---|---|']
  for mutation, outcome, seconds in rows:
    if mutation.name in EQUIVALENT and outcome == 'survived':
      outcome = f'survived ({EQUIVALENT[mutation.name]})'
    lines.append(f'| {mutation.name} | {_module(mutation.path)} | {mutation.why} | '
                 f'{" ".join(t.replace("tests/", "") for t in mutation.tests)} | {outcome} | '
                 f'{seconds:.0f} |')
  lines += ['', '| module | killed / planted |', '|---|---|']
  lines += [f'| {module} | {k} / {n} |' for module, (k, n) in by_module.items()]
  killed = sum(k for k, _ in by_module.values())
  lines += ['', f'Total: {killed} of {len(rows)} killed.']
  if not _ONLY.value:
    with open(RESULTS, 'w') as f:
      f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
