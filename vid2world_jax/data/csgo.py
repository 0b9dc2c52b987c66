"""CS:GO (Pearce & Zhu `dataset_dm_scraped_dust2`, DIAMOND's `full_res` HDF5 files), spec data_formats.md §2.

One HDF5 file = one episode: keys `frame_{i}_x` (150, 280, 3) uint8 **BGR**, `frame_{i}_y` (51,) float64 action
(11 multi-hot keys w,a,s,d,space,ctrl,shift,1,2,3,r; left click; right click; mouse-x one-hot over 23 bins;
mouse-y one-hot over 15 bins), plus `frame_{i}_xaux`, `frame_{i}_helperarr` (unused). Keys are not zero-padded,
so frames are addressed by constructing names; the frame count is the number of `frame_*_x` keys.
Frames are converted to RGB and, in the pipeline, resized to (ceil(150*W/280), W) then centre-cropped/padded.
Split: DIAMOND's `test_split.txt` (file names, one per line) -> "test"; every other file -> "train".
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np

from vid2world_jax.data import common

ACTION_DIM = 51
KEYS = ("w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r")
MOUSE_X_BINS = (-1000, -500, -300, -200, -100, -60, -30, -20, -10, -4, -2, 0, 2, 4, 10, 20, 30, 60, 100, 200, 300,
                500, 1000)
MOUSE_Y_BINS = (-200, -100, -50, -20, -10, -4, -2, 0, 2, 4, 10, 20, 50, 100, 200)
MOUSE_X_OFFSET = 13
MOUSE_Y_OFFSET = 13 + len(MOUSE_X_BINS)  # 36


def encode_action(keys=(), left_click=False, right_click=False, mouse_dx=0.0, mouse_dy=0.0) -> np.ndarray:
  """DIAMOND / Pearce & Zhu 51-dim encoding (float64 0/1): mouse deltas clipped and mapped to the nearest bin."""
  a = np.zeros(ACTION_DIM, np.float64)
  for k in keys:
    a[KEYS.index(k)] = 1.0
  a[11] = float(left_click)
  a[12] = float(right_click)
  a[MOUSE_X_OFFSET + int(np.argmin(np.abs(np.asarray(MOUSE_X_BINS, float) - mouse_dx)))] = 1.0
  a[MOUSE_Y_OFFSET + int(np.argmin(np.abs(np.asarray(MOUSE_Y_BINS, float) - mouse_dy)))] = 1.0
  return a


def _file_number(path: str) -> int:
  m = re.search(r"_(\d+)$", os.path.splitext(os.path.basename(path))[0])
  return int(m.group(1)) if m else -1


def list_hdf5(root: str) -> list:
  """All `**/*.hdf5` under root, ordered like DIAMOND (integer after the last `_` in the stem, then path)."""
  files = glob.glob(os.path.join(root, "**", "*.hdf5"), recursive=True)
  return sorted(files, key=lambda p: (_file_number(p), p))


def file_id(root: str, path: str) -> str:
  """DIAMOND's file id: '<parent folder>/<file name>' (e.g. '1-200/hdf5_dm_july2021_1.hdf5')."""
  return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"


class CsgoSource:
  """Reads DIAMOND's full_res HDF5 layout under `path` (searched recursively)."""

  name = "csgo"

  def __init__(self, path: str, *, split: str, action_dim: int, span: int, on_bad_data: str,
               split_file: str | None = None, resize_mode: str = "csgo"):
    import h5py  # pylint: disable=import-outside-toplevel
    if not path or not os.path.isdir(path):
      raise common.BadDataError(f"CS:GO directory not found: {path!r}")
    if action_dim != ACTION_DIM:
      raise ValueError(f"CS:GO actions are {ACTION_DIM}-dim; config action_dim={action_dim}")
    self.path, self.resize_mode, self.on_bad_data = path, resize_mode, on_bad_data
    files = list_hdf5(path)
    if not files:
      raise common.BadDataError(f"no .hdf5 files under {path}")
    split_file = split_file or os.path.join(path, "test_split.txt")
    if split in ("test", "train"):
      if not os.path.exists(split_file):
        raise common.BadDataError(f"CS:GO split {split!r} needs the test file list {split_file} (DIAMOND's "
                                  "test_split.txt); set data.split='all' to use every file")
      with open(split_file) as f:
        test_names = {ln.strip() for ln in f if ln.strip()}
      in_test = [os.path.basename(p) in test_names for p in files]
      chosen = [(i, p) for i, (p, t) in enumerate(zip(files, in_test)) if t == (split == "test")]
    elif split == "all":
      chosen = list(enumerate(files))
    else:
      raise ValueError(f"CS:GO split must be 'train', 'test' or 'all', got {split!r}")
    episodes = []
    for i, p in chosen:
      name = file_id(path, p)
      try:
        with h5py.File(p, "r") as f:
          n = sum(1 for k in f.keys() if k.startswith("frame_") and k.endswith("_x") and not k.endswith("_xaux"))
          if n == 0:
            raise ValueError("no frame_{i}_x datasets")
          xs, ys = f["frame_0_x"].shape, f["frame_0_y"].shape
      except Exception as e:  # noqa: BLE001 - corrupt / truncated HDF5
        common.bad_data(on_bad_data, "corrupt_file", f"{p} episode {name}: cannot read HDF5 ({type(e).__name__}: {e})")
        continue
      if ys != (action_dim,):
        common.bad_data(on_bad_data, "action_dim", f"{p} episode {name}: frame_0_y has shape {ys}, "
                        f"config action_dim={action_dim}")
        continue
      if len(xs) != 3 or xs[-1] != 3:
        common.bad_data(on_bad_data, "bad_shape", f"{p} episode {name}: frame_0_x has shape {xs}, expected (H, W, 3)")
        continue
      episodes.append(common.EpisodeInfo(episode_id=i, name=name, file=p, length=n))
    self.episodes = common.filter_short(episodes, span, on_bad_data)
    if not self.episodes:
      raise common.BadDataError(f"no usable CS:GO files under {path} for split {split!r}")
    self._h5 = {}

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_h5"] = {}  # h5py handles do not pickle; reopened lazily in each worker
    return state

  def _file(self, fn):
    import h5py  # pylint: disable=import-outside-toplevel
    f = self._h5.get(fn)
    if f is None:
      if len(self._h5) > 64:
        for h in self._h5.values():
          h.close()
        self._h5.clear()
      f = self._h5[fn] = h5py.File(fn, "r")
    return f

  def read(self, i: int, frame_indices: np.ndarray):
    ep = self.episodes[i]
    f = self._file(ep.file)
    frames = np.stack([f[f"frame_{int(j)}_x"][()] for j in frame_indices])[..., ::-1]  # BGR -> RGB
    actions = np.stack([f[f"frame_{int(j)}_y"][()] for j in frame_indices]).astype(np.float32)
    return np.ascontiguousarray(frames), actions
