"""Pruning-mask math, free of TFF (Stripelis et al., Section 3).

- Magnitude masks: rank all prunable weights together by |w| and zero the
  smallest round(s * n) of them (global, unstructured). Ties are broken by
  position (stable sort over the concatenation), so the count is exact and
  the result deterministic. Already-zero weights rank first, so pruned
  weights stay pruned while the sparsity grows.
- Majority vote (Eq. 2): a weight is kept iff at least half of the N
  participating clients kept it (`2 * kept >= N`; a tie at N/2 keeps it).

Functions take and return lists of tensors (NumPy arrays work) and use only
TensorFlow ops, so they run eagerly in tests and inside TFF computations.
"""

from typing import Sequence

import tensorflow as tf

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)


def _flat(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
  return tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tensors], 0)


def num_to_prune(sparsity, n):
  """round(sparsity * n), halves rounded up."""
  return tf.cast(tf.floor(tf.cast(sparsity, tf.float64) * tf.cast(n, tf.float64) + 0.5), tf.int32)


def _order_keys(scores: tf.Tensor) -> tf.Tensor:
  """int32 keys ordered as the float32 `scores` (-0.0 before +0.0)."""
  bits = tf.bitcast(tf.cast(scores, tf.float32), tf.int32)
  # Negative floats order backwards as integers: flip their magnitude bits.
  return tf.bitwise.bitwise_xor(
      bits, tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 31), 0x7FFFFFFF))


def _kth_smallest(keys: tf.Tensor, k) -> tf.Tensor:
  """The smallest t with count(keys <= t) >= k (the k-th smallest key).

  Bisection over the int32 range: 32 counting passes, far cheaper than the
  full sort it replaces (every client runs it every round in local mode).
  k = 0 gives the int32 minimum, below which no key lies.
  """
  lo = tf.constant(-2**31, tf.int64)
  hi = tf.constant(2**31 - 1, tf.int64)
  for _ in range(32):
    mid = lo + (hi - lo) // 2
    enough = tf.math.count_nonzero(keys <= tf.cast(mid, tf.int32), dtype=tf.int32) >= k
    lo, hi = tf.where(enough, lo, mid + 1), tf.where(enough, mid, hi)
  return tf.cast(lo, tf.int32)


def _lowest_k(scores: tf.Tensor, k) -> tf.Tensor:
  """Flat bool: True at the k lowest of the flat `scores` (ties to the earlier position)."""
  keys = _order_keys(scores)
  threshold = _kth_smallest(keys, k)
  below = keys < threshold
  # Of the scores equal to the k-th smallest, the earliest fill the count.
  at = tf.equal(keys, threshold)
  room = k - tf.math.count_nonzero(below, dtype=tf.int32)
  return tf.logical_or(below, tf.logical_and(at, tf.cumsum(tf.cast(at, tf.int32)) <= room))


def _split_like(flat: tf.Tensor, like: Sequence[tf.Tensor], dtype) -> list[tf.Tensor]:
  parts = tf.split(flat, [tf.size(t) for t in like])
  return [tf.cast(tf.reshape(p, tf.shape(t)), dtype) for p, t in zip(parts, like)]


def _prune_lowest(scores: tf.Tensor, sparsity, like: Sequence[tf.Tensor], dtype) -> list[tf.Tensor]:
  """Masks (shaped as `like`) zeroing the round(sparsity * n) lowest scores.

  Ties go to the earlier position (stable sort), so the count is exact.
  """
  pruned = _lowest_k(scores, num_to_prune(sparsity, tf.size(scores)))
  return _split_like(tf.logical_not(pruned), like, dtype)


def readjusted_masks(weights: Sequence[tf.Tensor], masks: Sequence[tf.Tensor],
                     importance: Sequence[tf.Tensor], ratio, dtype=tf.float32) -> list[tf.Tensor]:
  """PruneFL's readjustment: swap a `ratio` of the kept weights, the count kept unchanged.

  k = min(round(ratio * kept), pruned): the k kept weights of smallest |w|
  are pruned, and the k pruned positions (pruned before this call) of
  largest `importance` (PruneFL: the squared gradients summed over the
  clients' local steps) are kept again. Ties go to the earlier position.
  """
  kept = _flat(masks) > 0
  n_kept = tf.math.count_nonzero(kept, dtype=tf.int32)
  n_pruned = tf.size(kept) - n_kept
  k = tf.minimum(num_to_prune(ratio, n_kept), n_pruned)
  big = tf.fill(tf.shape(kept), tf.float32.max)
  drop = _lowest_k(tf.where(kept, tf.abs(_flat(weights)), big), k)
  grow = _lowest_k(tf.where(kept, big, -_flat(importance)), k)
  new = tf.logical_or(tf.logical_and(kept, tf.logical_not(drop)), grow)
  return _split_like(new, masks, dtype)


def lowest_score_masks(scores: tf.Tensor, sparsity, like: Sequence[tf.Tensor],
                       dtype=tf.float32) -> list[tf.Tensor]:
  """Masks shaped as `like` zeroing the round(sparsity * n) lowest of the flat `scores`.

  `scores` holds one score per element of `like`, concatenated in order
  (SNIP's and GraSP's saliencies, `learning.saliency`). Ties go to the
  earlier position, so the count is exact.
  """
  return _prune_lowest(tf.reshape(tf.cast(scores, tf.float32), [-1]), sparsity, like, dtype)


def magnitude_masks(weights: Sequence[tf.Tensor], sparsity, dtype=tf.float32) -> list[tf.Tensor]:
  """Global magnitude masks with exactly round(sparsity * n) zeros."""
  return _prune_lowest(tf.abs(_flat(weights)), sparsity, weights, dtype)


def placed_magnitude_masks(weights: Sequence[tf.Tensor], sparsity, placement: str = 'global',
                           dtype=tf.float32, costs: Sequence[float] = None,
                           floor: float = None) -> list[tf.Tensor]:
  """Magnitude masks with the sparsity placed `global`ly, `uniform`ly or by `compute`.

  `global`: one ranking over all tensors (`magnitude_masks`). `uniform`:
  each tensor pruned to round(sparsity * its size) by its own ranking, so
  every layer has the same sparsity (the total is the same up to rounding).
  `compute`: each tensor pruned by its own ranking to the sparsity of
  `compute_layer_sparsities` (needs `costs`, multiply-adds per weight;
  `floor` defaults to `COMPUTE_FLOOR`).
  Uniform and compute placements keep the compute-heavy layers at least as
  sparse as the rest, which is what sparse CPU engines speed up
  (benchmarks/inference_table.py).
  """
  if placement == 'global':
    return magnitude_masks(weights, sparsity, dtype)
  if placement == 'uniform':
    return sparsity_masks(weights, [sparsity] * len(weights), dtype)
  if costs is None:
    raise ValueError("sparsity_placement='compute' needs the layers' costs "
                     '(pruning.macs_per_weight), got None')
  sizes = [tf.TensorShape(w.shape).num_elements() for w in weights]
  sparsities = compute_layer_sparsities(
      sizes, costs, sparsity, COMPUTE_FLOOR if floor is None else floor)
  return sparsity_masks(weights, sparsities, dtype)


def channel_norms(weights: Sequence[tf.Tensor]) -> list[tf.Tensor]:
  """Per tensor, the L2 norm of each output channel (slice along the last axis).

  A Conv2D kernel (h, w, in, out) has `out` channels (filters), a Dense
  kernel (in, out) `out` units.
  """
  found = []
  for w in weights:
    w = tf.cast(w, tf.float32)
    flat = tf.reshape(w, [-1, tf.shape(w)[-1]])
    found.append(tf.sqrt(tf.reduce_sum(tf.square(flat), axis=0)))
  return found


def channel_vector(mask: tf.Tensor) -> tf.Tensor:
  """1.0 for each output channel of `mask` with any weight kept, else 0.0."""
  mask = tf.cast(tf.not_equal(mask, 0), tf.float32)
  return tf.reduce_max(tf.reshape(mask, [-1, tf.shape(mask)[-1]]), axis=0)


def _expand_channels(keep: tf.Tensor, like: tf.Tensor, dtype) -> tf.Tensor:
  return tf.cast(tf.broadcast_to(keep, tf.shape(like)), dtype)


def round_channels(kept, channels: int, multiple: int) -> tf.Tensor:
  """`kept` of `channels` rounded to the nearest multiple of `multiple` (halves up).

  All channels stay all channels (nothing pruned stays nothing pruned);
  otherwise at least `multiple` channels are kept and at most `channels`,
  so a layer of fewer than `multiple` channels is never pruned. The result
  never grows as `kept` falls, so a rising sparsity never regrows a channel.
  """
  kept = tf.cast(kept, tf.int32)
  if multiple == 1:
    return kept
  rounded = multiple * tf.cast(tf.floor(tf.cast(kept, tf.float64) / multiple + 0.5), tf.int32)
  rounded = tf.minimum(channels, tf.maximum(multiple, rounded))
  return tf.where(tf.equal(kept, channels), kept, rounded)


# Global channel ranking: no layer keeps fewer than this share of the channels
# uniform placement would keep it (issue 37: the paper's FashionMNIST network
# at channel sparsity 0.5 kept 1 of its first layer's 128 units).
CHANNEL_FLOOR_SHARE = 0.25


def _floor_share(sparsity, channels) -> tf.Tensor:
  share = CHANNEL_FLOOR_SHARE * (1.0 - tf.cast(sparsity, tf.float64)) * tf.cast(channels,
                                                                             tf.float64)
  return tf.cast(tf.math.floor(share + 1e-9), tf.int32)


def channel_floor(sparsity, channels):
  """The fewest channels a layer of `channels` keeps under global ranking at `sparsity`:
  floor(CHANNEL_FLOOR_SHARE (1 - sparsity) channels), at least 1."""
  return tf.maximum(1, _floor_share(sparsity, channels))


def _relative_rms(weights: Sequence[tf.Tensor]) -> list[tf.Tensor]:
  """Per tensor, each channel's RMS over its tensor's mean RMS of live channels."""
  found = []
  for w, norm in zip(weights, channel_norms(weights)):
    per_channel = tf.cast(tf.size(w) // tf.shape(w)[-1], tf.float32)
    rms = norm / tf.sqrt(per_channel)
    live = tf.cast(tf.math.count_nonzero(rms), tf.float32)
    found.append(tf.math.divide_no_nan(rms, tf.math.divide_no_nan(tf.reduce_sum(rms), live)))
  return found


def _channel_scores(weights: Sequence[tf.Tensor], groups) -> list[tf.Tensor]:
  """Per group, each channel's relative RMS (`_relative_rms`) averaged over the group's
  tensors; the strongest channel of each group scores the largest float (never pruned)."""
  relative = _relative_rms(weights)
  scores = []
  for group in groups:
    score = tf.add_n([relative[i] for i in group]) / float(len(group))
    strongest = tf.one_hot(tf.argmax(score), tf.size(score), on_value=True, off_value=False)
    scores.append(tf.where(strongest, tf.float32.max, score))
  return scores


def _groups(weights: Sequence[tf.Tensor], groups):
  """`groups` checked (a partition of the tensors' indices, equal channel counts), or
  one group per tensor."""
  if groups is None:
    return [(i,) for i in range(len(weights))]
  groups = [tuple(g) for g in groups]
  members = sorted(i for g in groups for i in g)
  if members != list(range(len(weights))) or not all(groups):
    raise ValueError(f'channel groups must partition the {len(weights)} tensors\' indices, '
                     f'got {groups}')
  for g in groups:
    sizes = {int(weights[i].shape[-1]) for i in g}
    if len(sizes) != 1:
      raise ValueError(f'channel group {g} ties tensors of {sorted(sizes)} channels')
  return groups


def _keep_strongest(score: tf.Tensor, kept) -> tf.Tensor:
  return 1.0 - tf.cast(_lowest_k(score, tf.size(score) - kept), tf.float32)


def channel_layers_at_floor(masks: Sequence[tf.Tensor], sparsity,
                            frozen: Sequence[int] = (), groups=None) -> tf.Tensor:
  """How many of the groups of tensors (`channel_masks`) with none in `frozen` keep no
  more than the floor of their share, floor(CHANNEL_FLOOR_SHARE (1 - sparsity) C) >= 1,
  where that is below what uniform placement keeps: the global ranking squeezed them
  (a floor of 1 is only "never empty")."""
  hits = []
  for group in _groups(masks, groups):
    if set(group) & set(frozen):
      continue
    vector = channel_vector(masks[group[0]])
    channels = tf.size(vector)
    kept = tf.cast(tf.reduce_sum(vector), tf.int32)
    floor = _floor_share(sparsity, channels)
    uniform = channels - num_to_prune(sparsity, channels)
    hits.append(tf.cast(tf.logical_and(tf.logical_and(kept <= floor, floor >= 1),
                                       floor < uniform), tf.int32))
  return tf.add_n(hits) if hits else tf.constant(0, tf.int32)


def channel_masks(weights: Sequence[tf.Tensor], sparsity, placement: str = 'global',
                  dtype=tf.float32, frozen: Sequence[int] = (),
                  multiple: int = 1, groups=None) -> list[tf.Tensor]:
  """Masks pruning whole output channels: round(sparsity * C) of them, weakest first.

  The channel-granularity counterpart of `placed_magnitude_masks`: the unit
  is an output channel, scored by its root mean square (its L2 norm,
  `channel_norms`, over the square root of its number of weights), the
  channel analogue of |w|, divided by the mean RMS of its layer's live
  channels (`_channel_scores`). Without that division, one global ranking
  compares the layers' initialization scales (about 1/sqrt(fan-in)) rather
  than their channels: the paper's FashionMNIST network at 0.5 kept 1 of its
  784-input layer's 128 units and could not learn (issue 37). Divided, a
  channel ranks by how it stands in its own layer, and layers of different
  fan-in lose channels in proportion; the scores of one layer keep their
  order, so `uniform` placement is unchanged by it. A channel mask is a weight mask whose pruned channels are whole
  zero slices. `global`: one ranking over the channels of all tensors not
  in `frozen`, and no tensor keeps fewer than `channel_floor` channels (a
  quarter of its uniform share; its strongest are kept up to that;
  `channel_layers_at_floor` counts where that floor bound); `uniform`: each
  such tensor loses round(sparsity * its channels). The strongest channel
  of each tensor is never pruned (a layer without channels would cut the
  network), so the counts are exact up to C minus one channel per tensor
  (and, globally, up to the floor). Ties go to the earlier channel, and
  already-pruned channels (score 0) rank first. Tensors in `frozen`
  (indices; a model's output layer, whose units are its outputs) keep every
  channel. With `multiple` > 1, the channels each tensor keeps (after the
  ranking above) are rounded to the nearest multiple of `multiple`
  (`round_channels`) and that many of its strongest are kept: convolution
  kernels of CPU runtimes run channel counts in blocks of 8 or 16, and ONNX
  Runtime runs 19/38/77 channels slower than 16/32/64
  (benchmarks/results/conv_frontier.md). The counts are then exact up to
  that rounding.

  `groups` (a partition of the tensors' indices; default one group per
  tensor) ties tensors whose channels are pruned together
  (`core.channel_graph`: a residual addition's inputs): everything above
  holds per group, a channel scoring the mean of its tensors' relative RMS,
  and every tensor of a group gets the group's channels. A group with a
  tensor in `frozen` keeps every channel.
  """
  if placement not in ('global', 'uniform'):
    raise ValueError("channel masks take placement 'global' or 'uniform', "
                     f'got {placement!r}')
  if not isinstance(multiple, int) or multiple < 1:
    raise ValueError(f'channel multiple must be an integer >= 1, got {multiple!r}')
  groups = _groups(weights, groups)
  scores = _channel_scores(weights, groups)
  pruned_of = [g for g, group in enumerate(groups) if not set(group) & set(frozen)]
  keep = [tf.ones_like(score) for score in scores]
  if placement == 'uniform':
    for i in pruned_of:
      count = tf.minimum(num_to_prune(sparsity, tf.size(scores[i])), tf.size(scores[i]) - 1)
      keep[i] = 1.0 - tf.cast(_lowest_k(scores[i], count), tf.float32)
  elif pruned_of:
    flat = tf.concat([scores[i] for i in pruned_of], 0)
    count = tf.minimum(num_to_prune(sparsity, tf.size(flat)), tf.size(flat) - len(pruned_of))
    pruned = _lowest_k(flat, count)
    parts = tf.split(1.0 - tf.cast(pruned, tf.float32), [tf.size(scores[i]) for i in pruned_of])
    for i, part in zip(pruned_of, parts):
      floor = channel_floor(sparsity, tf.size(scores[i]))
      kept = tf.cast(tf.reduce_sum(part), tf.int32)
      keep[i] = tf.cond(kept < floor, lambda i=i, floor=floor: _keep_strongest(scores[i], floor),
                        lambda part=part: part)
  if multiple > 1:
    for i in pruned_of:
      channels = tf.size(scores[i])
      kept = round_channels(tf.reduce_sum(tf.cast(keep[i], tf.int32)), channels, multiple)
      keep[i] = _keep_strongest(scores[i], kept)
  found = [None] * len(weights)
  for group, k in zip(groups, keep):
    for i in group:
      found[i] = _expand_channels(k, weights[i], dtype)
  return found


COMPUTE_FLOOR = 0.2


def compute_layer_sparsities(sizes: Sequence[int], costs: Sequence[float], sparsity,
                             floor: float = COMPUTE_FLOOR) -> list[tf.Tensor]:
  """Per-layer sparsities of `compute` placement, at total `sparsity`.

  Keeps n - round(sparsity * n) weights in all (n = sum(sizes)) and spends
  them where a weight costs the fewest multiply-adds per example
  (`costs[i]`: a Dense kernel 1, a convolution kernel the number of its
  output positions): every layer first gets `floor` times the uniform
  density, then the rest of the budget fills the cheapest layers first (up
  to dense), layers of equal cost in proportion to their size. This is the
  exact minimum of the model's multiply-adds under those bounds, so it puts
  the sparsity where a sparse CPU engine saves time, at the same total
  sparsity as `global` or `uniform` placement (up to one weight per layer
  of rounding). floor = 1, or equal costs, is uniform placement.

  Args:
    sizes: weights per layer.
    costs: multiply-adds per weight and example, per layer
      (`pruning.macs_per_weight`).
    sparsity: total sparsity in [0, 1]; a Python number or a scalar tensor
      (TensorFlow ops only, so it runs inside TFF computations).
    floor: in (0, 1]; the least density of any layer, as a fraction of the
      uniform density 1 - sparsity.

  Returns:
    float64 scalar tensors, one sparsity per layer.
  """
  if len(sizes) != len(costs) or not sizes:
    raise ValueError(f'sizes and costs must be non-empty and of one length, got '
                     f'{len(sizes)} and {len(costs)}')
  if not 0.0 < floor <= 1.0:
    raise ValueError(f'floor must be in (0, 1], got {floor!r}')
  if isinstance(sparsity, (int, float)) and not 0.0 <= sparsity <= 1.0:
    raise ValueError(f'sparsity must be in [0, 1], got {sparsity!r}')
  n = sum(sizes)
  kept_total = tf.cast(n - num_to_prune(sparsity, n), tf.float64)
  kept = [kept_total * (floor * size / n) for size in sizes]
  left = kept_total * (1.0 - floor)
  for cost in sorted(set(costs)):
    group = [i for i, c in enumerate(costs) if c == cost]
    room = [sizes[i] - kept[i] for i in group]
    give = tf.minimum(left, tf.add_n(room))
    for i, r in zip(group, room):
      kept[i] += give * tf.math.divide_no_nan(r, tf.add_n(room))
    left -= give
  return [tf.constant(0.0, tf.float64) if size == 0 else 1.0 - k / size
          for k, size in zip(kept, sizes)]


def sparsity_masks(weights: Sequence[tf.Tensor], sparsities: Sequence[float],
                   dtype=tf.float32) -> list[tf.Tensor]:
  """Each tensor magnitude-pruned to its own sparsity (exact counts)."""
  if len(weights) != len(sparsities):
    raise ValueError(f'{len(weights)} weights but {len(sparsities)} sparsities')
  return [magnitude_masks([w], s, dtype)[0] for w, s in zip(weights, sparsities)]


def random_masks(
    masks: Sequence[tf.Tensor], sparsity, seed, dtype=tf.float32
) -> list[tf.Tensor]:
  """Prunes uniformly at random among kept weights to round(sparsity * n) zeros.

  Pruned weights stay pruned: if `masks` already has more zeros than the
  target, they are all kept as zeros.

  Args:
    masks: current masks (1 = kept).
    sparsity: target fraction of zeros.
    seed: shape [2] int seed of the stateless random draw.
    dtype: dtype of the returned masks.
  """
  kept = _flat(masks) > 0
  noise = tf.random.stateless_uniform(tf.shape(kept), seed=seed)
  # Pruned weights score -1 so they are chosen first; the rest at random.
  new = _prune_lowest(tf.where(kept, noise, -tf.ones_like(noise)), sparsity, masks, tf.float32)
  return [tf.cast(m * tf.cast(tf.cast(old, tf.bool), tf.float32), dtype)
          for m, old in zip(new, masks)]


def merge_votes(votes: Sequence[tf.Tensor], num_clients, mask_aggregation: str = 'majority_vote'):
  """Eq. 2: merged masks and their agreement from per-position keep counts.

      [m]_i = 1  if  sum_k [m_k]_i >= N / 2  else 0

  Args:
    votes: per prunable tensor, how many of the N clients kept each position.
    num_clients: the number of participating clients N.
    mask_aggregation: 'majority_vote' (Eq. 2: keep iff 2 * votes >= N) or
      'mean' (keep iff votes > 0: a weighted average of pruned models is zero
      only where every client pruned).

  Returns:
    (merged masks as float32, agreement: over all positions, the mean
    fraction of clients whose mask agrees with the merged one).
  """
  n = tf.cast(num_clients, tf.float32)
  votes = [tf.cast(v, tf.float32) for v in votes]
  if mask_aggregation == 'majority_vote':
    kept = [2.0 * v >= n for v in votes]
  else:
    kept = [v > 0.0 for v in votes]
  agreeing = tf.add_n([tf.reduce_sum(tf.where(k, v, n - v)) for k, v in zip(kept, votes)])
  size = tf.cast(tf.add_n([tf.size(v) for v in votes]), tf.float32)
  agreement = tf.math.divide_no_nan(agreeing, n * size)
  return [tf.cast(k, tf.float32) for k in kept], agreement


def mask_tensor(weight: tf.Tensor, mask) -> tf.Tensor:
  """`weight` where `mask` is non-zero (or True), else +0.0; `weight` if `mask` is None.

  Not `weight * mask`: that leaves -0.0 for negative weights, which a
  bit-exact encoder has to send as a value.
  """
  if mask is None:
    return weight
  kept = mask if mask.dtype == tf.bool else tf.not_equal(mask, 0)
  return tf.where(kept, weight, tf.zeros_like(weight))


def apply_masks(weights: Sequence[tf.Tensor], masks: Sequence) -> list[tf.Tensor]:
  """`mask_tensor` of each weight by its mask (None: not pruned)."""
  return [mask_tensor(w, m) for w, m in zip(weights, masks)]


def sparsity(weights: Sequence[tf.Tensor]) -> tf.Tensor:
  """Fraction of exact zeros over all entries of `weights`."""
  flat = tf.concat([tf.reshape(w, [-1]) for w in weights], 0)
  return 1.0 - tf.math.count_nonzero(flat, dtype=tf.float64) / tf.cast(tf.size(flat), tf.float64)


def num_nonzero(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
  """Non-zero elements of all `tensors` (int64 scalar)."""
  return tf.add_n([tf.math.count_nonzero(t, dtype=tf.int64) for t in tensors])
