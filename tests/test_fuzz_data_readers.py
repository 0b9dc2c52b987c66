"""Fuzz corpus, the data readers: episode .npz files, RLDS TFRecord shards and CS:GO HDF5 files damaged by the
seeded mutator (tests/_fuzz.py), next to one good file. Rule (docs/reliability.md): with
data.on_bad_data="raise" a damaged file either reads into valid clips or raises one BadDataError line naming it;
with "skip" nothing raises and the good file's clips still come out."""

import os
import shutil

import numpy as np
import pytest

import _fuzz
from vid2world_jax.data import common, csgo, episodes, pipeline, testdata
from vid2world_jax.data import config as config_lib

T = 6


def _cfg(source, path, **kw):
  c = config_lib.default_data_config()
  c.update(source=source, path=path, clip_length=3, frame_stride=1, batch_size=2, num_threads=1, split="all"
           if source != "episodes" else "train", **kw)
  return c


def _clips(cfg):
  """Every clip of every episode of the source of ``cfg``; a list of clip dicts (None = skipped)."""
  src = pipeline.make_source(cfg, progress=False)
  loader = pipeline.ClipLoader(src, cfg)
  span = common.clip_span(cfg.clip_length, cfg.frame_stride)
  return [loader.load(i, s, None) for i, ep in enumerate(src.episodes) for s in range(ep.length - span + 1)]


def _check_rule(cfg, bad_name: str, good_clips: int):
  """Rule 1 for one damaged file ``bad_name`` in cfg.path next to good files giving ``good_clips`` clips."""
  try:
    clips = _clips(_with(cfg, on_bad_data="raise"))
    assert all(c is not None and np.isfinite(c["frames"]).all() and np.isfinite(c["actions"]).all()
               for c in clips)
    _fuzz.record(cfg.source, "read")
  except common.BadDataError as e:
    _fuzz.assert_one_line(e, bad_name)
    _fuzz.record(cfg.source, "refused")
  common.reset_skip_counts()
  clips = _clips(_with(cfg, on_bad_data="skip"))
  assert sum(c is not None for c in clips) >= good_clips, bad_name


def _with(cfg, **kw):
  c = config_lib.default_data_config()
  c.update(cfg.to_dict())
  c.update(kw)
  return c


# ------------------------------------------------------------------------------------------------ episodes
def _episode_arrays(seed):
  r = np.random.default_rng(seed)
  return r.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8), r.uniform(-1, 1, (T, 2)).astype(np.float32)


def _episode_dir(tmp_path, name):
  d = tmp_path / name
  d.mkdir()
  episodes.write_episode(str(d / "good.npz"), *_episode_arrays(0))
  return d


def test_fuzz_episode_npz(tmp_path):
  frames, actions = _episode_arrays(1)
  valid = tmp_path / "valid.npz"
  for compress in (False, True):
    episodes.write_episode(str(valid), frames, actions, compress=compress)
    for name, data in _fuzz.byte_variants(valid.read_bytes(), f"episode{compress}").items():
      d = _episode_dir(tmp_path, f"{name}_{compress}")
      bad = _fuzz.write_bytes(d, "bad.npz", data)
      _check_rule(_cfg("episodes", str(d), action_dim=2), bad, T - 2)
  structural = {f"frames_{k}": (v, actions) for k, v in _fuzz.array_variants(frames).items()}
  structural.update({f"actions_{k}": (frames, v) for k, v in _fuzz.array_variants(actions).items()})
  structural["actions_3dim"] = (frames, np.zeros((T, 3), np.float32))
  structural["short"] = (frames[:2], actions[:2])
  for name, (f, a) in structural.items():
    d = _episode_dir(tmp_path, name)
    bad = str(d / "bad.npz")
    np.savez(bad, frames=f, actions=a)
    _check_rule(_cfg("episodes", str(d), action_dim=2), bad, T - 2)
  for name, arrays in (("no_actions", {"frames": frames}), ("no_frames", {"actions": actions}), ("empty", {})):
    d = _episode_dir(tmp_path, name)
    np.savez(str(d / "bad.npz"), **arrays)
    _check_rule(_cfg("episodes", str(d), action_dim=2), str(d / "bad.npz"), T - 2)


# ------------------------------------------------------------------------------------------------ RLDS / RT-1
@pytest.fixture(scope="module")
def fractal_shards(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("rt1_valid") / "fractal20220817_data" / "0.1.0")
  eps = []
  for e in range(2):
    acts = {k: np.full((3,) + tuple(shape), e, dtype) for k, (shape, dtype) in testdata.ACTION_SPECS.items()}
    eps.append(testdata.fractal_episode(np.full((3, 64, 80, 3), 40 * e, np.uint8), acts))
  testdata.write_fractal(d, eps, num_shards=2, image_shape=(64, 80, 3))
  testdata.write_fractal(d + "_garbage", [b"\x08\x01garbage", eps[0]], num_shards=2, image_shape=(64, 80, 3))
  return d


def test_fuzz_rlds_tfrecord_shards(tmp_path, fractal_shards):
  shard = sorted(f for f in os.listdir(fractal_shards) if ".tfrecord-" in f)[1]
  with open(os.path.join(fractal_shards, shard), "rb") as f:
    valid = f.read()
  variants = _fuzz.byte_variants(valid, "rlds")
  with open(os.path.join(fractal_shards + "_garbage", shard.replace("00001", "00000", 1)), "rb") as f:
    variants["garbage_record"] = f.read()   # valid TFRecord framing around bytes that are no episode
  for name, data in variants.items():
    d = tmp_path / name / "fractal20220817_data" / "0.1.0"
    shutil.copytree(fractal_shards, d, ignore=shutil.ignore_patterns(".v2w_*"))
    bad = _fuzz.write_bytes(d, shard, data)
    _check_rule(_cfg("rt1", str(d), action_dim=13, resolution=(32, 40)), os.path.basename(bad), 1)
  d = tmp_path / "bad_index" / "fractal20220817_data" / "0.1.0"   # a damaged index cache: rebuilt
  shutil.copytree(fractal_shards, d)
  _clips(_cfg("rt1", str(d), action_dim=13, resolution=(32, 40)))
  for idx in [p for p in os.listdir(d) if p.startswith(".v2w_rt1_index")]:
    (d / idx).write_bytes(b'{"version": ')
  assert len(_clips(_cfg("rt1", str(d), action_dim=13, resolution=(32, 40)))) == 2


# ------------------------------------------------------------------------------------------------ CS:GO
def _csgo_file(path, n=T, **override):
  bgr = np.full((n, 150, 280, 3), 90, np.uint8)
  acts = np.stack([csgo.encode_action(("w",)) for _ in range(n)])
  testdata.write_csgo_hdf5(path, bgr, acts)
  if override:
    import h5py
    with h5py.File(path, "a") as f:
      for k, v in override.items():
        del f[k]
        if v is not None:
          f.create_dataset(k, data=v)


def test_fuzz_csgo_hdf5(tmp_path):
  valid = str(tmp_path / "valid.hdf5")
  _csgo_file(valid)
  with open(valid, "rb") as f:
    data = f.read()
  variants = {k: v for k, v in _fuzz.byte_variants(data, "csgo", n_random=1).items()}
  structural = {"no_actions": {"frame_0_y": None}, "action_dim_50": {"frame_0_y": np.zeros(50)},
                "gray_frames": {"frame_0_x": np.zeros((150, 280), np.uint8)},
                "missing_frame_3": {"frame_3_x": None}, "nan_actions": {"frame_2_y": np.full(51, np.nan)},
                "float_frames": {"frame_1_x": np.full((150, 280, 3), 0.5)}}
  for name in list(variants) + list(structural):
    root = tmp_path / name
    _csgo_file(str(root / "hdf5_dm_july2021_1.hdf5"))
    bad = str(root / "hdf5_dm_july2021_2.hdf5")
    if name in variants:
      _fuzz.write_bytes(root, os.path.basename(bad), variants[name])
    else:
      _csgo_file(bad, **structural[name])
    _check_rule(_cfg("csgo", str(root), action_dim=51, resolution=(32, 56)), bad, T - 2)
