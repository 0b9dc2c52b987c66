"""Files and requests users hand over: one rule for every entry point (docs/reliability.md).

A bad file or request gets ONE line that names it and says what is wrong: CLIs print it and exit with status 1
(no traceback), the play server answers it as JSON with a 4xx/5xx status. Outputs are written under a temporary
name and renamed when complete, so a failure leaves nothing partial behind.

  UserInputError          the error type of a bad user file / value (a ValueError); its message is one line
  user_errors()           the error types a CLI reports in one line (everything else is a bug: traceback)
  cli_main(main)          wraps an absl ``main``: user_errors() -> "error: <one line>" on stderr, exit status 1
  parse_flags             absl's flags_parser with one-line errors (bad --config.x=y overrides, config files)
  atomic_output(path)     context manager: yields a temporary path next to ``path``, renamed to it on success
  load_npy / read_npz     numpy files read with the file named in every failure (truncated, not numpy, pickled)
  read_json               a JSON object file (config.json, metadata) with the file named in every failure
  require_finite          NaN / inf refused, naming the file and the first bad index
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import tokenize
import zipfile
import zlib

import numpy as np


class UserInputError(ValueError):
  """A file or value handed over by a user is unusable; the message (one line) names it and says why."""

  def __init__(self, message: str):
    super().__init__(one_line(message))


def one_line(message) -> str:
  """``message`` on one line (whitespace runs collapsed), at most 600 characters."""
  s = " ".join(str(message).split())
  return s if len(s) <= 600 else s[:597] + "..."


def user_errors() -> tuple:
  """The error types reported in one line: bad user files and values (data.common.BadDataError is a
  UserInputError), damaged checkpoints, missing / unreadable paths (imported on first use: this module stays free
  of heavy imports)."""
  from vid2world_jax.storage.integrity import CheckpointCorrupt  # pylint: disable=import-outside-toplevel
  return (UserInputError, CheckpointCorrupt, FileNotFoundError, NotADirectoryError,
          IsADirectoryError, PermissionError)


def cli_main(main):
  """Decorator for an absl ``main(argv)``: a user error becomes ``error: <one line>`` on stderr and exit 1."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except user_errors() as e:
      sys.exit(f"error: {one_line(e)}")
  return wrapped


def parse_flags(argv, flag_values=None):
  """absl flag parsing (``app.run(main, flags_parser=parse_flags)``) with one-line errors: an unknown config
  field, a bad override value (``--config.x=y``), a missing or broken config file, a missing required flag."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  fv = flags.FLAGS if flag_values is None else flag_values
  try:
    rest = fv(argv)
    for name in fv:   # config_flags keeps a config file that failed to load as an object raising on first use
      err = getattr(fv[name].value, "_error", None) if type(fv[name].value).__name__ == "_ErrorConfig" else None
      if err is not None:
        raise ValueError(f"--{name}: cannot load the config file ({type(err).__name__}: {err})")
      if type(fv[name]).__name__ == "_ConfigFlag" and fv[name].present and fv[name].value is None:
        raise ValueError(f"--{name}: the config file's get_config() returned None")
    return rest
  except Exception as e:  # noqa: BLE001 - any parse failure (incl. the config file's own errors) is a user error
    msg = one_line(str(e).replace("\\n", " ").replace("\\'", "'"))
    sys.exit(f"error: bad command line: {msg}")


def _partial_name(path: str) -> str:
  d, base = os.path.split(os.path.abspath(path))
  stem, ext = os.path.splitext(base)
  return os.path.join(d, f".{stem}.partial-{os.getpid()}{ext}")   # same extension: writers pick the format by it


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    os.remove(path)


@contextlib.contextmanager
def atomic_output(path: str):
  """Yields a temporary path in ``path``'s folder (file or folder, same extension); renamed to ``path`` when the
  block completes, removed when it raises. An existing ``path`` is replaced only on success."""
  path = os.path.abspath(str(path))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = _partial_name(path)
  _remove(tmp)
  try:
    yield tmp
    if os.path.isdir(tmp) and os.path.isdir(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    _remove(tmp)


# errors numpy / zipfile raise on a damaged .npy / .npz (truncated, not a zip, bad CRC, bad header)
_NUMPY_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, TypeError,
                      UnicodeDecodeError, SyntaxError, tokenize.TokenError, MemoryError)


def _exists(path: str, what: str) -> None:
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f"{what} not found: {path!r}")
  if os.path.isdir(path):
    raise UserInputError(f"{what} {path}: is a folder, expected a file")


def load_npy(path: str, what: str = "array file") -> np.ndarray:
  """The array in the ``.npy`` file ``path`` (no pickles); a damaged file raises UserInputError naming it."""
  _exists(path, what)
  try:
    x = np.load(path, allow_pickle=False)
  except _NUMPY_READ_ERRORS as e:
    raise UserInputError(f"{what} {path}: not a readable .npy array ({type(e).__name__}: {e})") from None
  if not isinstance(x, np.ndarray):   # an .npz handed where an .npy is expected
    x.close()
    raise UserInputError(f"{what} {path}: expected a .npy array, got an .npz archive")
  return x


def read_npz(path: str, what: str = "array file") -> dict:
  """Every array of the ``.npz`` file ``path`` (no pickles), read completely (CRC checked); a damaged file raises
  UserInputError naming it."""
  _exists(path, what)
  try:
    with np.load(path, allow_pickle=False) as z:
      if not hasattr(z, "files"):
        raise UserInputError(f"{what} {path}: expected an .npz archive, got a single .npy array")
      return {k: np.asarray(z[k]) for k in z.files}
  except UserInputError:
    raise
  except _NUMPY_READ_ERRORS as e:
    raise UserInputError(f"{what} {path}: not a readable .npz archive ({type(e).__name__}: {e})") from None


def load_npz(path: str, keys, what: str = "array file") -> tuple[str, np.ndarray]:
  """``(key, array)`` of the first of ``keys`` in the ``.npz`` file ``path`` (``read_npz``)."""
  arrays = read_npz(path, what)
  key = next((k for k in keys if k in arrays), None)
  if key is None:
    raise UserInputError(f"{what} {path}: expected an array named {' or '.join(map(repr, keys))}, found "
                         f"{sorted(arrays)}")
  return key, arrays[key]


def read_json(path: str, what: str = "JSON file", required=()) -> dict:
  """The JSON object in ``path``; a missing / damaged file, a non-object or missing ``required`` keys raise."""
  _exists(path, what)
  try:
    with open(path, "rb") as f:
      obj = json.loads(f.read().decode("utf-8"))
  except (ValueError, UnicodeDecodeError, RecursionError) as e:
    raise UserInputError(f"{what} {path}: not valid JSON ({type(e).__name__}: {e})") from None
  if not isinstance(obj, dict):
    raise UserInputError(f"{what} {path}: expected a JSON object, got {type(obj).__name__}")
  missing = [k for k in required if k not in obj]
  if missing:
    raise UserInputError(f"{what} {path}: missing {', '.join(map(repr, missing))}")
  return obj


def require_finite(x: np.ndarray, path: str, what: str, dtype=None) -> np.ndarray:
  """``x`` (cast to ``dtype`` when given) as a real numeric array of finite values, else UserInputError naming
  ``path`` and the first bad index (values that overflow ``dtype`` count as infinite)."""
  x = np.asarray(x)
  if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating) or x.dtype == np.bool_):
    raise UserInputError(f"{what} {path}: expected real numbers, got dtype {x.dtype}")
  if dtype is not None:
    with np.errstate(over="ignore", invalid="ignore"):
      x = x.astype(dtype)
  if np.issubdtype(x.dtype, np.inexact):
    bad = ~np.isfinite(x)
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise UserInputError(f"{what} {path}: {int(bad.sum())} of {x.size} values are NaN or infinite "
                           f"(first at index {first})")
  return x
