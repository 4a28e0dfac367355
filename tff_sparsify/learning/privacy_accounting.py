"""The (epsilon, delta) guarantee of a run's differential privacy, from `dp_accounting`.

The sampling the run uses: each round, `clients_per_round` clients drawn
uniformly without replacement from the `num_clients` of the federation
(`simulation.training`, TFF's `build_uniform_sampling_fn(replace=False)`),
independently across rounds. The matching event is dp_accounting's
`SampledWithoutReplacementDpEvent` (Wang, Balle and Kasiviswanathan 2019,
Theorem 27), which its RDP accountant composes under the *replace-one*
neighbouring relation (the number of clients is public; one client's data
is replaced by another's). Under that relation one client moves the
clipped sum by up to 2C (its update replaced by another of norm at most
C), so the Gaussian mechanism's noise multiplier over the sensitivity is
z C / 2C = z / 2: the accountant is given z / 2. (TFF's tutorials account
Poisson sampling under add-or-remove-one with z; that is not the sampling
used here.) All clients every round (`clients_per_round == num_clients`)
is the same event with no amplification by sampling.

Distributed DP (`dp_mechanism='distributed_skellam'`, TFF's distributed
Skellam mechanism): dp_accounting 0.4.3 has no Skellam event, and its
sampling without replacement takes only Gaussian events (its bound is the
Gaussian-specific strengthening, WBK19 Theorem 27). So two functions are
written here: the Skellam mechanism's Renyi DP (Agarwal, Kairouz and Liu
2021, Theorem 3.5: `skellam_rdp`) and WBK19's general bound for any
mechanism sampled without replacement (Theorem 9: `subsampled_rdp`); the
conversion to (epsilon, delta) is dp_accounting's `compute_epsilon`.

Pure Python (dp_accounting, NumPy, SciPy): no TensorFlow.
"""

import math
from typing import Optional, Sequence

import dp_accounting
import numpy as np
from scipy import special

# Integer orders (WBK19's Theorem 9 is stated for them).
ORDERS = tuple(range(2, 257))


def dp_event(noise_multiplier: float, num_clients: int, clients_per_round: int,
             rounds: int) -> dp_accounting.DpEvent:
  """The event of `rounds` rounds of the clipped, noised mean (see the module's note)."""
  per_round = dp_accounting.SampledWithoutReplacementDpEvent(
      num_clients, clients_per_round, dp_accounting.GaussianDpEvent(noise_multiplier / 2))
  return dp_accounting.SelfComposedDpEvent(per_round, rounds)


def epsilon(noise_multiplier: float, num_clients: int, clients_per_round: int, rounds: int,
            delta: float) -> Optional[float]:
  """Epsilon at `delta` after `rounds` rounds; None without noise (no guarantee)."""
  if noise_multiplier <= 0:
    return None
  if rounds == 0:
    return 0.0
  accountant = dp_accounting.rdp.RdpAccountant(
      neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  accountant.compose(dp_event(noise_multiplier, num_clients, clients_per_round, rounds))
  found = accountant.get_epsilon(delta)
  return None if math.isinf(found) else float(found)


def delta_of(dp_delta: float, num_clients: int) -> float:
  """The delta reported: `dp_delta`, or 1 / the number of clients when it is 0."""
  return float(dp_delta) if dp_delta else 1.0 / num_clients


def skellam_rdp(alpha: int, l1: float, l2: float, variance: float) -> float:
  """Renyi DP at integer order `alpha` > 1 of adding Skellam noise to an integer vector.

  Agarwal, Kairouz and Liu 2021, Theorem 3.5: each coordinate gets the
  difference of two Poisson draws of mean `variance` / 2 (its variance
  `variance`); two neighbouring inputs differ by an integer vector of L1
  norm at most `l1` and L2 norm at most `l2`:
  alpha l2^2 / (2 var) + min(((2 alpha - 1) l2^2 + 6 l1) / (4 var^2), 3 l1 / (2 var)).
  The first term is the Gaussian mechanism's at that variance.
  """
  return (alpha * l2**2 / (2 * variance)
          + min(((2 * alpha - 1) * l2**2 + 6 * l1) / (4 * variance**2), 3 * l1 / (2 * variance)))


def subsampled_rdp(q: float, rdp: Sequence[float], orders: Sequence[int] = ORDERS) -> np.ndarray:
  """Renyi DP at `orders` (2, 3, ...) of a mechanism run on m of n records drawn without replacement.

  Wang, Balle and Kasiviswanathan 2019, Theorem 9 (replace-one neighbours,
  q = m / n), for a mechanism whose Renyi DP at order j is `rdp[j - 2]`
  (j in `orders`, consecutive integers from 2) and is unbounded at
  infinity (as the Gaussian's and the Skellam's): at order a, (1 / (a - 1)) log(1 + q^2 C(a, 2)
  min(4 (e^rdp(2) - 1), 2 e^rdp(2)) + sum_{j=3}^a 2 q^j C(a, j)
  e^{(j - 1) rdp(j)}), and never more than rdp(a) (a sample holds the
  replaced record or it does not).
  """
  rdp = np.asarray(rdp, np.float64)
  if list(orders) != list(range(2, len(orders) + 2)) or len(rdp) != len(orders):
    raise ValueError('orders must be 2, 3, ..., with one Renyi DP value each')
  if q >= 1:
    return rdp.copy()
  j = np.asarray(orders, np.float64)
  # log of 2 q^j e^{(j - 1) rdp(j)} for j >= 3; j = 2 has its own term.
  tail = math.log(2) + (j - 1) * rdp + j * math.log(q)
  tail[0] = 2 * math.log(q) + min(math.log(4) + math.log(math.expm1(rdp[0])),
                                  rdp[0] + math.log(2))
  found = np.empty(len(orders))
  for i, a in enumerate(orders):
    terms = tail[:i + 1] + (special.gammaln(a + 1) - special.gammaln(j[:i + 1] + 1)
                            - special.gammaln(a - j[:i + 1] + 1))
    found[i] = special.logsumexp(np.concatenate([[0.0], terms])) / (a - 1)
  return np.minimum(found, rdp)


def skellam_epsilon(parameters: dict, rounds: int, num_clients: int,
                    delta: float) -> Optional[float]:
  """Epsilon at `delta` after `rounds` distributed-Skellam rounds, each m of `num_clients` sampled.

  `parameters` (every round the same: the clip is fixed): `clients` (m,
  the clients that sum), `l2` (one client's scaled L2 bound), `l1` (its L1
  bound), `local_stddev` (the Skellam noise each client adds, scaled
  units). Under replace-one, one client's contribution moves the integer
  sum by up to 2 `l2` (L2) and 2 `l1` (L1); the m clients' noises sum to
  one Skellam of variance m `local_stddev`^2. Rounds compose by adding
  their Renyi DP. None without noise.
  """
  if rounds == 0:
    return 0.0
  variance = parameters['clients'] * parameters['local_stddev']**2
  if variance <= 0:
    return None
  per_round = subsampled_rdp(
      parameters['clients'] / num_clients,
      [skellam_rdp(a, 2 * parameters['l1'], 2 * parameters['l2'], variance) for a in ORDERS])
  found, _ = dp_accounting.rdp.compute_epsilon(ORDERS, rounds * per_round, delta)
  return None if math.isinf(found) else float(found)
