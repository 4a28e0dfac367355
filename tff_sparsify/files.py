"""Writes that a crash cannot leave half done.

Every output a run or an export produces (configuration, summary, final
model, weights, export reports) goes through here: the new content is written
to a temporary name in the same directory, flushed to disk, and renamed over
the old one (`os.replace` is atomic on POSIX), so a crash or a full disk in
mid-write leaves the previous good version. TFF's own writers
(`FileProgramStateManager`, `CSVFileReleaseManager` in write mode) already do
the same for checkpoints and `metrics.csv`.
"""

import contextlib
import os
import shutil
from typing import Iterator


def _fsync(path: str):
  if os.path.isdir(path):
    for root, _, names in os.walk(path):
      for name in names:
        _fsync(os.path.join(root, name))
    return
  with open(path, 'rb') as f:
    os.fsync(f.fileno())


def remove_tree(path: str):
  """Removes a file or directory tree if it exists."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    os.remove(path)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path to write `path`'s new content to; renames it on success.

  The temporary name keeps `path`'s extension (Keras chooses the format by
  it). On any exception the temporary file or directory is removed and
  `path` is left as it was. A directory replaces a directory: the old one is
  moved aside first, then removed (two renames; a crash between them leaves
  the old one under a `.old` name, never a partial new one at `path`).
  """
  directory, base = os.path.split(os.path.abspath(path))
  stem, ext = os.path.splitext(base)
  temp = os.path.join(directory, f'.{stem}.tmp{os.getpid()}{ext}')
  remove_tree(temp)
  try:
    yield temp
    _fsync(temp)
    if os.path.isdir(temp) and os.path.isdir(path):
      old = os.path.join(directory, f'.{stem}.old{os.getpid()}{ext}')
      remove_tree(old)
      os.replace(path, old)
      os.replace(temp, path)
      remove_tree(old)
    else:
      os.replace(temp, path)
  finally:
    remove_tree(temp)


def atomic_write_bytes(path: str, payload: bytes):
  with atomic_path(path) as temp:
    with open(temp, 'wb') as f:
      f.write(payload)


def atomic_write_text(path: str, text: str):
  atomic_write_bytes(path, text.encode())


def markdown_table(header, rows, fmt=str) -> list[str]:
  """The lines of a Markdown table: `header` (column keys), then `fmt(row[key])` per cell."""
  return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header),
          *['| ' + ' | '.join(fmt(row[key]) for key in header) + ' |' for row in rows]]
