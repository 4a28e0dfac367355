"""Test fixtures: small FashionMNIST-format IDX files, running binaries in process."""

import contextlib
import gzip
import hashlib
import io
import os
import struct
import subprocess
import sys

from absl.testing import flagsaver
import numpy as np

FILES = dict(
    train_images='train-images-idx3-ubyte.gz',
    train_labels='train-labels-idx1-ubyte.gz',
    test_images='t10k-images-idx3-ubyte.gz',
    test_labels='t10k-labels-idx1-ubyte.gz',
)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
  header = struct.pack('>i', magic) + struct.pack(f'>{array.ndim}i', *array.shape)
  return header + array.astype(np.uint8).tobytes()


def write_gz(path: str, payload: bytes):
  with gzip.open(path, 'wb') as f:
    f.write(payload)


def synthetic_images(labels: np.ndarray, seed: int) -> np.ndarray:
  """Class c lights up row band c: a pattern a small model learns quickly."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 60, size=(len(labels), 28, 28))
  for i, label in enumerate(labels):
    images[i, 2 * label + 4: 2 * label + 7, :] += 180
  return images.astype(np.uint8)


def write_fashion_mnist_like(
    directory: str, num_train: int = 400, num_test: int = 100, seed: int = 0
) -> str:
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  for split, n in (('train', num_train), ('test', num_test)):
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    write_gz(os.path.join(directory, FILES[f'{split}_images']),
             idx_bytes(synthetic_images(labels, seed + n), 2051))
    write_gz(os.path.join(directory, FILES[f'{split}_labels']),
             idx_bytes(labels, 2049))
  return directory


def read_test_set(directory: str) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) of the test split written by `write_fashion_mnist_like`."""
  arrays = []
  for name, dims in (('test_images', 3), ('test_labels', 1)):
    with gzip.open(os.path.join(directory, FILES[name]), 'rb') as f:
      payload = f.read()
    shape = struct.unpack(f'>{dims}i', payload[4:4 + 4 * dims])
    arrays.append(np.frombuffer(payload, np.uint8, offset=4 + 4 * dims).reshape(shape))
  return arrays[0], arrays[1].astype(np.int64)


def run_binary(module, argv):
  """Runs a binary's `run()` in this process with `argv` (after the program name).

  Returns (exit code, stdout, stderr); flags are restored afterwards.
  """
  out, err = io.StringIO(), io.StringIO()
  code = 0
  with flagsaver.flagsaver(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    old_argv = sys.argv
    sys.argv = [module.__name__.rsplit('.', 1)[-1]] + list(argv)
    try:
      module.run()
    except SystemExit as e:
      code = e.code
    finally:
      sys.argv = old_argv
  return code or 0, out.getvalue(), err.getvalue()


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env() -> dict:
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', NM_DISABLE_ANALYTICS='1')


def start_binary(module: str, argv, **kwargs):
  """Starts `python -m binaries.{module} argv...` as a user would; returns the Popen."""
  kwargs.setdefault('env', subprocess_env())
  return subprocess.Popen(
      [sys.executable, '-m', f'binaries.{module}'] + list(argv), cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def run_binary_process(module: str, argv, timeout: float = 300, **kwargs):
  """Runs a binary as a subprocess; returns (exit code, stdout, stderr) as text."""
  proc = start_binary(module, argv, **kwargs)
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out.decode(), err.decode()


def tree_snapshot(root: str) -> dict:
  """Every file under `root` with its content hash (to prove nothing changed).

  Not the experiments' lock files (`<root>/.<experiment>.lock`): a run takes
  its lock before its first write, by design, and a refused resume has taken
  it too.
  """
  snapshot = {}
  for directory, _, names in os.walk(root):
    for name in names:
      if directory == root and name.startswith('.') and name.endswith('.lock'):
        continue
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        snapshot[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return snapshot


def build_process(name: str, model_fn=None, *, dataset: str = 'fashion_mnist', seed: int = 1,
                  **flag_values):
  """The registry's learning process `name`, configured from flag-named values.

  `model_fn` defaults to the paper's model for `dataset`, wrapped for pruning
  when the configuration needs it. Returns (process, configuration).
  """
  from tff_sparsify.learning import models  # pylint: disable=g-import-not-at-top
  from tff_sparsify.learning import registry  # pylint: disable=g-import-not-at-top
  algorithm = registry.get(name)
  config = algorithm.from_flags(flag_values)
  if model_fn is None:
    model_fn = models.build_model_fn(
        dataset, seed=seed, prunable=registry.uses_prunable_model(config))
  return algorithm.build(model_fn, config), config


def read_json(path: str):
  import json  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    return json.load(f)


def add_host_namespace(ns: str, veth: str, host_ip: str, ns_ip: str):
  """Another "host" for network tests: namespace `ns` joined to this one by a veth pair.

  This side is `host_ip` on `veth`, the other `ns_ip` (both /24); any
  leftover of an earlier run is removed first. Needs root. Undo with
  `remove_host_namespace`.
  """
  def run(*args):
    subprocess.run(args, check=True, capture_output=True)

  remove_host_namespace(ns, veth)
  run('ip', 'netns', 'add', ns)
  run('ip', 'link', 'add', veth, 'type', 'veth', 'peer', 'name', veth + 'p')
  run('ip', 'link', 'set', veth + 'p', 'netns', ns)
  run('ip', 'addr', 'add', f'{host_ip}/24', 'dev', veth)
  run('ip', 'link', 'set', veth, 'up')
  run('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', f'{ns_ip}/24', 'dev', veth + 'p')
  run('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', veth + 'p', 'up')
  run('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up')


def remove_host_namespace(ns: str, veth: str):
  subprocess.run(['ip', 'link', 'del', veth], capture_output=True, check=False)
  subprocess.run(['ip', 'netns', 'del', ns], capture_output=True, check=False)
