r"""Is the channel-pruned architecture itself too small? Dense and compact, trained alike.

Issue 37 asks channel granularity to stay within 1 point of FedAvg and run 3x
faster. For our MobileNet-style model 3x needs 0.6 of the channels pruned
(`benchmarks.compact_speed`); this asks whether the architecture that is left
can reach the dense model's accuracy at all, apart from federated training and
the pruning schedule: the dense model and the compact architecture of a
setting (channels pruned as FedSparsify-Global prunes them, uniform placement,
kept counts rounded to the multiple, `deploy.compact`), the latter re-initialised
(`tf.keras.models.clone_model`), each trained centrally with the same
optimizer, batch and epochs on FashionMNIST's 60,000 training images, test
accuracy after every epoch.

  python -m benchmarks.channel_capacity --model=mobilenet --settings=0.6:16 \
    --epochs=10 --output=benchmarks/results/channel_capacity_mobilenet

Results: {output}.md and .json.
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from benchmarks import runs
from tff_sparsify import files
from tff_sparsify.deploy import compact as compact_lib
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning_layout
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import execution
# pylint: enable=g-import-not-at-top

# Before absl parses the flags: a flag it refuses exits at once, and TFF's
# import-time context would then print a traceback at shutdown.
execution.drop_import_time_default_context()

_MODEL = flags.DEFINE_enum('model', 'mobilenet', [m for m in models.MODELS if m != 'paper'],
                           'Our FashionMNIST model.')
_SETTINGS = flags.DEFINE_list('settings', ['0.6:16'], 'channel sparsity:multiple pairs.')
_EPOCHS = flags.DEFINE_integer('epochs', 10, 'Epochs over the 60,000 training images.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Training batch (the federated runs\').')
_LR = flags.DEFINE_float('learning_rate', 0.05, 'SGD learning rate (the federated runs\').')
_SEED = flags.DEFINE_integer('seed', 1990, 'Weights and shuffling.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output prefix (default: '
                              'benchmarks/results/channel_capacity_{model}).')


def _compact_architecture(layout, sparsity: float, multiple: int) -> tf.keras.Model:
  model = models.create_keras_model('fashion_mnist', _SEED.value, prunable=True,
                                    model=_MODEL.value)
  layout.prune_variables(model.trainable_variables, model.non_trainable_variables, sparsity,
                         'uniform', channel_multiple=multiple)
  compact, _ = compact_lib.compact_model(tfmot.sparsity.keras.strip_pruning(model))
  return tf.keras.models.clone_model(compact)  # The architecture, fresh weights.


def _train(model: tf.keras.Model, data) -> list:
  tf.keras.utils.set_random_seed(_SEED.value)
  model.compile(tf.keras.optimizers.SGD(_LR.value), models.loss_fn(), metrics=['accuracy'])
  x, y, test_x, test_y = data
  history = model.fit(x, y, batch_size=_BATCH.value, epochs=_EPOCHS.value, shuffle=True,
                      validation_data=(test_x, test_y), verbose=0)
  return [float(a) for a in history.history['val_accuracy']]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  settings = runs.channel_settings(_SETTINGS.value)
  layout = pruning_layout.layout_from_model_fn(  # Before any model: it builds in a graph.
      models.build_model_fn('fashion_mnist', model=_MODEL.value, prunable=True), 'channel')
  centralized = data_sources.load_centralized('fashion_mnist')
  scale = lambda images: images.astype(np.float32) / 255.0
  data = (scale(centralized.train_images), centralized.train_labels.astype(np.int32),
          scale(centralized.test_images), centralized.test_labels.astype(np.int32))
  found = {}
  cases = [('dense', 0.0, 1, models.create_keras_model('fashion_mnist', _SEED.value,
                                                       model=_MODEL.value))]
  cases += [(f'{s} / {m}', s, m, _compact_architecture(layout, s, m)) for s, m in settings]
  rows = []
  for name, sparsity, multiple, model in cases:
    accuracy = _train(model, data)
    params = models.num_trainable_parameters(model)
    found[name] = dict(sparsity=sparsity, multiple=multiple, params=params,
                       test_accuracy=accuracy)
    print(name, params, accuracy, flush=True)
    best_dense = max(found['dense']['test_accuracy'])
    rows.append(dict(architecture=name, params=f'{params:,}',
                     last_epoch=f'{accuracy[-1]:.4f}', best_epoch=f'{max(accuracy):.4f}',
                     points_below_dense_best=f'{100 * (best_dense - max(accuracy)):.2f}'))
  output = _OUTPUT.value or os.path.join(runs.REPO, 'benchmarks', 'results',
                                         f'channel_capacity_{_MODEL.value}')
  with open(output + '.json', 'w') as f:
    json.dump(found, f, indent=1)
  runs.write_report([
      f'# Channel-pruned {_MODEL.value}: the architecture left, trained from scratch', '',
      f'Command: `python -m benchmarks.channel_capacity --model={_MODEL.value} '
      f'--settings={",".join(_SETTINGS.value)} --epochs={_EPOCHS.value}`; central '
      f'training on FashionMNIST\'s 60,000 images, SGD {_LR.value}, batch {_BATCH.value}, '
      f'seed {_SEED.value}; test accuracy on the 10,000 test images after each epoch (every '
      'epoch in the .json); sparsity / multiple: channels pruned uniformly, kept counts '
      'rounded to the multiple, compact, re-initialised.', '',
      *files.markdown_table(list(rows[0]), rows, str)], output + '.md')


if __name__ == '__main__':
  app.run(main)
