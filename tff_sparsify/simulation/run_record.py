"""Where a run keeps its record, and whether a command may continue it.

A run's directories are `{root}/checkpoints|results|logdir/{experiment}`. Its
configuration is saved (atomically) to `results/{experiment}/config.json`
when it starts. A later command with the same experiment name resumes it only
if its configuration is the same (`config.differences`); otherwise it stops
before writing anything, naming each differing flag. `overwrite=True` starts
the experiment afresh: its checkpoints, results and logs are removed first.

Pure Python, like `config`: the binaries check this before TensorFlow loads.
"""

import dataclasses
import fcntl
import os
import shutil
import stat

from tff_sparsify import config as config_lib

CONFIG_FILE = 'config.json'
CHECKPOINT_PREFIX = 'program_state_'


@dataclasses.dataclass(frozen=True)
class OutputDirs:
  checkpoints: str
  results: str
  logdir: str

  def all(self) -> tuple[str, str, str]:
    return (self.checkpoints, self.results, self.logdir)


def output_dirs(root_output_dir: str, experiment_name: str) -> OutputDirs:
  return OutputDirs(
      checkpoints=os.path.join(root_output_dir, 'checkpoints', experiment_name),
      results=os.path.join(root_output_dir, 'results', experiment_name),
      logdir=os.path.join(root_output_dir, 'logdir', experiment_name),
  )


class RunMismatchError(Exception):
  """The experiment exists with another configuration; `str` is the user's message."""


class RunLockedError(Exception):
  """Another process runs the experiment, or its directory is unsafe; `str` says which."""


_held_locks = {}  # path -> open file: held for the life of the process.


def _check_not_open_to_others(directory: str):
  """Refuses a directory others may write (as ssh refuses loose permissions)."""
  info = os.stat(directory)
  if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
    raise RunLockedError(
        f'{directory} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}): '
        'they could replace the run\'s checkpoints; use a directory only you can write '
        '(chmod go-w)')
  if info.st_uid not in (os.getuid(), 0):
    raise RunLockedError(f'{directory} belongs to another user (uid {info.st_uid}): use a '
                         'directory of your own')


def _lock_path(root_output_dir: str, experiment_name: str) -> str:
  return os.path.join(root_output_dir, f'.{experiment_name}.lock')


def _locked_message(experiment_name, root_output_dir, holder, path):
  return (f'experiment {experiment_name!r} in {root_output_dir} is being run by process '
          f'{holder} (lock {path}); wait for it to end, or give another --experiment_name')


def lock(root_output_dir: str, experiment_name: str) -> str:
  """Holds the experiment's lock until this process exits; RunLockedError if held.

  `{root}/.{experiment}.lock`, `flock`ed: the kernel releases it when the
  process dies, however it dies, so a crashed run never leaves a stale lock.
  The holder's PID is written into it for the message of a second copy.
  The root directory (created if missing, mode 0700) must not be writable
  by other users. Returns the lock file's path.
  """
  os.makedirs(root_output_dir, mode=0o700, exist_ok=True)
  _check_not_open_to_others(root_output_dir)
  path = _lock_path(root_output_dir, experiment_name)
  if path in _held_locks:
    return path
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
  lock_file = os.fdopen(fd, 'r+')
  try:
    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = lock_file.read().strip() or 'unknown'
    lock_file.close()
    raise RunLockedError(
        _locked_message(experiment_name, root_output_dir, holder, path)) from None
  lock_file.seek(0)
  lock_file.truncate()
  lock_file.write(f'{os.getpid()}\n')
  lock_file.flush()
  _held_locks[path] = lock_file
  return path


def _refuse_links(root: str, dirs: OutputDirs, inner: bool = True):
  """RunMismatchError if a symbolic link in the run's tree could redirect its writes."""
  for directory in dirs.all():
    parent = os.path.dirname(directory)
    for path in (parent, directory):
      if os.path.islink(path):
        raise RunMismatchError(f'{path} is a symbolic link: a run writes only into real '
                               f'directories under {root}; remove the link')
    if not inner or not os.path.isdir(directory):
      continue
    for current, subdirs, names in os.walk(directory):
      for name in subdirs + names:
        path = os.path.join(current, name)
        if os.path.islink(path):
          raise RunMismatchError(f'{path} is a symbolic link: writes of the run could land '
                                 'elsewhere; remove it (or pass --overwrite to start afresh)')


def _has_checkpoints(directory: str) -> bool:
  return os.path.isdir(directory) and any(
      name.startswith(CHECKPOINT_PREFIX) for name in os.listdir(directory))


def _format(value) -> str:
  return 'unset' if value is None else str(value)


def _check_record(config: config_lib.TrainConfig, dirs: OutputDirs):
  """The saved record if `config` may continue it, None if there is none; else RunMismatchError."""
  config_path = os.path.join(dirs.results, CONFIG_FILE)
  if not os.path.exists(config_path):
    if _has_checkpoints(dirs.checkpoints):
      raise RunMismatchError(
          f'experiment {config.experiment!r} has checkpoints in {dirs.checkpoints} '
          f'but no {CONFIG_FILE} to check this command against; pass --overwrite '
          'to start it afresh, or give a new --experiment_name')
    return None
  try:
    saved = config_lib.load_dict(config_path)
  except config_lib.ConfigError as e:
    raise RunMismatchError(
        f'experiment {config.experiment!r}: its record {config_path} cannot be '
        f'read ({e.reason}); pass --overwrite to start it afresh, or give a new '
        '--experiment_name') from e
  found = config_lib.differences(saved, config)
  if found:
    lines = [f'experiment {config.experiment!r} in {config.root_output_dir} was '
             'started with other flags:']
    lines += [f'  --{name}: checkpoint has {_format(before)}, command has {_format(now)}'
              for name, before, now in found]
    lines.append('Run the same flags again to resume it, give a new '
                 '--experiment_name, or pass --overwrite to start it afresh.')
    raise RunMismatchError('\n'.join(lines))
  return saved


def _check_not_locked(experiment_name: str, root: str, path: str):
  """RunLockedError if another process holds the lock file `path` (it is not created)."""
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
  except FileNotFoundError:
    return
  with os.fdopen(fd) as lock_file:
    try:
      fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = lock_file.read().strip() or 'unknown'
      raise RunLockedError(_locked_message(experiment_name, root, holder, path)) from None


def precheck(config: config_lib.TrainConfig, *, overwrite: bool = False):
  """What `lock` and `prepare` would refuse, checked without writing anything.

  For the binaries, before TensorFlow loads (about 15 s): an output root
  others can write, a held lock, a symbolic link in the run's tree, a record
  of other flags. `lock` and `prepare` check again when they act.

  Raises:
    RunLockedError, RunMismatchError: as `lock` and `prepare` would.
  """
  root = config.root_output_dir
  if os.path.isdir(root):
    _check_not_open_to_others(root)
    path = _lock_path(root, config.experiment)
    # Held by this process already (a run called twice in one process): not a second copy.
    if path not in _held_locks:
      _check_not_locked(config.experiment, root, path)
  dirs = output_dirs(root, config.experiment)
  _refuse_links(root, dirs, inner=not overwrite)
  if not overwrite:
    _check_record(config, dirs)


def prepare(config: config_lib.TrainConfig, *, overwrite: bool = False) -> OutputDirs:
  """Checks that `config` may write its experiment, then records it.

  Args:
    config: the run's configuration.
    overwrite: remove the experiment's old checkpoints, results and logs and
      start afresh.

  Returns:
    The run's directories (created).

  Raises:
    RunMismatchError: the experiment was started with another configuration,
      or has checkpoints but no readable configuration; nothing was changed.
  """
  dirs = output_dirs(config.root_output_dir, config.experiment)
  _refuse_links(config.root_output_dir, dirs, inner=not overwrite)
  if overwrite:
    for directory in dirs.all():
      shutil.rmtree(directory, ignore_errors=True)
  else:
    saved = _check_record(config, dirs)
    if saved is not None and saved.get('total_rounds') == config.total_rounds:
      for directory in dirs.all():
        os.makedirs(directory, exist_ok=True)
      return dirs  # The record stays as the run first wrote it.
  config_path = os.path.join(dirs.results, CONFIG_FILE)
  for directory in dirs.all():
    os.makedirs(directory, exist_ok=True)
  config_lib.save(config, config_path)
  return dirs
