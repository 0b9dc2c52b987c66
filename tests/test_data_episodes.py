"""Generic episodes + the grain pipeline: shapes, ranges, determinism, resume, host sharding, bad data, ops."""

import os

import numpy as np
import pytest

from vid2world_jax.data import common
from vid2world_jax.data import config as config_lib
from vid2world_jax.data import convert_videos
from vid2world_jax.data import episodes as episodes_lib
from vid2world_jax.data import pipeline
from vid2world_jax.data import video_ops

A = 3


def _frames(ep, t_len, h=12, w=16):
  """Frame t of episode ep: flat colour (ep*20, t*10, 77) so a clip reveals its episode and time."""
  f = np.zeros((t_len, h, w, 3), np.uint8)
  for t in range(t_len):
    f[t] = (ep * 20, t * 10, 77)
  return f


def _actions(ep, t_len):
  return np.stack([np.array([ep, t, ep * 100 + t], np.float32) for t in range(t_len)])


def _write_dir(d, n=6, t_len=12, extra=None):
  os.makedirs(d, exist_ok=True)
  for e in range(n):
    episodes_lib.write_episode(os.path.join(d, f"ep_{e:03d}.npz"), _frames(e, t_len), _actions(e, t_len),
                               success=bool(e % 2))
  for name, (fr, ac) in (extra or {}).items():
    np.savez(os.path.join(d, name + ".npz"), frames=fr, actions=ac)
  return d


def _cfg(path, **kw):
  c = config_lib.default_data_config()
  c.source = "episodes"
  c.path = str(path)
  c.clip_length = 4
  c.frame_stride = 2
  c.resolution = (8, 8)
  c.action_dim = A
  c.batch_size = 4
  c.num_threads = 1
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_episode_pipeline_shapes_values(tmp_path):
  d = _write_dir(tmp_path / "eps")
  it = pipeline.make_train_iterator(_cfg(d), process_index=0, process_count=1)
  for b in _take(it, 3):
    assert b["frames"].shape == (4, 4, 8, 8, 3) and b["frames"].dtype == np.float32
    assert b["actions"].shape == (4, 4, A) and b["actions"].dtype == np.float32
    assert b["episode_id"].shape == (4,) and b["episode_id"].dtype == np.int32
    assert b["frames"].min() >= -1.0 and b["frames"].max() <= 1.0
    for i in range(4):
      ep = int(b["episode_id"][i])
      a = b["actions"][i]
      # actions are the raw, unshifted rows of the chosen window with stride 2
      t0 = int(a[0, 1])
      np.testing.assert_array_equal(a, _actions(ep, 12)[t0:t0 + 7:2])
      # frames match the same time steps: green channel = t * 10, red = ep * 20
      exp = np.array([[ep * 20, t * 10, 77] for t in range(t0, t0 + 7, 2)], np.float32) / 127.5 - 1
      np.testing.assert_allclose(b["frames"][i, :, 4, 4], exp, atol=1e-5)


def test_episode_format_roundtrip_and_success(tmp_path):
  d = _write_dir(tmp_path / "eps", n=2)
  with np.load(os.path.join(d, "ep_001.npz")) as z:
    assert z["frames"].dtype == np.uint8 and z["frames"].shape == (12, 12, 16, 3)
    assert z["actions"].dtype == np.float32 and bool(z["success"])
  with pytest.raises(ValueError, match="uint8"):
    episodes_lib.write_episode(os.path.join(d, "x.npz"), np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 1)))


def test_data_determinism_same_seed(tmp_path):
  d = _write_dir(tmp_path / "eps")
  a = _take(pipeline.make_train_iterator(_cfg(d, augment=True), process_index=0, process_count=1), 4)
  b = _take(pipeline.make_train_iterator(_cfg(d, augment=True), process_index=0, process_count=1), 4)
  c = _take(pipeline.make_train_iterator(_cfg(d, augment=True, seed=1), process_index=0, process_count=1), 4)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert any(not np.array_equal(x["frames"], z["frames"]) for x, z in zip(a, c))


def test_data_resume_from_state(tmp_path):
  d = _write_dir(tmp_path / "eps")
  cfg = _cfg(d, augment=True)
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 4)
  it2 = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  it2.set_state(state)
  got = _take(it2, 4)
  for x, y in zip(expected, got):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_data_default_process_from_jax(tmp_path):
  d = _write_dir(tmp_path / "eps")
  b = next(pipeline.make_train_iterator(_cfg(d)))  # jax.process_index()/process_count() = 0/1 here
  assert b["frames"].shape[0] == 4


def test_data_two_hosts_disjoint(tmp_path):
  d = _write_dir(tmp_path / "eps", n=8)
  cfg = _cfg(d)
  seen = []
  for p in range(2):
    it = pipeline.make_train_iterator(cfg, process_index=p, process_count=2)
    bs = _take(it, 4)
    assert all(b["frames"].shape[0] == 2 for b in bs)  # B_local = 4 / 2
    seen.append({int(e) for b in bs for e in b["episode_id"]})
  assert seen[0] and seen[1] and not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(8))
  with pytest.raises(ValueError, match="divisible"):
    pipeline.make_train_iterator(_cfg(d, batch_size=3), process_index=0, process_count=2)


def test_data_worker_processes_resume(tmp_path):
  d = _write_dir(tmp_path / "eps")
  cfg = _cfg(d, worker_count=1)
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  _take(it, 2)
  state = it.get_state()
  expected = _take(it, 2)
  it2 = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  it2.set_state(state)
  for x, y in zip(expected, _take(it2, 2)):
    np.testing.assert_array_equal(x["frames"], y["frames"])
    np.testing.assert_array_equal(x["episode_id"], y["episode_id"])


def test_data_eval_clips_deterministic(tmp_path):
  d = _write_dir(tmp_path / "eps")
  import json
  with open(os.path.join(d, "splits.json"), "w") as f:
    json.dump({"train": [f"ep_{i:03d}" for i in range(4)], "test": ["ep_004", "ep_005"]}, f)
  cfg = _cfg(d)
  e1, e2 = pipeline.make_eval_clips(cfg, 5), pipeline.make_eval_clips(cfg, 5)
  assert len(e1) == 5 and [s.start for s in e1.specs] == [s.start for s in e2.specs]
  assert {s.episode_id for s in e1.specs} == {4, 5}
  batches = list(e1.batches(2))
  assert [b["frames"].shape[0] for b in batches] == [2, 2, 1]
  np.testing.assert_array_equal(batches[0]["frames"][0], e2[0]["frames"])
  train = pipeline.make_source(cfg)
  assert {e.episode_id for e in train.episodes} == {0, 1, 2, 3}


# ------------------------------------------------------------------------------------------------ bad data
def test_data_bad_missing_directory(tmp_path):
  with pytest.raises(common.BadDataError, match="not found"):
    pipeline.make_train_iterator(_cfg(tmp_path / "nope"), process_index=0, process_count=1)


def test_data_bad_short_episode_raise_and_skip(tmp_path):
  extra = {"short": (_frames(9, 5), _actions(9, 5))}  # span = (4-1)*2+1 = 7 > 5
  d = _write_dir(tmp_path / "eps", n=3, extra=extra)
  with pytest.raises(common.BadDataError, match=r"short\.npz episode short: 5 frames < clip span 7"):
    pipeline.make_source(_cfg(d))
  common.reset_skip_counts()
  src = pipeline.make_source(_cfg(d, on_bad_data="skip"))
  assert [e.name for e in src.episodes] == ["ep_000", "ep_001", "ep_002"]
  assert common.skip_counts() == {"short_episode": 1}


def test_data_short_episodes_skipped_in_one_warning_line(caplog):
  eps = [common.EpisodeInfo(i, f"ep{i}", "rec.npz", length) for i, length in enumerate([3, 9, 4, 2, 12])]
  common.reset_skip_counts()
  with caplog.at_level("WARNING"):
    kept = common.filter_short(eps, span=7, on_bad_data="skip")
  assert [e.name for e in kept] == ["ep1", "ep4"]
  assert common.skip_counts() == {"short_episode": 3}
  lines = [r.getMessage() for r in caplog.records if "short_episode" in r.getMessage()]
  assert len(lines) == 1, lines
  assert lines[0].startswith("data: skipped (short_episode): 3 episode(s) shorter than the clip span 7, "
                             "first: rec.npz episode ep0: 3 frames < clip span 7")


def test_data_bad_action_dim_and_nan(tmp_path):
  nan_a = _actions(7, 12)
  nan_a[3, 1] = np.nan
  extra = {"wrongdim": (_frames(8, 12), np.zeros((12, 5), np.float32)), "nans": (_frames(7, 12), nan_a)}
  d = _write_dir(tmp_path / "eps", n=2, extra=extra)
  with pytest.raises(common.BadDataError, match=r"nans\.npz episode nans: 1 non-finite"):
    pipeline.make_source(_cfg(d))
  os.remove(os.path.join(d, "nans.npz"))
  with pytest.raises(common.BadDataError, match=r"wrongdim\.npz episode wrongdim: actions have shape \(12, 5\)"):
    pipeline.make_source(_cfg(d))
  common.reset_skip_counts()
  it = pipeline.make_train_iterator(_cfg(d, on_bad_data="skip"), process_index=0, process_count=1)
  assert set(np.unique(next(it)["episode_id"])) <= {0, 1}
  assert common.skip_counts() == {"action_dim": 1}


def test_data_bad_corrupt_episode_file(tmp_path):
  d = _write_dir(tmp_path / "eps", n=2)
  with open(os.path.join(d, "broken.npz"), "wb") as f:
    f.write(b"PK\x03\x04 this is not a zip")
  with pytest.raises(common.BadDataError, match=r"broken\.npz episode broken: cannot read"):
    pipeline.make_source(_cfg(d))
  common.reset_skip_counts()
  assert len(pipeline.make_source(_cfg(d, on_bad_data="skip")).episodes) == 2
  assert common.skip_counts() == {"corrupt_file": 1}


def test_data_bad_file_corrupted_after_indexing_is_named(tmp_path):
  d = _write_dir(tmp_path / "eps", n=2)
  cfg = _cfg(d)
  src = pipeline.make_source(cfg)
  with open(os.path.join(d, "ep_001.npz"), "wb") as f:
    f.write(b"garbage")
  loader = pipeline.ClipLoader(src, cfg)
  with pytest.raises(common.BadDataError, match=r"ep_001\.npz episode ep_001: cannot read clip"):
    loader.load(1, 0, None)
  cfg.on_bad_data = "skip"
  assert pipeline.ClipLoader(src, cfg).load(1, 0, None) is None


def test_data_config_checks():
  c = config_lib.default_data_config()
  assert c.source == "embedded" and c.on_bad_data == "raise" and c.split == "train"
  c.source = "youtube"
  with pytest.raises(ValueError, match="data.source"):
    config_lib.check_config(c)


# ------------------------------------------------------------------------------------------------ video ops
def test_data_resize_center_crop_rt1_geometry():
  f = np.zeros((1, 256, 320, 3), np.uint8)
  f[:, :, :160] = 255  # left half white
  out = video_ops.resize_center_crop(f, 320, 512)
  assert out.shape == (1, 320, 512, 3)
  assert out[0, 160, 100, 0] == 255 and out[0, 160, 400, 0] == 0  # no padding, halves kept
  # centre-crop of a 256x320 frame to 32x40 via "crop": scale 0.125, nothing cut
  assert video_ops.resize_center_crop(f, 32, 40).shape == (1, 32, 40, 3)


def test_data_resize_pad_and_csgo_rule():
  f = np.full((2, 150, 280, 3), 200, np.uint8)
  out = video_ops.resize_csgo(f, 320, 512)
  assert out.shape == (2, 320, 512, 3)
  rows = np.where(out[0, :, 256, 0] > 0)[0]
  assert rows[0] == 22 and rows[-1] == 22 + 275 - 1  # 275 content rows, 22 black on top, 23 at the bottom
  out = video_ops.resize_pad(np.full((1, 10, 20, 3), 9, np.uint8), 20, 20)
  assert out.shape == (1, 20, 20, 3) and out[0, 0, 0, 0] == 0 and out[0, 10, 10, 0] == 9


def test_data_unit_range_and_augment_clip_consistent():
  rng = np.random.default_rng(0)
  x = video_ops.to_unit_range(rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
  assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
  np.testing.assert_allclose(video_ops.to_unit_range(np.array([[[[0, 255, 128]]]], np.uint8)),
                             [[[[-1, 1, 128 / 127.5 - 1]]]], atol=1e-6)
  clip = np.repeat(x[:1], 3, axis=0)  # three identical frames
  p = video_ops.sample_augment_params(rng)
  assert 0.9 <= p["brightness"] <= 1.1 and -0.05 <= p["hue"] <= 0.05 and 0 <= p["dx"] <= 4
  y = video_ops.augment_clip(clip, p)
  assert y.shape == clip.shape and y.min() >= -1 and y.max() <= 1
  np.testing.assert_allclose(y[0], y[1], atol=1e-6)  # same transform on every frame
  np.testing.assert_allclose(y[0], y[2], atol=1e-6)
  assert not np.allclose(y, clip)


# ------------------------------------------------------------------------------------------------ converter
def test_data_convert_videos_to_episodes(tmp_path):
  from vid2world_jax import video_io
  src, out = tmp_path / "videos", tmp_path / "eps"
  src.mkdir()
  frames = _frames(3, 9, 16, 16)
  video_io.write_video(src / "run1.gif", frames)
  np.save(src / "run1.npy", _actions(3, 9))
  video_io.write_video(src / "noactions.gif", frames)
  with pytest.raises(common.BadDataError, match="noactions.gif episode noactions: no action file"):
    convert_videos.convert_folder(str(src), str(out), progress=False)
  names = convert_videos.convert_folder(str(src), str(out), on_bad_data="skip", progress=False)
  assert names == ["run1"]
  with np.load(out / "run1.npz") as z:
    assert z["frames"].shape == (9, 16, 16, 3) and z["frames"].dtype == np.uint8
    np.testing.assert_array_equal(z["actions"], _actions(3, 9))
    assert abs(int(z["frames"][5, 8, 8, 1]) - 50) <= 3  # GIF palette rounding
  src_obj = pipeline.make_source(_cfg(out, action_dim=3))
  assert src_obj.episodes[0].length == 9


def test_data_resume_through_orbax_checkpoint(tmp_path):
  import grain
  import orbax.checkpoint as ocp
  d = _write_dir(tmp_path / "eps")
  cfg = _cfg(d, augment=True)
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  _take(it, 2)
  mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_handlers={"data": grain.checkpoint.CheckpointHandler()})
  mngr.save(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  expected = _take(it, 3)
  it2 = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  mngr.restore(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(it2)))
  for x, y in zip(expected, _take(it2, 3)):
    np.testing.assert_array_equal(x["frames"], y["frames"])
    np.testing.assert_array_equal(x["actions"], y["actions"])


def test_episode_memmap_read_matches_full_load(tmp_path):
  d = str(tmp_path / "eps")
  os.makedirs(d)
  fr = np.random.default_rng(0).integers(0, 256, (9, 6, 5, 3), dtype=np.uint8)
  episodes_lib.write_episode(os.path.join(d, "a.npz"), fr, _actions(0, 9))
  episodes_lib.write_episode(os.path.join(d, "b.npz"), fr, _actions(1, 9), compress=True)
  assert episodes_lib.stored_array_location(os.path.join(d, "a.npz"), "frames") is not None
  assert episodes_lib.stored_array_location(os.path.join(d, "b.npz"), "frames") is None
  src = episodes_lib.EpisodeSource(d, split="train", action_dim=A, span=3, on_bad_data="raise")
  idx = np.array([1, 4, 7])
  for i in range(2):
    f, a = src.read(i, idx)
    np.testing.assert_array_equal(f, fr[idx])
    np.testing.assert_array_equal(a, _actions(i, 9)[idx])
