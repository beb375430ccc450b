"""Files written whole: every file the project writes before a rename goes through here.

A temporary file or folder is created by `tempfile.mkstemp` / `mkdtemp` in the destination folder (a fresh random
name, opened with O_CREAT | O_EXCL | O_NOFOLLOW), written, then renamed over the destination. A symlink or file
planted at a predictable temporary name (`eval_test.json.tmp`) therefore can never redirect a write, and a kill
leaves either the old file or the new one, never a torn one. Files get the usual permissions (0666 less the umask),
not mkstemp's 0600.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any


def _umask() -> int:
  mask = os.umask(0o022)  # read once, at import (single-threaded), and put back at once
  os.umask(mask)
  return mask


_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


@contextlib.contextmanager
def replacing(path: str, binary: bool = False, newline: str | None = None):
  """`with replacing(path) as f: f.write(...)`: writes a temporary file beside `path` and renames it over `path`
  when the block ends without an error (the temporary file is removed otherwise)."""
  folder, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp', dir=folder)
  try:
    with os.fdopen(fd, 'wb' if binary else 'w', **({} if binary else {'encoding': 'utf-8', 'newline': newline})) as f:
      yield f
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  with replacing(path) as f:
    f.write(text)


def write_json(path: str, obj: Any, **kwargs) -> None:
  """json.dump(obj) into `path`, whole or not at all (kwargs go to json.dump, e.g. indent=2)."""
  with replacing(path) as f:
    json.dump(obj, f, **kwargs)


def make_temp_dir(parent: str, prefix: str) -> str:
  """A new folder in `parent` (created when missing) with a fresh random name starting with `prefix`, to be filled
  and renamed into place (`commit_dir`)."""
  os.makedirs(parent, exist_ok=True)
  path = tempfile.mkdtemp(prefix=prefix, dir=parent)
  os.chmod(path, _DIR_MODE)
  return path


def commit_dir(tmp: str, final: str) -> bool:
  """Renames the filled folder `tmp` to `final`; False (and `tmp` removed) when another process committed `final`
  first."""
  try:
    os.rename(tmp, final)
    return True
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    return False


def sha256_file(path: str) -> str:
  """The sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()
