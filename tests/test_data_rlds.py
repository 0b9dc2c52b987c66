"""RT-1 reader on RLDS/TFDS TFRecords written with the fractal20220817_data feature spec (TFDS serializer)."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from vid2world_jax.data import common
from vid2world_jax.data import config as config_lib
from vid2world_jax.data import pipeline
from vid2world_jax.data import rt1
from vid2world_jax.data import testdata

T = 6


def _images(ep):
  img = np.zeros((T, 256, 320, 3), np.uint8)
  for t in range(T):
    img[t] = (ep * 40, t * 30, 120)  # flat colours survive JPEG almost exactly
  return img


def _actions(ep):
  """Distinct value per (episode, step, key, component): key k contributes 10*k + component."""
  out = {}
  for k, (key, (shape, dtype)) in enumerate(testdata.ACTION_SPECS.items()):
    n = int(np.prod(shape))
    if dtype == np.int32:  # terminate_episode: one-hot, terminate on the last step
      out[key] = np.array([[1, 0, 0] if t == T - 1 else [0, 1, 0] for t in range(T)], np.int32)
    else:
      out[key] = np.stack([1000 * ep + 100 * t + 10 * k + np.arange(n) for t in range(T)]).reshape(
          T, *shape).astype(np.float32)
  return out


def _expected_actions(ep):
  rows = []
  for t in range(T):
    term = [1, 0, 0] if t == T - 1 else [0, 1, 0]
    base = 1000 * ep + 100 * t
    # order: base_displacement_vector(k=0), base_displacement_vertical_rotation(1), gripper_closedness_action(2),
    # rotation_delta(3), terminate_episode(4), world_vector(5)
    rows.append([base + 0, base + 1, base + 10, base + 20, base + 30, base + 31, base + 32, *term,
                 base + 50, base + 51, base + 52])
  return np.asarray(rows, np.float32)


@pytest.fixture(scope="module")
def fractal_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("rt1") / "fractal20220817_data" / "0.1.0")
  testdata.write_fractal(d, [testdata.fractal_episode(_images(e), _actions(e)) for e in range(4)], num_shards=2)
  return d


def _cfg(path, **kw):
  c = config_lib.default_data_config()
  c.update(source="rt1", path=path, clip_length=3, frame_stride=1, resolution=(32, 40), action_dim=13,
           batch_size=2, num_threads=1, split="all")
  c.update(kw)
  return c


def test_rlds_feature_spec_layout(fractal_dir):
  files = sorted(os.listdir(fractal_dir))
  assert "features.json" in files and "dataset_info.json" in files
  assert "fractal20220817_data-train.tfrecord-00000-of-00002" in files
  import tensorflow as tf
  rec = next(iter(tf.data.TFRecordDataset(
      os.path.join(fractal_dir, "fractal20220817_data-train.tfrecord-00000-of-00002"))))
  ex = tf.train.Example.FromString(rec.numpy())
  feat = ex.features.feature
  assert len(feat["steps/observation/image"].bytes_list.value) == T
  assert len(feat["steps/action/terminate_episode"].int64_list.value) == 3 * T
  assert len(feat["steps/observation/natural_language_embedding"].float_list.value) == 512 * T
  img = Image.open(io.BytesIO(feat["steps/observation/image"].bytes_list.value[0]))
  assert img.format == "JPEG" and img.size == (320, 256)


def test_rlds_action_order_13(fractal_dir):
  src = rt1.Rt1Source(fractal_dir, split="all", action_dim=13, span=1, on_bad_data="raise", progress=False)
  assert len(src.episodes) == 4 and all(e.length == T for e in src.episodes)
  # shards are written round-robin: shard 0 holds episodes 0, 2; shard 1 holds 1, 3
  written = [0, 2, 1, 3]
  for i, ep in enumerate(src.episodes):
    frames, actions = src.read(i, np.arange(T))
    assert frames.shape == (T, 256, 320, 3) and frames.dtype == np.uint8
    assert actions.shape == (T, 13) and actions.dtype == np.float32
    np.testing.assert_array_equal(actions, _expected_actions(written[i]))
    np.testing.assert_allclose(frames[:, 128, 160].astype(int), _images(written[i])[:, 0, 0].astype(int), atol=3)


def test_rlds_pipeline_batches(fractal_dir):
  it = pipeline.make_train_iterator(_cfg(fractal_dir), process_index=0, process_count=1)
  written = [0, 2, 1, 3]
  for _ in range(2):
    b = next(it)
    assert b["frames"].shape == (2, 3, 32, 40, 3) and b["frames"].dtype == np.float32
    assert b["actions"].shape == (2, 3, 13)
    assert -1 <= b["frames"].min() and b["frames"].max() <= 1
    for i in range(2):
      ep = written[int(b["episode_id"][i])]
      t0 = int(round((b["actions"][i, 0, 0] - 1000 * ep) / 100))
      np.testing.assert_array_equal(b["actions"][i], _expected_actions(ep)[t0:t0 + 3])
      exp = _images(ep)[t0:t0 + 3, 0, 0].astype(np.float32) / 127.5 - 1
      np.testing.assert_allclose(b["frames"][i, :, 16, 20], exp, atol=0.05)


def test_rlds_paper_resolution_clip(fractal_dir):
  cfg = _cfg(fractal_dir, resolution=(320, 512), clip_length=2, batch_size=1)
  b = next(pipeline.make_train_iterator(cfg, process_index=0, process_count=1))
  assert b["frames"].shape == (1, 2, 320, 512, 3)
  # resize + centre-crop: no black padding rows, the flat colour reaches the border
  np.testing.assert_allclose(b["frames"][0, 0, 0, 0], b["frames"][0, 0, 160, 256], atol=0.05)
  assert b["frames"][0, 0, 0, 0, 2] > -0.5


def test_rlds_holdout_split_and_eval_clips(fractal_dir):
  train = rt1.Rt1Source(fractal_dir, split="train", action_dim=13, span=3, on_bad_data="raise", progress=False)
  test = rt1.Rt1Source(fractal_dir, split="test", action_dim=13, span=3, on_bad_data="raise", progress=False)
  ids_train, ids_test = {e.episode_id for e in train.episodes}, {e.episode_id for e in test.episodes}
  assert len(ids_test) == 1 and not ids_train & ids_test and ids_train | ids_test == {0, 1, 2, 3}
  cfg = _cfg(fractal_dir)
  e1, e2 = pipeline.make_eval_clips(cfg), pipeline.make_eval_clips(cfg)
  assert len(e1) == 1 and e1.specs == e2.specs and e1.specs[0].episode_id in ids_test
  clip = e1[0]
  assert clip["frames"].shape == (3, 32, 40, 3) and int(clip["start"]) == e1.specs[0].start


def test_rlds_array_record_conversion(fractal_dir, tmp_path):
  out = str(tmp_path / "ar")
  rt1.main(["convert", fractal_dir, out])
  paths = sorted(os.path.join(out, f) for f in os.listdir(out) if ".array_record-" in f)
  assert len(paths) == 2 and os.path.exists(os.path.join(out, "features.json"))
  a = rt1.Rt1Source(fractal_dir, split="all", action_dim=13, span=1, on_bad_data="raise", progress=False)
  b = rt1.Rt1Source(out, split="all", action_dim=13, span=1, on_bad_data="raise", progress=False)
  assert b.format == "array_record" and len(b.episodes) == 4
  for i in range(4):
    fa, aa = a.read(i, np.arange(T))
    fb, ab = b.read(i, np.arange(T))
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(aa, ab)


def _write_bad(d, images=None, actions=None):
  testdata.write_fractal(d, [testdata.fractal_episode(_images(0), _actions(0)),
                             testdata.fractal_episode(_images(1) if images is None else images,
                                                      _actions(1) if actions is None else actions)])


def test_rlds_bad_nan_actions(tmp_path):
  d = str(tmp_path / "v")
  acts = _actions(1)
  acts["rotation_delta"][2, 1] = np.nan
  _write_bad(d, actions=acts)
  with pytest.raises(common.BadDataError, match=r"tfrecord-00000-of-00001 episode 1: 1 non-finite"):
    rt1.Rt1Source(d, split="all", action_dim=13, span=1, on_bad_data="raise", progress=False)
  common.reset_skip_counts()
  s = rt1.Rt1Source(d, split="all", action_dim=13, span=1, on_bad_data="skip", progress=False)
  assert [e.episode_id for e in s.episodes] == [0] and common.skip_counts() == {"nan_actions": 1}


def test_rlds_bad_corrupt_jpeg(tmp_path):
  d = str(tmp_path / "v")
  feats = testdata.fractal_features()
  good = feats.serialize_example(testdata.fractal_episode(_images(0), _actions(0)))
  import tensorflow as tf
  ex = tf.train.Example.FromString(feats.serialize_example(testdata.fractal_episode(_images(1), _actions(1))))
  imgs = ex.features.feature["steps/observation/image"].bytes_list.value
  imgs[2] = imgs[2][:200]  # truncated JPEG
  testdata.write_fractal(d, [good, ex.SerializeToString()])
  cfg = _cfg(d, clip_length=T)
  src = pipeline.make_source(cfg)
  loader = pipeline.ClipLoader(src, cfg)
  with pytest.raises(common.BadDataError, match=r"tfrecord-00000-of-00001 episode .*:1: corrupt JPEG"):
    loader.load(1, 0, None)
  assert loader.load(0, 0, None)["frames"].shape == (T, 32, 40, 3)
  common.reset_skip_counts()
  cfg.on_bad_data = "skip"
  it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
  for _ in range(2):
    assert set(next(it)["episode_id"].tolist()) == {0}
  assert common.skip_counts()["corrupt_file"] >= 1


def test_rlds_bad_inputs_dir_dim_short(tmp_path):
  with pytest.raises(common.BadDataError, match="not found"):
    rt1.Rt1Source(str(tmp_path / "missing"), split="all", action_dim=13, span=1, on_bad_data="raise")
  with pytest.raises(ValueError, match="13-dim"):
    rt1.Rt1Source(str(tmp_path), split="all", action_dim=7, span=1, on_bad_data="raise")
  d = str(tmp_path / "v")
  _write_bad(d)
  with pytest.raises(common.BadDataError, match=r"episode .*:0: 6 frames < clip span 16"):
    rt1.Rt1Source(d, split="all", action_dim=13, span=16, on_bad_data="raise", progress=False)
  with open(os.path.join(d, "dataset_info.json")) as f:
    assert json.load(f)["splits"][0]["name"] == "train"
