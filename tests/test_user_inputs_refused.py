"""Bad user data and models, as a user meets them: one line naming the flag, exit 2, nothing written.

Each case runs `python -m binaries.train` as a subprocess (all of them side
by side) and checks its stderr is exactly one line, `train.py: error:
--FLAG=VALUE: reason`, and that the output directory was never made.
"""

import json
import os
import sqlite3
import textwrap
import zipfile

import numpy as np
import tensorflow as tf

from tests import fixtures
from tff_sparsify.simulation.sources import writer

MODULE = textwrap.dedent('''\
    import tensorflow as tf

    def dense_model():
      return tf.keras.Sequential([tf.keras.layers.InputLayer((6, 6, 2)),
                                  tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])

    def not_a_model():
      return 'a string'
    ''')


class RefusedInputsTest(tf.test.TestCase):

  def test_each_bad_input_is_one_line_and_writes_nothing(self):
    root = self.create_tempdir().full_path
    module_dir = os.path.join(root, 'mods')
    os.makedirs(module_dir)
    with open(os.path.join(module_dir, 'user_models.py'), 'w') as f:
      f.write(MODULE)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    good = writer.write({'train': {'a': (x, np.arange(8) % 3), 'b': (x, np.arange(8) % 3)}},
                        f'sqlite:{root}/good.sqlite')
    labels6 = writer.write({'train': {'a': (x, np.arange(8) % 6)}}, f'tfrecord_dir:{root}/l6')
    empty_db = f'{root}/empty.sqlite'
    sqlite3.connect(empty_db).execute('CREATE TABLE t (a)').connection.close()
    with open(f'{root}/text.sqlite', 'w') as f:
      f.write('not a database')
    tf.keras.Sequential([tf.keras.layers.InputLayer((6, 6, 2)), tf.keras.layers.Flatten(),
                         tf.keras.layers.Dense(3)]).save(f'{root}/dense.keras')
    tf.keras.Sequential([tf.keras.layers.InputLayer((4,)), tf.keras.layers.Dense(3)]).save(
        f'{root}/small_input.keras')
    tf.keras.Sequential([tf.keras.layers.InputLayer((6, 6, 2)),
                         tf.keras.layers.GlobalAveragePooling2D(),
                         tf.keras.layers.LayerNormalization()]).save(f'{root}/no_kernels.keras')
    tf.keras.Sequential([tf.keras.layers.InputLayer((6, 6, 2)), tf.keras.layers.Flatten(),
                         tf.keras.layers.Dense(4), tf.keras.layers.BatchNormalization(),
                         tf.keras.layers.Dense(3)]).save(f'{root}/batch_norm.keras')
    with zipfile.ZipFile(f'{root}/keras3.keras', 'w') as archive:
      archive.writestr('metadata.json', json.dumps({'keras_version': '3.3.3'}))
      archive.writestr('config.json', '{}')
    dense = f'--model={root}/dense.keras'
    cases = {  # name: (argv, flag, reason regex)
        'missing file': ([f'--client_data=sqlite:{root}/none.sqlite', dense], 'client_data',
                         'no such file'),
        'unknown format': (['--client_data=parquet:x', dense], 'client_data',
                           'must be KIND:PATH with KIND one of sqlite, tfrecord_dir'),
        'not sqlite': ([f'--client_data=sqlite:{root}/text.sqlite', dense], 'client_data',
                       'not a SQLite database'),
        'not tff layout': ([f'--client_data=sqlite:{empty_db}', dense], 'client_data',
                           "no table 'examples': not TFF's SqlClientData layout"),
        'missing feature': ([f'--client_data=sqlite:{good}', dense,
                             '--features=x:pixels,y:label'], 'features',
                            "has no feature 'pixels'"),
        'labels outside': ([f'--client_data=tfrecord_dir:{labels6}', dense], 'client_data',
                           r'has label 5 but the model has 3 outputs'),
        'input does not fit': ([f'--client_data=sqlite:{good}',
                                f'--model={root}/small_input.keras'], 'model',
                               r"does not take the data's input float32\[6, 6, 2\]"),
        'no import': ([f'--client_data=sqlite:{good}', '--model=no_such_package.mod:build'],
                      'model', 'cannot import no_such_package.mod'),
        'not a model': ([f'--client_data=sqlite:{good}', '--model=user_models:not_a_model'],
                        'model', 'returned str, not a tf.keras.Model'),
        'keras 3': ([f'--client_data=sqlite:{good}', f'--model={root}/keras3.keras'], 'model',
                    'was saved by Keras 3.3.3'),
        'missing model': ([f'--client_data=sqlite:{good}', f'--model={root}/none.keras'],
                          'model', 'no such file'),
        'nothing prunable': ([f'--client_data=sqlite:{good}', f'--model={root}/no_kernels.keras',
                              '--algorithm=fedsparsify_global'], 'algorithm',
                             'prunes, but the model has no layer tfmot can prune'),
        'dp with batch norm': ([f'--client_data=sqlite:{good}', f'--model={root}/batch_norm.keras',
                                '--dp_clip_norm=1', '--clients_per_round=2'], 'dp_clip_norm',
                               'moving statistics'),
        'dp with local masks': ([f'--client_data=sqlite:{good}', dense, '--dp_clip_norm=1',
                                 '--algorithm=fedsparsify_local'], 'dp_clip_norm',
                                'masks are merged in the clear'),
        'noise without clip': ([f'--client_data=sqlite:{good}', dense,
                                '--dp_noise_multiplier=1'], 'dp_noise_multiplier',
                               r'needs --dp_clip_norm > 0'),
        'distributed dp seeded': ([f'--client_data=sqlite:{good}', dense, '--dp_clip_norm=1',
                                   '--dp_noise_multiplier=1', '--dp_noise_seed=3',
                                   '--dp_mechanism=distributed_skellam'], 'dp_noise_seed',
                                  'the clients draw their noise from their own clocks'),
        'too many per round': ([f'--client_data=sqlite:{good}', dense, '--clients_per_round=3'],
                               'clients_per_round', 'must be at most the 2 clients'),
    }
    env = dict(fixtures.subprocess_env(), PYTHONPATH=module_dir)
    runs = {}
    for name, (argv, _, _) in cases.items():
      out = os.path.join(root, 'out', name.replace(' ', '_'))
      runs[name] = (out, fixtures.start_binary(
          'train', [*argv, f'--root_output_dir={out}', '--total_rounds=2'], env=env))
    for name, (out, proc) in runs.items():
      _, err = proc.communicate(timeout=300)
      err = err.decode()
      _, flag, reason = cases[name]
      with self.subTest(name):
        self.assertEqual(proc.returncode, 2, err)
        self.assertNotIn('Traceback', err)
        self.assertLen(err.strip().splitlines(), 1, err)
        self.assertRegex(err.strip(), rf'^train.py: error: --{flag}=.*: .*{reason}')
        self.assertFalse(os.path.exists(out), f'{name}: {out} was written')
