"""A worker's own client data: served by client id, described by a manifest.

A worker started with `--client_data=KIND:PATH` (`tff-sparsify-worker` on a
silo host, or a coordinator's local worker) keeps its examples. Before
`worker_binary` starts, `prepare` makes a private directory (mode 0700)
holding

- `silo.json`, the manifest: the format, the element spec and, per split,
  each client's id and number of examples; no example;
- `data`, a symbolic link to PATH.

and starts `worker_binary` with that directory as its working directory
(removed by `remove` when the worker ends; one left by a worker killed
with SIGKILL is removed by the next `prepare` of the same user: a live
worker holds an exclusive `flock` on the directory's `lock` file). The
coordinator's computations read these two names relative to it
(`client_ids.py`): one computation serves every worker, each worker reads
its own data, and what the coordinator sends per client is an id, a count
and a shuffle seed. The coordinator learns which ids live where by reading
each worker's `silo.json` through a computation on that worker only, and
checks it as untrusted data (`parse_manifest`).

Pure Python (no TensorFlow: the launcher must stay single-threaded until
`worker_binary` starts); a file without a stored element spec is read in a
child process.
"""

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

from tff_sparsify.simulation import sources
from tff_sparsify.simulation.sources import spec as spec_lib

MANIFEST_FILE = 'silo.json'
DATA_LINK = 'data'
LOCK_FILE = 'lock'
PREFIX = 'tff_sparsify_silo_'
_LOCKS = {}  # directory -> the descriptor holding its lock, while this process serves it.
MANIFEST_VERSION = 1
# A manifest is a few dozen bytes per client: 64 MiB is over a million clients.
MAX_MANIFEST_BYTES = 64 << 20
MAX_ID_CHARS = 256


class ManifestError(ValueError):
  """A manifest (a worker's reply) that cannot be used; the message says why."""


def bad_client_id(client_id) -> str:
  """Why `client_id` cannot be served by id ('' if it can)."""
  if not isinstance(client_id, str) or not client_id:
    return 'not a non-empty string'
  if len(client_id) > MAX_ID_CHARS:
    return f'longer than {MAX_ID_CHARS} characters'
  if client_id in ('.', '..') or any(c in client_id for c in '/\\') or not client_id.isprintable():
    return 'holds a path separator, is . or .., or holds unprintable characters'
  return ''


def _spec_in_child(client_data: str) -> dict:
  """The element spec read off the first record, by a child that imports TensorFlow."""
  code = ('import json, sys; from tff_sparsify.simulation import sources; '
          'kind, path = sources.parse(sys.argv[1]); '
          'print(json.dumps(sources.module(kind).read_spec(path)))')
  result = subprocess.run([sys.executable, '-P', '-c', code, client_data],
                          capture_output=True, text=True, timeout=300, check=False,
                          cwd='/', env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  if result.returncode != 0:
    lines = result.stderr.strip().splitlines()
    raise sources.SourceError(lines[-1] if lines else 'cannot read the element spec')
  return spec_lib.from_json(result.stdout.strip().splitlines()[-1], client_data)


def build_manifest(client_data: str) -> dict:
  """The manifest of `KIND:PATH` (`sources.SourceError` naming what is wrong)."""
  kind, path = sources.parse(client_data)
  module = sources.module(kind)
  module.check(path)
  element_spec = module.stored_spec(path)
  if element_spec is None:
    element_spec = _spec_in_child(client_data)
  names = module.split_names(path)
  splits = {}
  for split, clients in module.client_counts(path).items():
    for client_id in clients:
      why = bad_client_id(client_id)
      if why:
        raise sources.SourceError(f'{path}: client id {client_id!r} {why}')
    splits[split] = dict(name=names[split], clients=clients)
  if not splits.get(sources.TRAIN, {}).get('clients'):
    raise sources.SourceError(f'{path}: no training clients')
  return dict(version=MANIFEST_VERSION, format=kind, element_spec=element_spec, splits=splits)


def prepare(client_data: str) -> str:
  """A new private directory with `silo.json` and the `data` link; `remove` removes it.

  Removes first the directories of this user's workers that died without
  removing theirs (SIGKILL): those whose lock no process holds.
  """
  manifest = build_manifest(client_data)
  _, path = sources.parse(client_data)
  remove_stale(tempfile.gettempdir())
  directory = tempfile.mkdtemp(prefix=PREFIX)  # Mode 0700.
  try:
    # Locked before it has its name: a `lock` file is never seen unlocked
    # while its worker lives.
    fd = os.open(os.path.join(directory, LOCK_FILE + '.new'),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    _LOCKS[directory] = fd
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(os.path.join(directory, LOCK_FILE + '.new'), os.path.join(directory, LOCK_FILE))
    os.symlink(os.path.abspath(path), os.path.join(directory, DATA_LINK))
    fd = os.open(os.path.join(directory, MANIFEST_FILE),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, 'w') as f:
      json.dump(manifest, f, sort_keys=True)
  except BaseException:
    remove(directory)
    raise
  return directory


def remove(directory: str):
  """Removes a directory `prepare` made and releases its lock."""
  shutil.rmtree(directory, ignore_errors=True)
  fd = _LOCKS.pop(directory, None)
  if fd is not None:
    os.close(fd)


def remove_stale(parent: str) -> list[str]:
  """Removes this user's worker directories in `parent` whose lock is free; their paths.

  Only real directories named `PREFIX*`, owned by this effective user,
  with a `lock` file no process holds (its worker is gone). Anything else
  (another user's, a link, a directory without a lock) is left alone.
  """
  removed = []
  try:
    names = os.listdir(parent)
  except OSError:
    return removed
  for name in names:
    path = os.path.join(parent, name)
    if not name.startswith(PREFIX) or path in _LOCKS:
      continue
    try:
      info = os.lstat(path)
      if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        continue
      fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
      continue
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      os.close(fd)  # Held: its worker lives.
      continue
    shutil.rmtree(path, ignore_errors=True)
    os.close(fd)
    removed.append(path)
  return removed


def parse_manifest(raw: bytes, where: str) -> dict:
  """A worker's `silo.json`, checked as untrusted data; ManifestError naming `where`."""
  if len(raw) > MAX_MANIFEST_BYTES:
    raise ManifestError(f'{where}: manifest of {len(raw)} bytes, over the '
                        f'{MAX_MANIFEST_BYTES} allowed')
  try:
    manifest = json.loads(raw)
  except (ValueError, UnicodeDecodeError) as e:
    raise ManifestError(f'{where}: manifest is not JSON ({e})') from None
  if not isinstance(manifest, dict) or manifest.get('version') != MANIFEST_VERSION:
    raise ManifestError(f'{where}: not a version {MANIFEST_VERSION} manifest (is the '
                        'worker a different tff_sparsify version?)')
  if manifest.get('format') not in sources.SOURCES:
    raise ManifestError(f'{where}: format {manifest.get("format")!r} is not one of '
                        f'{", ".join(sources.SOURCES)}')
  try:
    spec_lib.from_json(json.dumps(manifest.get('element_spec')), f'{where}: element spec')
  except spec_lib.SpecError as e:
    raise ManifestError(str(e)) from None
  splits = manifest.get('splits')
  if not isinstance(splits, dict) or sources.TRAIN not in splits or not set(splits) <= {
      sources.TRAIN, sources.TEST}:
    raise ManifestError(f'{where}: manifest splits must be train and optionally test')
  for split, entry in splits.items():
    if (not isinstance(entry, dict) or not isinstance(entry.get('name'), str)
        or bad_client_id(entry['name']) or not isinstance(entry.get('clients'), dict)):
      raise ManifestError(f'{where}: manifest split {split!r} is malformed')
    for client_id, count in entry['clients'].items():
      why = bad_client_id(client_id)
      if why:
        raise ManifestError(f'{where}: client id {client_id[:80]!r} {why}')
      if not isinstance(count, int) or isinstance(count, bool) or not 0 < count < 2**40:
        raise ManifestError(f'{where}: client {client_id!r} has {count!r} examples')
  if not splits[sources.TRAIN]['clients']:
    raise ManifestError(f'{where}: no training clients')
  return manifest
