r"""Central against distributed DP at the same noise multiplier: epsilon and bytes per client.

At the privacy benchmark's setting (`benchmarks/privacy.py`: the paper's
FashionMNIST network, 100 clients, 10 sampled per round without
replacement, 200 rounds, clip 0.2, delta = 1/100), for each noise
multiplier z:

- epsilon of central DP (`--dp_mechanism=gaussian`: the server adds
  Gaussian noise of z C to the clipped sum; dp_accounting's RDP accountant);
- epsilon of distributed DP (`--dp_mechanism=distributed_skellam`: each
  client adds Skellam noise of z C / sqrt(m) to its rotated, scaled,
  rounded update; the Skellam accounting of `learning.privacy_accounting`
  on the parameters TFF derives, `dp_aggregation.distributed_parameters`);
- one client's secure-sum message per round: TFF's secure sum of the
  clipped update (every coordinate at 32 + ceil(log2 m) bits) against the
  distributed mechanism's (the update padded to a power of two, 20 bits
  per value, modulo 2^20).

Nothing is trained: the figures follow from the configuration (the
noise's deviation and the parameters are tested against TFF's own
measurements in `tests/test_privacy.py`).

  python -m benchmarks.ddp_guarantee --output=benchmarks/results/ddp_guarantee.md
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from tff_sparsify.compression import wire
from tff_sparsify.learning import configs
from tff_sparsify.learning import dp_aggregation
from tff_sparsify.learning import models
from tff_sparsify.learning import privacy_accounting
from tff_sparsify.simulation import execution  # pylint: disable=g-import-not-at-top

# Before absl parses the flags: a flag it refuses exits at once, and TFF's
# import-time context would then print a traceback at shutdown.
execution.drop_import_time_default_context()

_OUTPUT = flags.DEFINE_string('output', None, 'Markdown file for the table (default: print).')
_NOISE = flags.DEFINE_list('noise', ['0.3', '0.7', '1.0', '2.0'], 'Noise multipliers.')
_CLIP = flags.DEFINE_float('clip', 0.2, "L2 clip of each client's update.")
_CLIENTS = flags.DEFINE_integer('num_clients', 100, 'Clients in the federation.')
_PER_ROUND = flags.DEFINE_integer('clients_per_round', 10, 'Clients sampled per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 200, 'Rounds.')


def main(argv):
  del argv
  dim = models.num_trainable_parameters(models.create_model('fashion_mnist'))
  n, m, rounds = _CLIENTS.value, _PER_ROUND.value, _ROUNDS.value
  delta = 1.0 / n
  lines = [
      '# Central against distributed DP: epsilon and secure-sum bytes (FashionMNIST, paper '
      'network)', '',
      f'`python -m benchmarks.ddp_guarantee` (`--clip={_CLIP.value} --num_clients={n} '
      f'--clients_per_round={m} --rounds={rounds}`): {dim:,} trainable values; epsilon at '
      f'delta = 1/{n} after {rounds} rounds of {m} of {n} clients sampled without replacement; '
      'bytes of one client\'s secure-sum message per round.', '',
      '| z | epsilon, central (Gaussian) | epsilon, distributed (Skellam) | scale | '
      'TFF secure sum, bytes | distributed, bytes |',
      '|---|---|---|---|---|---|']
  for z in _NOISE.value:
    privacy = configs.PrivacyConfig(dp_clip_norm=_CLIP.value, dp_noise_multiplier=float(z),
                                    dp_mechanism='distributed_skellam', clients_per_round=m)
    parameters = dp_aggregation.distributed_parameters(privacy, dim)
    central = privacy_accounting.epsilon(float(z), n, m, rounds, delta)
    distributed = privacy_accounting.skellam_epsilon(parameters, rounds, n, delta)
    lines.append(f'| {z} | {central:.4g} | {distributed:.4g} | {parameters["scale"]:.4g} | '
                 f'{wire.secure_sum_bytes(dim, m):,} | {dp_aggregation.distributed_bytes(dim):,} |')
  text = '\n'.join(lines) + '\n'
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w') as f:
      f.write(text)
  print(text, end='')


if __name__ == '__main__':
  app.run(main)
