"""CS:GO reader on HDF5 files written with DIAMOND's / Pearce & Zhu's keys (BGR frames, 51-dim actions)."""

import os

import numpy as np
import pytest

from vid2world_jax.data import common
from vid2world_jax.data import config as config_lib
from vid2world_jax.data import csgo
from vid2world_jax.data import pipeline
from vid2world_jax.data import testdata

T = 10


def _bgr(n):
  f = np.zeros((T, 150, 280, 3), np.uint8)
  for i in range(T):
    f[i] = (i * 20, 100, 10 * n)  # B, G, R
  return f


def _acts(n):
  keys = [("w",), ("a", "shift"), (), ("r", "1")]
  return np.stack([csgo.encode_action(keys[i % 4], left_click=i % 3 == 0, mouse_dx=(i - 5) * 37.0,
                                      mouse_dy=-3.0 * i + n) for i in range(T)])


@pytest.fixture(scope="module")
def csgo_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("csgo") / "full_res"
  for n in (1, 2, 3, 5):
    testdata.write_csgo_hdf5(str(root / "1-200" / f"hdf5_dm_july2021_{n}.hdf5"), _bgr(n), _acts(n))
  (root / "test_split.txt").write_text("hdf5_dm_july2021_3.hdf5\nhdf5_dm_july2021_5.hdf5\n")
  return str(root)


def _cfg(path, **kw):
  c = config_lib.default_data_config()
  c.update(source="csgo", path=path, clip_length=4, frame_stride=1, resolution=(32, 56), action_dim=51,
           batch_size=2, num_threads=1, split="train")
  c.update(kw)
  return c


def test_csgo_encode_action_51():
  a = csgo.encode_action(("w", "d", "r"), left_click=True, mouse_dx=0.0, mouse_dy=0.0)
  assert a.shape == (51,)
  assert a[[0, 3, 10, 11]].tolist() == [1, 1, 1, 1] and a[12] == 0
  assert a[24] == 1 and a[43] == 1 and a.sum() == 6  # "no movement" bins: x index 11 -> 24, y index 7 -> 43
  b = csgo.encode_action(mouse_dx=5000, mouse_dy=-6)  # clipped to 1000 -> last x bin; -6 nearest -4
  assert b[13 + 22] == 1 and b[36 + 5] == 1 and b.sum() == 2


def test_csgo_reader_values_bgr_and_actions(csgo_dir):
  src = csgo.CsgoSource(csgo_dir, split="all", action_dim=51, span=4, on_bad_data="raise")
  assert [e.name for e in src.episodes] == ["1-200/hdf5_dm_july2021_1.hdf5", "1-200/hdf5_dm_july2021_2.hdf5",
                                            "1-200/hdf5_dm_july2021_3.hdf5", "1-200/hdf5_dm_july2021_5.hdf5"]
  assert all(e.length == T for e in src.episodes)
  frames, actions = src.read(1, np.array([2, 3, 7]))
  assert frames.shape == (3, 150, 280, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(frames[:, 0, 0], [[20, 100, 40], [20, 100, 60], [20, 100, 140]])  # RGB now
  assert actions.shape == (3, 51) and actions.dtype == np.float32
  np.testing.assert_array_equal(actions, _acts(2)[[2, 3, 7]])
  assert np.all(actions[:, 13:36].sum(1) == 1) and np.all(actions[:, 36:51].sum(1) == 1)


def test_csgo_split_by_file_list(csgo_dir):
  train = pipeline.make_source(_cfg(csgo_dir))
  test = pipeline.make_source(_cfg(csgo_dir), split="test")
  assert [e.name.split("/")[1] for e in train.episodes] == ["hdf5_dm_july2021_1.hdf5", "hdf5_dm_july2021_2.hdf5"]
  assert [e.name.split("/")[1] for e in test.episodes] == ["hdf5_dm_july2021_3.hdf5", "hdf5_dm_july2021_5.hdf5"]
  ev = pipeline.make_eval_clips(_cfg(csgo_dir), 4)
  assert len(ev) == 4 and {s.name for s in ev.specs} == {e.name for e in test.episodes}
  assert [s.start for s in ev.specs] == [s.start for s in pipeline.make_eval_clips(_cfg(csgo_dir), 4).specs]


def test_csgo_pipeline_paper_resolution(csgo_dir):
  cfg = _cfg(csgo_dir, resolution=(320, 512), clip_length=3)
  b = next(pipeline.make_train_iterator(cfg, process_index=0, process_count=1))
  assert b["frames"].shape == (2, 3, 320, 512, 3) and b["actions"].shape == (2, 3, 51)
  f = b["frames"][0, 0]
  assert np.all(f[:22] == -1.0) and np.all(f[297:] == -1.0)  # 22 / 23 black rows around 275 content rows
  np.testing.assert_allclose(f[150, 256, 1], 100 / 127.5 - 1, atol=0.02)  # G channel
  ep = [1, 2][int(b["episode_id"][0])]
  t0 = int(round((b["frames"][0, 0, 150, 256, 2] + 1) * 127.5 / 20))  # blue = 20 * t after BGR -> RGB
  np.testing.assert_array_equal(b["actions"][0], _acts(ep)[t0:t0 + 3])
  np.testing.assert_allclose(b["frames"][0, :, 150, 256, 0], 10 * ep / 127.5 - 1, atol=0.02)


def test_csgo_bad_inputs(tmp_path, csgo_dir):
  with pytest.raises(common.BadDataError, match="not found"):
    pipeline.make_source(_cfg(str(tmp_path / "missing")))
  with pytest.raises(ValueError, match="51-dim"):
    pipeline.make_source(_cfg(csgo_dir, action_dim=13))
  root = tmp_path / "full_res"
  testdata.write_csgo_hdf5(str(root / "a" / "hdf5_dm_july2021_1.hdf5"), _bgr(1), _acts(1))
  testdata.write_csgo_hdf5(str(root / "a" / "hdf5_dm_july2021_2.hdf5"), _bgr(2)[:3], _acts(2)[:3])  # short
  with open(root / "a" / "hdf5_dm_july2021_4.hdf5", "wb") as f:
    f.write(b"\x89HDF\r\n\x1a\n truncated")  # corrupt
  nan = _acts(6)
  nan[5, 40] = np.nan
  testdata.write_csgo_hdf5(str(root / "a" / "hdf5_dm_july2021_6.hdf5"), _bgr(6), nan)
  cfg = _cfg(str(root), split="all")
  with pytest.raises(common.BadDataError, match=r"hdf5_dm_july2021_4.hdf5 episode a/hdf5_dm_july2021_4.hdf5: "
                                                 r"cannot read HDF5"):
    pipeline.make_source(cfg)
  cfg.on_bad_data = "skip"
  common.reset_skip_counts()
  src = pipeline.make_source(cfg)
  assert [e.name for e in src.episodes] == ["a/hdf5_dm_july2021_1.hdf5", "a/hdf5_dm_july2021_6.hdf5"]
  assert common.skip_counts() == {"short_episode": 1, "corrupt_file": 1}
  os.remove(root / "a" / "hdf5_dm_july2021_4.hdf5")
  cfg.on_bad_data = "raise"
  with pytest.raises(common.BadDataError, match=r"hdf5_dm_july2021_2.hdf5 episode a/hdf5_dm_july2021_2.hdf5: 3 "
                                                 r"frames < clip span 4"):
    pipeline.make_source(cfg)
  os.remove(root / "a" / "hdf5_dm_july2021_2.hdf5")
  loader = pipeline.ClipLoader(pipeline.make_source(cfg), cfg)
  with pytest.raises(common.BadDataError, match=r"hdf5_dm_july2021_6.hdf5 episode a/hdf5_dm_july2021_6.hdf5 "
                                                 r"frames 4..7: 1 non-finite"):
    loader.load(1, 4, None)
  with pytest.raises(common.BadDataError, match="test_split.txt"):
    pipeline.make_source(_cfg(str(root), split="train"))
