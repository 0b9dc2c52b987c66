"""Generic episodes: the on-disk format for a user's own robot / game data (and the embedded dataset).

Format (one directory):
  <dir>/<name>.npz        one file per episode, written with np.savez (uncompressed or compressed):
      frames  [T, H, W, 3] uint8 RGB    (all episodes of a directory may have different T, H, W)
      actions [T, A] float32             action taken at frame t (raw; the trainer shifts it by one)
      success ()  bool                   optional: whether the recorded policy succeeded
  <dir>/splits.json       optional: {"train": [names...], "test": [names...]} (names without ".npz").
                          Without it every episode belongs to split "train" and other splits raise.
  <dir>/meta.json         optional free-form metadata (the embedded dataset stores policies/success there).
Episodes are ordered by file name; episode_id = position in that order (over all splits).
"""

from __future__ import annotations

from collections.abc import Callable

import json
import os
import shutil
import struct
import threading
import zipfile

import numpy as np

from vid2world_jax.data import common


def write_episode(path: str, frames: np.ndarray, actions: np.ndarray, success: bool | None = None,
                  compress: bool = False) -> None:
  """Write one episode in the generic format (validates shapes/dtypes)."""
  frames = np.asarray(frames)
  actions = np.asarray(actions, np.float32)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  if actions.ndim != 2 or actions.shape[0] != frames.shape[0]:
    raise ValueError(f"actions must be [T, A] with T={frames.shape[0]}, got {actions.shape}")
  arrays = {"frames": frames, "actions": actions}
  if success is not None:
    arrays["success"] = np.asarray(bool(success))
  tmp = path + ".tmp.npz"
  (np.savez_compressed if compress else np.savez)(tmp, **arrays)
  os.replace(tmp, path)


# .npy headers are parsed with ast.literal_eval; on CPython 3.11.7 two threads parsing at once can crash the
# interpreter ("AST constructor recursion depth mismatch"), and grain reads with several
# threads. Every header parse in this module (np.load included) holds this lock; bulk frame copies do not.
_HEADER_LOCK = threading.Lock()


def _npz_array_shape(npz_path: str, key: str):
  """Shape of one array of a .npz without reading its data."""
  with zipfile.ZipFile(npz_path) as zf, zf.open(key + ".npy") as f:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, _ = read(f)
  return shape


def stored_array_location(npz_path: str, key: str):
  """(byte offset, shape, dtype) of an UNCOMPRESSED, C-ordered array inside a .npz, or None (compressed /
  Fortran order). Lets a clip read memory-map only its frames instead of loading the whole episode."""
  with zipfile.ZipFile(npz_path) as zf:
    info = zf.getinfo(key + ".npy")
  if info.compress_type != zipfile.ZIP_STORED:
    return None
  with open(npz_path, "rb") as f:
    f.seek(info.header_offset)
    head = f.read(30)
    if head[:4] != b"PK\x03\x04":
      return None
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    f.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if fortran or dtype.hasobject:
      return None
    return f.tell(), tuple(shape), dtype


class EpisodeSource:
  """Reads a directory of generic .npz episodes. See module docstring."""

  name = "episodes"

  def __init__(self, path: str, *, split: str, action_dim: int, span: int, on_bad_data: str,
               resize_mode: str = "crop"):
    if not path or not os.path.isdir(path):
      raise common.BadDataError(f"episodes directory not found: {path!r}")
    self.path = path
    self.resize_mode = resize_mode
    self.on_bad_data = on_bad_data
    self.action_dim = action_dim
    names = sorted(f[:-4] for f in os.listdir(path) if f.endswith(".npz") and not f.endswith(".tmp.npz"))
    if not names:
      raise common.BadDataError(f"no .npz episodes in {path}")
    ids = {n: i for i, n in enumerate(names)}
    split_file = os.path.join(path, "splits.json")
    if os.path.exists(split_file):
      with open(split_file) as f:
        splits = json.load(f)
      if split not in splits:
        raise ValueError(f"split {split!r} not in {split_file} (has {sorted(splits)})")
      wanted = splits[split]
      missing = [n for n in wanted if n not in ids]
      if missing:
        raise common.BadDataError(f"{split_file}: split {split!r} lists missing episodes {missing[:5]}")
    elif split == "train":
      wanted = names
    else:
      raise ValueError(f"split {split!r} requested but {path} has no splits.json (only 'train' = all episodes)")
    episodes = []
    for n in wanted:
      ep = self._index_one(n, ids[n])
      if ep is not None:
        episodes.append(ep)
    self.episodes = common.filter_short(episodes, span, on_bad_data)
    if not self.episodes:
      raise common.BadDataError(f"no usable episodes in {path} split {split!r} (span {span})")

  def _index_one(self, name: str, episode_id: int):
    fn = os.path.join(self.path, name + ".npz")
    try:
      with _HEADER_LOCK, np.load(fn) as z:
        if "frames" not in z.files or "actions" not in z.files:
          raise ValueError(f"missing keys, has {z.files}")
        actions = z["actions"]
        fshape = _npz_array_shape(fn, "frames")
    except Exception as e:  # noqa: BLE001 - corrupt / truncated zip, bad header, ...
      common.bad_data(self.on_bad_data, "corrupt_file", f"{fn} episode {name}: cannot read ({type(e).__name__}: {e})")
      return None
    where = f"{fn} episode {name}"
    if len(fshape) != 4 or fshape[-1] != 3 or actions.ndim < 1 or fshape[0] != actions.shape[0]:
      common.bad_data(self.on_bad_data, "bad_shape",
                      f"{where}: frames {fshape} / actions {actions.shape} are not [T,H,W,3] / [T,A] with equal T")
      return None
    if not common.validate_actions(actions, self.action_dim, where, self.on_bad_data):
      return None
    return common.EpisodeInfo(episode_id=episode_id, name=name, file=fn, length=int(fshape[0]))

  def read(self, i: int, frame_indices: np.ndarray):
    ep = self.episodes[i]
    with _HEADER_LOCK:
      loc = stored_array_location(ep.file, "frames")
    if loc is not None:  # memory-map: read only the clip's frames
      off, shape, dtype = loc
      frames = np.memmap(ep.file, dtype=dtype, mode="r", offset=off, shape=shape)
      with _HEADER_LOCK, np.load(ep.file) as z:
        actions = z["actions"]
      if frames.dtype != np.uint8:
        raise common.BadDataError(f"{ep.file} episode {ep.name}: frames dtype {frames.dtype}, expected uint8")
      return np.array(frames[frame_indices]), actions[frame_indices].astype(np.float32)
    with _HEADER_LOCK, np.load(ep.file) as z:   # compressed episodes: whole arrays
      frames = z["frames"]
      actions = z["actions"]
    if frames.dtype != np.uint8:
      raise common.BadDataError(f"{ep.file} episode {ep.name}: frames dtype {frames.dtype}, expected uint8")
    return frames[frame_indices], actions[frame_indices].astype(np.float32)


# ------------------------------------------------------------------------------------------------------------
# Recordings made by the embedded simulators (data/breakout.py, data/simulator.py).

def default_cache_dir() -> str:
  """``$V2W_CACHE/embedded`` or ``~/.cache/vid2world_jax/embedded``."""
  return os.path.join(os.environ.get("V2W_CACHE", os.path.expanduser("~/.cache/vid2world_jax")), "embedded")


def write_recording_index(out_dir: str, meta: dict, train: list, test: list) -> dict:
  """``meta.json`` and ``splits.json`` (``train`` / ``test`` / ``all``) of a recording; returns ``meta``."""
  with open(os.path.join(out_dir, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
  with open(os.path.join(out_dir, "splits.json"), "w") as f:
    json.dump({"train": train, "test": test, "all": train + test}, f, indent=1)
  return meta


def cached_recording(path: str, record: Callable[[str], object]) -> str:
  """``path`` if it holds a finished recording (``meta.json``), else ``record(tmp_dir)`` into a temporary folder
  renamed into place when complete (an interrupted recording never looks finished)."""
  if os.path.exists(os.path.join(path, "meta.json")):
    return path
  tmp = f"{path}.tmp{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  record(tmp)
  try:
    os.replace(tmp, path)
  except OSError:  # another process finished first
    shutil.rmtree(tmp, ignore_errors=True)
  return path
