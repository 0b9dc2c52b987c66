"""RT-1 (`fractal20220817_data` 0.1.0, RLDS in TFDS TFRecord form), spec data_formats.md §1.

Point `data.path` at the *version directory* (`.../fractal20220817_data/0.1.0`). Each TFRecord record is one
episode: a flat `tf.train.Example` keyed by feature paths, per-step values concatenated over T steps;
`steps/observation/image` holds T JPEG strings (256x320 RGB). The 13-dim action is concatenated by an explicit
key list (never dict order): base_displacement_vector(2), base_displacement_vertical_rotation(1),
gripper_closedness_action(1), rotation_delta(3), terminate_episode(3, int32 -> float32), world_vector(3).

Random access: on first use every shard is scanned once (progress bar) and an index of (shard, byte offset,
record length, number of steps) is cached as `.v2w_rt1_index.json` in the directory (or under $V2W_CACHE when the
directory is read-only); afterwards one episode is read with a single seek. `convert_to_array_record` optionally
rewrites the shards as ArrayRecord files (same serialized examples), which the reader then prefers.

Split (spec §7.1/§8.2): the only on-disk split is "train"; Vid2World holds out a seeded random 4361/87212 of
the episodes. Here split "train" = the rest, split "test" = the hold-out; eval clips use a fixed seeded subset of
1024 hold-out episodes, one clip each, start index seeded by the episode name.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import struct

import numpy as np
from PIL import Image

from vid2world_jax.data import common

DATASET = "fractal20220817_data"
ACTION_KEYS = (  # (feature key under steps/action/, dims) in the Vid2World 13-dim order
    ("base_displacement_vector", 2),
    ("base_displacement_vertical_rotation", 1),
    ("gripper_closedness_action", 1),
    ("rotation_delta", 3),
    ("terminate_episode", 3),
    ("world_vector", 3),
)
ACTION_DIM = sum(d for _, d in ACTION_KEYS)  # 13
IMAGE_KEY = "steps/observation/image"
HOLDOUT_FRACTION = 4361 / 87212  # paper/AVID hold-out size relative to the 87,212 train episodes
HOLDOUT_SEED = 0
EVAL_EPISODES = 1024
INDEX_VERSION = 1


def _example_pb2():
  from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
  return example_pb2


def shard_files(path: str, split: str = "train") -> tuple[list, str]:
  """(sorted shard paths, format) for `split`; prefers ArrayRecord files when present."""
  ar = sorted(glob.glob(os.path.join(path, f"{DATASET}-{split}.array_record-*")))
  if ar:
    return ar, "array_record"
  tf = sorted(glob.glob(os.path.join(path, f"{DATASET}-{split}.tfrecord-*")))
  if not tf:  # tolerate other dataset names with the same layout
    tf = sorted(glob.glob(os.path.join(path, f"*-{split}.tfrecord-*")))
  return tf, "tfrecord"


def iter_tfrecord_offsets(fn: str):
  """Yield (offset_of_data, length) of every record of an uncompressed TFRecord file (framing only)."""
  with open(fn, "rb") as f:
    off = 0
    while True:
      head = f.read(12)
      if not head:
        return
      if len(head) < 12:
        raise ValueError(f"truncated record header at byte {off}")
      (length,) = struct.unpack("<Q", head[:8])
      yield off + 12, length
      off += 12 + length + 4
      f.seek(off)


def parse_episode(record: bytes, where: str = "") -> dict:
  """Parse one serialized episode Example -> {"num_steps", "actions" float32 [T, 13], "images": list of JPEG
  bytes, "instruction": str}. Raises ValueError on missing keys / inconsistent lengths."""
  ex = _example_pb2().Example.FromString(record)
  feat = ex.features.feature
  if "steps/is_first" in feat:
    t = len(feat["steps/is_first"].int64_list.value)
  else:
    t = len(feat[IMAGE_KEY].bytes_list.value)
  cols = []
  for key, dim in ACTION_KEYS:
    k = f"steps/action/{key}"
    if k not in feat:
      raise ValueError(f"{where}: missing action feature {k!r}")
    v = feat[k]
    vals = np.asarray(v.float_list.value if v.WhichOneof("kind") == "float_list" else v.int64_list.value,
                      np.float32)
    if vals.size != t * dim:
      raise ValueError(f"{where}: {k} has {vals.size} values, expected {t} steps x {dim}")
    cols.append(vals.reshape(t, dim))
  images = list(feat[IMAGE_KEY].bytes_list.value) if IMAGE_KEY in feat else []
  if len(images) != t:
    raise ValueError(f"{where}: {IMAGE_KEY} has {len(images)} images for {t} steps")
  instr = ""
  k = "steps/observation/natural_language_instruction"
  if k in feat and feat[k].bytes_list.value:
    instr = feat[k].bytes_list.value[0].decode("utf-8", "replace")
  return {"num_steps": t, "actions": np.concatenate(cols, axis=1), "images": images, "instruction": instr}


def decode_jpeg(data: bytes) -> np.ndarray:
  """JPEG bytes -> uint8 [H, W, 3] RGB; raises on corrupt / truncated data."""
  img = Image.open(io.BytesIO(data))
  img.load()
  if img.mode != "RGB":
    img = img.convert("RGB")
  return np.asarray(img)


def _index_path(path: str, split: str) -> str:
  name = f".v2w_rt1_index_{split}.json"
  if os.access(path, os.W_OK):
    return os.path.join(path, name)
  cache = os.environ.get("V2W_CACHE", os.path.expanduser("~/.cache/vid2world_jax"))
  h = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]
  return os.path.join(cache, "rt1_index", f"{h}{name}")


def build_index(path: str, split: str = "train", *, on_bad_data: str = "raise", progress: bool = True) -> dict:
  """Scan every shard once: per episode (shard, offset, length, num_steps, name) + whether its actions are
  valid 13-dim finite values. Cached in a json file keyed by the shard list and sizes."""
  files, fmt = shard_files(path, split)
  if not files:
    raise common.BadDataError(f"no {DATASET} {split} shards (*.tfrecord-* / *.array_record-*) in {path}")
  sig = [[os.path.basename(f), os.path.getsize(f)] for f in files]
  ipath = _index_path(path, split)
  if os.path.exists(ipath):
    try:
      with open(ipath) as f:
        idx = json.load(f)
    except (OSError, ValueError):   # a damaged cache is rebuilt
      idx = None
    if (isinstance(idx, dict) and idx.get("version") == INDEX_VERSION and idx.get("files") == sig
        and idx.get("format") == fmt):
      return idx
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  entries = []
  bar = tqdm(total=len(files), desc=f"indexing RT-1 {split} shards", unit="shard", disable=not progress)
  for si, fn in enumerate(files):
    try:
      if fmt == "tfrecord":
        with open(fn, "rb") as fh:
          for ri, (off, length) in enumerate(iter_tfrecord_offsets(fn)):
            fh.seek(off)
            entries.append(_index_record(fh.read(length), si, ri, off, length, fn))
      else:
        from array_record.python import array_record_module as arm  # pylint: disable=import-outside-toplevel
        reader = arm.ArrayRecordReader(fn)
        for ri in range(reader.num_records()):
          entries.append(_index_record(reader.read([ri])[0], si, ri, ri, 0, fn))
        reader.close()
    except Exception as e:  # noqa: BLE001 - corrupt shard
      entries.append({"shard": si, "record": -1, "offset": 0, "length": 0, "steps": 0,
                      "error": f"{os.path.basename(fn)}: unreadable shard ({type(e).__name__}: {e})"})
    bar.update(1)
  bar.close()
  idx = {"version": INDEX_VERSION, "format": fmt, "files": sig, "episodes": entries}
  try:
    os.makedirs(os.path.dirname(ipath), exist_ok=True)
    with open(ipath + ".tmp", "w") as f:
      json.dump(idx, f)
    os.replace(ipath + ".tmp", ipath)
  except OSError:
    pass  # the index is only a cache
  return idx


def _index_record(record, si, ri, off, length, fn) -> dict:
  e = {"shard": si, "record": ri, "offset": off, "length": length, "steps": 0}
  where = f"{fn} episode {ri}"
  try:
    ep = parse_episode(record, where)
    e["steps"] = ep["num_steps"]
    if not np.all(np.isfinite(ep["actions"])):
      e["error"] = f"{where}: {int(np.sum(~np.isfinite(ep['actions'])))} non-finite (NaN/inf) action values"
      e["reason"] = "nan_actions"
  except Exception as ex:  # noqa: BLE001
    e["error"] = f"{where}: cannot parse episode ({type(ex).__name__}: {ex})"
    e["reason"] = "corrupt_file"
  return e


class Rt1Source:
  """Random-access reader of the fractal TFRecord (or converted ArrayRecord) shards."""

  name = "rt1"

  def __init__(self, path: str, *, split: str, action_dim: int, span: int, on_bad_data: str,
               holdout_fraction: float = HOLDOUT_FRACTION, holdout_seed: int = HOLDOUT_SEED,
               resize_mode: str = "crop", progress: bool = True):
    if not path or not os.path.isdir(path):
      raise common.BadDataError(f"RT-1 directory not found: {path!r} (point data.path at .../{DATASET}/0.1.0)")
    if action_dim != ACTION_DIM:
      raise ValueError(f"RT-1 actions are {ACTION_DIM}-dim; config action_dim={action_dim}")
    if split not in ("train", "test", "all"):
      raise ValueError(f"RT-1 split must be 'train' (minus hold-out), 'test' (hold-out) or 'all', got {split!r}")
    self.path, self.resize_mode, self.on_bad_data = path, resize_mode, on_bad_data
    idx = build_index(path, "train", on_bad_data=on_bad_data, progress=progress)
    self.format = idx["format"]
    self.files = [os.path.join(path, f) for f, _ in idx["files"]]
    entries = idx["episodes"]
    n = len(entries)
    n_hold = int(round(n * holdout_fraction)) if n > 1 else 0
    n_hold = max(1, n_hold) if n > 1 else 0
    hold = set(np.random.default_rng(holdout_seed).permutation(n)[:n_hold].tolist())
    if split == "train":
      chosen = [i for i in range(n) if i not in hold]
    elif split == "test":
      chosen = sorted(hold)
    else:
      chosen = list(range(n))
    episodes, self._loc = [], []
    for i in chosen:
      e = entries[i]
      if "error" in e:
        common.bad_data(on_bad_data, e.get("reason", "corrupt_file"), e["error"])
        continue
      fn = self.files[e["shard"]]
      episodes.append(common.EpisodeInfo(episode_id=i, name=f"{os.path.basename(fn)}:{e['record']}", file=fn,
                                         length=e["steps"]))
    self.episodes = common.filter_short(episodes, span, on_bad_data)
    keep = {ep.episode_id for ep in self.episodes}
    self._loc = {i: (entries[i]["shard"], entries[i]["record"], entries[i]["offset"], entries[i]["length"])
                 for i in keep}
    if not self.episodes:
      raise common.BadDataError(f"no usable RT-1 episodes in {path} for split {split!r}")
    self._readers = {}

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_readers"] = {}
    return state

  def _record(self, episode_id: int) -> bytes:
    shard, rec, off, length = self._loc[episode_id]
    fn = self.files[shard]
    if self.format == "tfrecord":
      with open(fn, "rb") as f:
        f.seek(off)
        data = f.read(length)
      if len(data) != length:
        raise common.BadDataError(f"{fn} episode {rec}: truncated record")
      return data
    r = self._readers.get(shard)
    if r is None:
      from array_record.python import array_record_module as arm  # pylint: disable=import-outside-toplevel
      r = self._readers[shard] = arm.ArrayRecordReader(fn)
    return r.read([rec])[0]

  def read(self, i: int, frame_indices: np.ndarray):
    ep = self.episodes[i]
    where = f"{ep.file} episode {ep.name}"
    rec = parse_episode(self._record(ep.episode_id), where)
    try:
      frames = np.stack([decode_jpeg(rec["images"][int(j)]) for j in frame_indices])
    except Exception as e:  # noqa: BLE001
      raise common.BadDataError(f"{where}: corrupt JPEG ({type(e).__name__}: {e})") from e
    return frames, rec["actions"][frame_indices]


def convert_to_array_record(path: str, out_dir: str, split: str = "train", progress: bool = True) -> list:
  """Offline conversion of the TFRecord shards of `split` to ArrayRecord shards (one record = one episode's
  serialized Example, same shard names with `array_record` for `tfrecord`), with a progress bar over episodes.
  Copies dataset_info.json / features.json. Returns the written paths."""
  import shutil  # pylint: disable=import-outside-toplevel
  from array_record.python import array_record_module as arm  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  files, fmt = shard_files(path, split)
  if fmt != "tfrecord" or not files:
    raise common.BadDataError(f"no TFRecord shards for split {split!r} in {path}")
  os.makedirs(out_dir, exist_ok=True)
  for meta in ("dataset_info.json", "features.json"):
    if os.path.exists(os.path.join(path, meta)):
      shutil.copy(os.path.join(path, meta), os.path.join(out_dir, meta))
  total = sum(1 for fn in files for _ in iter_tfrecord_offsets(fn))
  out = []
  with tqdm(total=total, desc="RT-1 -> ArrayRecord", unit="episode", disable=not progress) as bar:
    for fn in files:
      dst = os.path.join(out_dir, re.sub(r"\.tfrecord-", ".array_record-", os.path.basename(fn)))
      w = arm.ArrayRecordWriter(dst + ".tmp", "group_size:1")
      with open(fn, "rb") as fh:
        for off, length in iter_tfrecord_offsets(fn):
          fh.seek(off)
          w.write(fh.read(length))
          bar.update(1)
      w.close()
      os.replace(dst + ".tmp", dst)
      out.append(dst)
  return out


def main(argv=None):
  """CLI: python -m vid2world_jax.data.rt1 {index,convert} SRC [DST]."""
  import argparse  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(description="RT-1 fractal20220817_data tools")
  p.add_argument("command", choices=("index", "convert"),
                 help="index: build/refresh the random-access index; convert: TFRecord -> ArrayRecord")
  p.add_argument("src", help=f".../{DATASET}/0.1.0 (TFRecord shards)")
  p.add_argument("dst", nargs="?", help="output directory for convert")
  p.add_argument("--split", default="train")
  a = p.parse_args(argv)
  if a.command == "index":
    idx = build_index(a.src, a.split)
    bad = sum(1 for e in idx["episodes"] if "error" in e)
    print(f"{len(idx['episodes'])} episodes indexed ({bad} bad) in {len(idx['files'])} shards")
  else:
    if not a.dst:
      p.error("convert needs DST")
    out = convert_to_array_record(a.src, a.dst, a.split)
    print(f"wrote {len(out)} ArrayRecord shards to {a.dst}")


if __name__ == "__main__":
  main()
