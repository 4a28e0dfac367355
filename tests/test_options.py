"""Each option declared once (issue 36): the flags are the configuration fields.

Oracles: absl's own flag registry (what `--help` prints and the parser
takes), and the algorithm configurations the registry makes, field by field,
against values set here by hand.
"""

import dataclasses

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized

from tff_sparsify import config as config_lib
from tff_sparsify import validation
# pylint: disable=unused-import  (importing a binary defines its flags)
from tff_sparsify.binaries import benchmark_inference
from tff_sparsify.binaries import export as export_binary
from tff_sparsify.binaries import train
# pylint: enable=unused-import
from tff_sparsify.deploy import export_configs
from tff_sparsify.learning import registry

# A valid value other than the default for every field an algorithm's
# configuration holds, with the flags it needs beside it.
ALTERNATIVES = {
    'client_learning_rate': (0.05, {}),
    'server_learning_rate': (0.5, {}),
    'client_momentum': (0.5, {}),
    'proximal_strength': (0.01, {}),
    'mask_aggregation': ('mean', {}),
    'sparsity_placement': ('uniform', {}),
    'sparsity_granularity': ('channel', {}),
    'channel_multiple': (4, dict(sparsity_granularity='channel')),
    'seed': (7, {}),
    'readjust_every': (7, {}),
    'readjust_ratio': (0.2, {}),
    'readjust_halving_rounds': (500, {}),
    'initial_reconfigurations': (2, {}),
    'client_message_prune_rate': (0.3, {}),
    'server_message_prune_rate': (0.2, {}),
    'quantize_bits': (8, {}),
    'quantize_threshold': (100, {}),
    'quantizer': ('sparse', dict(quantize_bits=8)),
    'message_prune_target': ('delta', dict(client_message_prune_rate=0.3)),
    'final_sparsity': (0.5, {}),
    'total_rounds': (12, {}),
    'initial_sparsity': (0.1, {}),
    'sparsify_start_round': (2, {}),
    'sparsify_frequency': (2, {}),
    'sparsify_exponent': (2.0, {}),
    'clients_per_round': (5, {}),
    'dp_clip_norm': (0.5, {}),
    'dp_noise_multiplier': (1.0, dict(dp_clip_norm=0.5)),
    'dp_delta': (1e-3, dict(dp_clip_norm=0.5)),
    'dp_noise_seed': (3, dict(dp_clip_norm=0.5)),
    'dp_target_quantile': (0.5, dict(dp_clip_norm=0.5)),
    'dp_mechanism': ('distributed_skellam', dict(dp_clip_norm=0.5, dp_noise_multiplier=1.0)),
    'secure_aggregation': (True, {}),
}
# Fixed by the algorithm's name, not a flag.
BY_NAME = frozenset({'mode', 'pruning_method'})
# One-shot schedules (S_0 = S_T): S_0, F and n play no part; pruning at
# initialization also fixes t_0 = 0 (README, `--algorithm`).
ONE_SHOT = frozenset({'initial_sparsity', 'sparsify_frequency', 'sparsify_exponent'})
DERIVED = {'oneshot_pruning': ONE_SHOT, 'snip': ONE_SHOT | {'sparsify_start_round'},
           'grasp': ONE_SHOT | {'sparsify_start_round'},
           'prunefl': ONE_SHOT | {'sparsify_start_round'}}
# Combinations refused in one line naming the flag (checked by the configuration).
REFUSED = {
    ('fedsparsify_local', 'channel_multiple'),
    ('random_pruning', 'sparsity_placement'), ('random_pruning', 'sparsity_granularity'),
    ('random_pruning', 'channel_multiple'),
    *((name, field) for name in ('snip', 'grasp', 'prunefl')
      for field in ('sparsity_placement', 'sparsity_granularity', 'channel_multiple')),
    # Differential privacy where the clients send something outside the noise.
    *((name, field) for name in ('fedsparsify_local', 'snip', 'grasp', 'prunefl')
      for field in ('dp_clip_norm', 'dp_noise_multiplier', 'dp_delta', 'dp_noise_seed',
                    'dp_target_quantile', 'dp_mechanism', 'secure_aggregation')),
}


def leaves(config, prefix=''):
  """{field name: value} of a configuration, nested configurations flattened."""
  found = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      found.update(leaves(value))
    else:
      found[prefix + field.name] = value
  return found


class OptionsTest(parameterized.TestCase):

  @parameterized.parameters(config_lib.TrainConfig, config_lib.ExecutionConfig,
                            export_configs.ExportConfig, export_configs.TimingConfig)
  def test_each_field_is_a_flag_with_its_default_help_and_choices(self, config_class):
    for field in dataclasses.fields(config_class):
      flag = flags.FLAGS[field.name]
      default = list(field.default) if isinstance(field.default, tuple) else field.default
      self.assertEqual(flag.default, default, field.name)
      self.assertTrue(field.metadata['help'])
      if field.metadata['choices'] is None:
        self.assertEqual(flag.help, field.metadata['help'], field.name)
      else:  # absl puts the allowed values first.
        self.assertEqual(flag.parser.enum_values, list(field.metadata['choices']), field.name)
        self.assertEqual(flag.help, f'<{"|".join(field.metadata["choices"])}>: '
                         f'{field.metadata["help"]}', field.name)

  def test_choices_are_checked_by_the_configuration(self):
    with self.assertRaisesRegex(validation.ConfigError,
                                "partition='round_robin': must be one of iid, non_iid"):
      config_lib.TrainConfig(partition='round_robin')
    self.assertIsNone(config_lib.TrainConfig(evaluation=None).evaluation)

  @parameterized.parameters(*registry.names())
  def test_every_field_of_the_algorithm_configuration_is_set_from_its_flag(self, name):
    base = dict(algorithm=name, total_rounds=10, final_sparsity=0.4)
    defaults = leaves(config_lib.TrainConfig(**base).algorithm_config)
    run_fields = set(config_lib.field_names())
    self.assertTrue(defaults)
    for field in sorted(defaults):
      if field in BY_NAME:
        continue
      self.assertIn(field, run_fields, f'{name}: {field} is not a flag')
      value, companions = ALTERNATIVES[field]
      values = dict(base, **companions, **{field: value})
      try:
        run = config_lib.TrainConfig(**values)
      except validation.ConfigError as e:
        self.assertIn((name, field), REFUSED, f'{name}: --{field}={value!r} refused: {e}')
        self.assertIn(e.field, {field, *companions})
        continue
      self.assertNotIn((name, field), REFUSED)
      got = leaves(run.algorithm_config)[field]
      if field in DERIVED.get(name, ()):
        self.assertEqual(got, defaults[field], f'{name}: {field} plays no part')
      else:
        self.assertEqual(got, value, f'{name}: --{field}')
      # Saved with the run: the configuration written to config.json gives it back.
      self.assertEqual(config_lib.TrainConfig.from_dict(run.as_dict()), run)


if __name__ == '__main__':
  absltest.main()
