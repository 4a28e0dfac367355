"""pytest set-up: absl flags parsed (tf.test needs them), no unowned TFF worker."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('NM_DISABLE_ANALYTICS', '1')

from absl import flags  # pylint: disable=g-import-not-at-top

from tff_sparsify.simulation import execution  # pylint: disable=g-import-not-at-top

flags.FLAGS.mark_as_parsed()
execution.drop_import_time_default_context()
