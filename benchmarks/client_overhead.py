r"""Where FedSparsify's client time goes: one client's local epoch, in process.

The same local epoch (the paper's FashionMNIST FC, one non-IID client, batch
32, SGD lr 0.02), as the `dataset.reduce` loop of TFF's client work, run as a
`tf.function` in this process (no TFF runtime, so the differences are the
training step's own):

- `plain`: the unwrapped Keras model (what TFF's FedAvg trains);
- `tfmot_wrapped`: the model wrapped by `prune_low_magnitude`, trained as is:
  every step runs each wrapper's step increment, assert, schedule `tf.cond`
  and `weight * mask` assignment;
- `wrapped_skip_updates`: wrapped, with `pruning.skip_wrapper_updates`;
- `wrapped_skip_updates_masked`: the same plus masking the weights after
  every optimizer step (what `client_work` does, at sparsity 0.9);
- `fed_sparsify_client`: `client_work`'s whole client update (global mode:
  the above plus the delta, the counts and the byte sizes).

Variants are interleaved, in a new random order each repeat (the position in
a repeat alone moved a variant by 10%); the median of `--repeats` is
reported.

  python -m benchmarks.client_overhead --repeats=9

Results: benchmarks/results/client_overhead.{json,md}.
"""

import collections
import json
import os
import random
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.core import masks as masks_lib
from tff_sparsify.learning import client_work
from tff_sparsify.learning import configs
from tff_sparsify.learning import pruning_layout as layout_lib
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning
from tff_sparsify.learning.algorithms import fedsparsify_global
from tff_sparsify.simulation import run_data as data
from tff_sparsify.simulation import execution

# Before absl parses the flags: a flag it refuses exits at once, and TFF's
# import-time context would then print a traceback at shutdown.
execution.drop_import_time_default_context()

_REPEATS = flags.DEFINE_integer('repeats', 9, 'Timed repeats per variant.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'FashionMNIST IDX dir.')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(os.path.dirname(__file__), 'results', 'client_overhead'),
    'Output path prefix (.json and .md are appended).')
SEED = 1990
LEARNING_RATE = 0.02


def _epoch_fn(prunable: bool, skip_updates: bool, mask_every_step: bool):
  model = models.build_model_fn('fashion_mnist', seed=SEED, prunable=prunable)()
  weights = tff.learning.models.ModelWeights.from_model(model)
  keep = [None] * len(weights.trainable)
  if prunable:
    layout = layout_lib.pruning_layout(model)
    pruning.set_pruning_step(model._keras_model, 1)  # pylint: disable=protected-access
    if skip_updates:
      pruning.skip_wrapper_updates(model._keras_model)  # pylint: disable=protected-access
    if mask_every_step:
      prunable_weights = layout.prunable_list(weights.trainable)
      new_masks = masks_lib.magnitude_masks(prunable_weights, 0.9)
      for i, mask in zip(layout.masks, new_masks):
        weights.non_trainable[i].assign(mask)
      keep = [None if m is None else tf.not_equal(m, 0)
              for m in layout.masks_by_trainable(weights.non_trainable)]
  optimizer = tff.learning.optimizers.build_sgdm(LEARNING_RATE)
  trainable = list(weights.trainable)

  @tf.function
  def epoch(dataset):
    step = client_work.build_train_step(model, optimizer, trainable, keep)
    specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
    return dataset.reduce((tf.zeros([], tf.int64), optimizer.initialize(specs)), step)[0]
  return epoch


def _client_update_fn():
  model_fn = models.build_model_fn('fashion_mnist', seed=SEED, prunable=True)
  config = configs.FedSparsifyConfig(schedule=configs.NEVER_PRUNE)
  update = client_work._build_client_update(  # pylint: disable=protected-access
      model_fn, tff.learning.optimizers.build_sgdm(LEARNING_RATE), config,
      fedsparsify_global.GlobalMagnitudeRules(config),
      tff.learning.LoopImplementation.DATASET_REDUCE)
  model = model_fn()
  layout = layout_lib.pruning_layout(model)
  weights = tff.learning.models.ModelWeights.from_model(model)
  new_masks = masks_lib.magnitude_masks(layout.prunable_list(weights.trainable), 0.9)
  for i, mask in zip(layout.masks, new_masks):
    weights.non_trainable[i].assign(mask)
  initial = tf.nest.map_structure(tf.convert_to_tensor, weights)
  return lambda dataset: update(
      initial, dataset, tf.constant(False), tf.constant(0.9, tf.float64))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if _REPEATS.value < 1:
    raise app.UsageError(f'--repeats must be >= 1, got {_REPEATS.value}')
  tf.keras.utils.set_random_seed(SEED)
  execution.drop_import_time_default_context()
  federated = data.load_federated(
      'fashion_mnist', partition_type='non_iid', num_clients=10, seed=SEED,
      classes_per_client=2, data_dir=_DATA_DIR.value)
  dataset = federated.train.create_tf_dataset_for_client(
      federated.train.client_ids[0]).batch(32).cache()
  variants = collections.OrderedDict(
      plain=_epoch_fn(False, False, False),
      tfmot_wrapped=_epoch_fn(True, False, False),
      wrapped_skip_updates=_epoch_fn(True, True, False),
      wrapped_skip_updates_masked=_epoch_fn(True, True, True),
      fed_sparsify_client=_client_update_fn(),
  )
  for fn in variants.values():  # Trace, and fill the cache.
    fn(dataset)
  times = collections.defaultdict(list)
  order = random.Random(SEED)
  for _ in range(_REPEATS.value):
    for name in order.sample(list(variants), len(variants)):
      start = time.perf_counter()
      variants[name](dataset)
      times[name].append(time.perf_counter() - start)
  times = collections.OrderedDict((n, times[n]) for n in variants)
  medians = {name: statistics.median(t) for name, t in times.items()}
  result = collections.OrderedDict(
      command='python -m benchmarks.client_overhead ' + ' '.join(sys.argv[1:]),
      examples=int(dataset.reduce(0, lambda n, b: n + tf.shape(b['y'])[0])),
      seconds=times, median_seconds=medians,
      ratio_to_plain={n: m / medians['plain'] for n, m in medians.items()})
  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  with open(_OUTPUT.value + '.json', 'w') as f:
    json.dump(result, f, indent=2)
  lines = ['# One client\'s local epoch, in process', '',
           f'Command: `{result["command"]}`', '',
           f'{result["examples"]} examples, batch 32, median of {_REPEATS.value}.', '',
           '| variant | median ms | ratio to plain |', '|---|---|---|']
  lines += [f'| {n} | {1000 * m:.1f} | {result["ratio_to_plain"][n]:.2f} |'
            for n, m in medians.items()]
  with open(_OUTPUT.value + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
