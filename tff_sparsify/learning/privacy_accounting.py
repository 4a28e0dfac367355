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

Pure Python (dp_accounting, NumPy, SciPy): no TensorFlow.
"""

import math
from typing import Optional

import dp_accounting


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
