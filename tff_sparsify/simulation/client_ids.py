"""Client datasets built where the data is: the coordinator sends client ids.

Every execution mode trains this way. Each worker serves client data of its
own (`silo.py`: `--client_data` on `tff-sparsify-worker`, or a coordinator's
local workers reading the coordinator's file or the built-in data written
once per run to a TFRecord directory); the learning process is composed with
a dataset computation (TFF's
`compose_dataset_computation_with_learning_process`, the mechanism behind
`ClientData.dataset_computation`) that maps a client's

    OrderedDict(id=string, split=string, examples=int64, seed=int64)

to its preprocessed dataset on the worker, reading the worker's own `data`.
The coordinator sends per round the model and these few bytes per client;
it never opens a silo's examples. `examples` is checked against what the
data holds (`assert_cardinality`): a silo whose data changed since its
manifest fails the round with the count it found.

`Federation` is what the coordinator knows: each worker's manifest (read
through a computation on that worker alone, checked as untrusted data),
which clients live where, and how to cut a round's clients among workers.
"""

import collections
import dataclasses
import hashlib
import json
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.simulation import evaluation
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import silo
from tff_sparsify.simulation import sources
from tff_sparsify.simulation.sources import spec as spec_lib

ARG_SPEC = collections.OrderedDict(
    id=tf.TensorSpec([], tf.string), split=tf.TensorSpec([], tf.string),
    examples=tf.TensorSpec([], tf.int64), seed=tf.TensorSpec([], tf.int64))


class FederationError(ValueError):
  """Workers whose data cannot make one federation; the message names the worker."""


@dataclasses.dataclass(frozen=True)
class Federation:
  """The workers' client data as the coordinator knows it: ids and counts, no examples.

  Attributes:
    workers: each worker's address, in the execution context's order.
    manifests: each worker's checked manifest (`silo.parse_manifest`).
    shared: every worker reads the same data (a coordinator's local workers):
      any client can go to any worker. Otherwise each client goes to the
      worker that holds it (silos).
  """
  workers: tuple
  manifests: tuple
  shared: bool

  @property
  def format(self) -> str:
    return self.manifests[0]['format']

  @property
  def element_spec(self) -> dict:
    return self.manifests[0]['element_spec']

  def clients(self, split: str = sources.TRAIN) -> dict[str, tuple[int, str, int]]:
    """{client id: (worker index, the file's split name, examples)}, ids sorted (cached)."""
    cache = self.__dict__.setdefault('_clients', {})
    if split not in cache:
      cache[split] = self._clients_of(split)
    return cache[split]

  def _clients_of(self, split: str) -> dict[str, tuple[int, str, int]]:
    found = {}
    for index, manifest in enumerate(self.manifests[:1] if self.shared else self.manifests):
      entry = manifest['splits'].get(split)
      if entry:
        for client_id, count in entry['clients'].items():
          found[client_id] = (index, entry['name'], count)
    return dict(sorted(found.items()))

  def has_split(self, split: str) -> bool:
    return any(split in m['splits'] for m in self.manifests)

  def fingerprint(self) -> str:
    """A digest of which worker holds which clients, with what spec (for resume)."""
    content = [dict(format=m['format'], element_spec=m['element_spec'], splits=m['splits'])
               for m in (self.manifests[:1] if self.shared else self.manifests)]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

  def describe(self) -> list[dict]:
    """Per worker: its address and its clients per split (for the run record)."""
    return [dict(worker=w, clients={s: sorted(e['clients']) for s, e in m['splits'].items()})
            for w, m in zip(self.workers, self.manifests)]

  def arguments(self, client_ids: Sequence[str], seeds: Sequence[int],
                split: str = sources.TRAIN):
    """(client arguments ordered by worker, per-worker counts or None if shared)."""
    table = self.clients(split)
    rows = [(table[cid][0], i) for i, cid in enumerate(client_ids)]
    if not self.shared:
      rows.sort()  # Stable: each worker's clients keep the sampling order.
    args = [collections.OrderedDict(id=client_ids[i], split=table[client_ids[i]][1],
                                    examples=np.int64(table[client_ids[i]][2]),
                                    seed=np.int64(seeds[i])) for _, i in rows]
    if self.shared:
      return args, None
    counts = [0] * len(self.workers)
    for worker, _ in rows:
      counts[worker] += 1
    return args, counts


def _read_manifest_computation():
  @tff.tensorflow.computation
  def read_manifest():
    return tf.io.read_file(silo.MANIFEST_FILE)
  return read_manifest


def discover(context, *, shared: bool) -> Federation:
  """Each worker's manifest, read on that worker alone and checked; FederationError naming it."""
  read = _read_manifest_computation()
  manifests = []
  for worker in context.workers:
    try:
      raw = worker.context.invoke(read, None)
    except (execution.WorkerLostError, execution.WorkerReplyError):
      raise
    except Exception:  # pylint: disable=broad-except  (TFF wraps the worker's error)
      raise FederationError(
          f'worker {worker.address} serves no client data (start it with '
          f'tff-sparsify-worker --client_data=KIND:PATH)') from None
    if not isinstance(raw, bytes):
      raise FederationError(f'worker {worker.address}: manifest is not bytes')
    try:
      manifests.append(silo.parse_manifest(raw, f'worker {worker.address}'))
    except silo.ManifestError as e:
      raise FederationError(str(e)) from None
    if shared:
      break
  addresses = tuple(w.address for w in context.workers)
  if shared:
    manifests = manifests * len(addresses)
  federation = Federation(workers=addresses, manifests=tuple(manifests), shared=shared)
  _check_consistent(federation)
  return federation


def _check_consistent(federation: Federation):
  first, first_worker = federation.manifests[0], federation.workers[0]
  owner = {}
  for worker, manifest in zip(federation.workers, federation.manifests):
    if manifest['format'] != first['format']:
      raise FederationError(
          f'worker {worker} serves {manifest["format"]} data, worker {first_worker} '
          f'{first["format"]}: every worker of a run must serve one format')
    if manifest['element_spec'] != first['element_spec']:
      raise FederationError(
          f'worker {worker}: element spec {json.dumps(manifest["element_spec"])} differs '
          f'from worker {first_worker}\'s {json.dumps(first["element_spec"])}')
    if federation.shared:
      continue
    for split, entry in manifest['splits'].items():
      for client_id in entry['clients']:
        other = owner.setdefault((split, client_id), worker)
        if other != worker:
          raise FederationError(f'client {client_id!r} is held by worker {other} and by '
                                f'worker {worker}: client ids must be unique across silos')


def build_dataset_computation(
    federation: Federation, features: dict[str, str],
    preprocess_fn: Callable[[tf.data.Dataset, tf.Tensor], tf.data.Dataset],
    *, held_out_fraction: float = 0.0, held_out: bool = False,
    graph_seed: Optional[int] = None,
) -> tff.Computation:
  """`client argument -> preprocessed dataset`, run on the worker holding the client.

  Args:
    federation: the workers' data (format and element spec).
    features: the input and label features (`--features`).
    preprocess_fn: `(dataset of OrderedDict(x, y), seed) -> dataset` (shuffle,
      batch, the model's element function).
    held_out_fraction: with `held_out`, the examples `evaluation.is_held_out`
      keeps (a client's test part) or, without it, the rest (its training
      part); 0 keeps every example.
    graph_seed: TensorFlow's global seed, as the coordinator's run sets it
      (`tf.keras.utils.set_random_seed`): the shuffle then draws the same
      order as a dataset made on the coordinator.
  """
  module = sources.module(federation.format)
  selected = spec_lib.select(federation.element_spec, features, 'the workers\' client data')

  @tff.tensorflow.computation(ARG_SPEC)
  def client_dataset(arg):
    if graph_seed is not None:
      tf.random.set_seed(graph_seed)
    dataset = module.client_dataset(silo.DATA_LINK, arg['id'], arg['split'], selected, features)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(arg['examples']))
    if held_out_fraction > 0:
      dataset = evaluation.keep_part(dataset, held_out_fraction, held_out)
    return preprocess_fn(dataset, arg['seed'])

  return client_dataset


def write_builtin(shards: Sequence[np.ndarray], images: np.ndarray, labels: np.ndarray,
                  directory: str) -> str:
  """The built-in clients of `shards` to `directory` (`tensor_dir`), as the workers read them.

  Client i is `data_sources.client_id(i)` with examples `images[shards[i]]`, in
  that order: the clients `data.to_client_data` makes on the coordinator.
  Returns the `--client_data` value of the directory.
  """
  from tff_sparsify.simulation import data_sources  # pylint: disable=g-import-not-at-top
  from tff_sparsify.simulation.sources import tensor_dir  # pylint: disable=g-import-not-at-top
  clients = {sources.TRAIN: collections.OrderedDict(
      (data_sources.client_id(i), (images[s], labels[s].astype(np.int64)))
      for i, s in enumerate(shards))}
  tensor_dir.write(clients, directory)
  return f'tensor_dir:{directory}'
