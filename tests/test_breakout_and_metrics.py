"""The embedded Breakout simulator (rendering, detector, returns, recording) and the world-model metrics
(Delta-t-PSNR with its paired SE, position error, long-horizon frame statistics) on hand-made cases."""

import json
import os

import numpy as np
import pytest

from vid2world_jax.data import breakout
from vid2world_jax.metrics import world_model_metrics as wmm


def test_breakout_render_and_exact_detector_agree_with_the_state():
  r = breakout.run_policy("tracker_eps0.5", 3, steps=12, policy_seed=7)
  frames01 = r["frames"].astype(np.float32) / 255.0
  assert r["frames"].shape[1:] == (32, 32, 3) and r["frames"].dtype == np.uint8
  det = breakout.exact_detector()
  np.testing.assert_array_equal(det.classify(frames01), r["labels"])
  pos = det.detect(frames01)
  paddle = [int(np.argmax(l[9] == breakout.CLASSES.index("paddle"))) for l in r["labels"]]
  np.testing.assert_array_equal(pos["paddle_x"], paddle)


def test_breakout_actions_move_the_paddle_three_pixels():
  g = breakout.Game()
  f0 = g.reset(11)
  x0 = breakout.exact_detector().detect(f0[None] / 255.0)["paddle_x"][0]
  a = 1 if x0 > 0 else 2
  f1, _, _ = g.step(a)
  x1 = breakout.exact_detector().detect(f1[None] / 255.0)["paddle_x"][0]
  assert abs(int(x1) - int(x0)) == 1
  # the paddle row differs in >= 2 cells of 3x3 pixels
  assert np.sum(np.any(f0[28:31] != f1[28:31], axis=(0, 2))) >= 6
  with pytest.raises(ValueError, match="action must be"):
    g.step(5)


@pytest.mark.parametrize("policy", list(breakout.POLICIES))
def test_breakout_return_from_frames_equals_the_simulator_reward(policy):
  det = breakout.exact_detector()
  for seed in range(6):
    r = breakout.run_policy(policy, 100 + seed, steps=30)
    f = r["frames"].astype(np.float32) / 255.0
    ret = breakout.episode_return(det.classify(f)[None], det.detect(f)["ball_y"][None])[0]
    assert ret == r["return"]


def test_breakout_policies_are_graded():
  means = {p: np.mean([breakout.run_policy(p, 200 + s, steps=30)["return"] for s in range(16)])
           for p in ("tracker", "tracker_eps0.5", "random")}
  assert means["tracker"] > means["tracker_eps0.5"] > means["random"]


def test_breakout_recording_and_fitted_detector(tmp_path):
  d = breakout.embedded_dataset_dir(str(tmp_path), episodes_per_policy=8, steps=12, progress=False)
  meta = json.load(open(os.path.join(d, "meta.json")))
  splits = json.load(open(os.path.join(d, "splits.json")))
  assert meta["action_dim"] == 3 and len(splits["test"]) >= 1 and not set(splits["test"]) & set(splits["train"])
  assert breakout.embedded_dataset_dir(str(tmp_path), episodes_per_policy=8, steps=12) == d  # cached
  det = breakout.fit_detector(d)
  np.testing.assert_allclose(det.prototypes, breakout.exact_detector().prototypes, atol=1e-4)


def test_delta_psnr_paired_standard_error_by_hand():
  true = np.array([[0, 30, 31], [0, 28, 29], [0, 26, 30]], float)
  other = np.array([[0, 29, 30], [0, 27, 27], [0, 26, 28]], float)
  out = wmm.delta_psnr(true, other)
  np.testing.assert_allclose(out["per_horizon"], [2 / 3, 5 / 3])
  np.testing.assert_allclose(out["se_per_horizon"][0], np.std([1, 1, 0], ddof=1) / np.sqrt(3))
  diffs = np.array([1.0, 1.5, 1.0])
  np.testing.assert_allclose(out["mean"], diffs.mean())
  np.testing.assert_allclose(out["se"], diffs.std(ddof=1) / np.sqrt(3))
  with pytest.raises(ValueError):
    wmm.delta_psnr(true, other[:2])


def test_position_error_and_frame_statistics_by_hand():
  out = wmm.position_error(np.array([[4, 5, 7], [1, 1, 1]]), np.array([[4, 5, 5], [1, 2, 3]]))
  np.testing.assert_allclose(out["per_horizon"], [0.5, 2.0])
  np.testing.assert_allclose(out["per_clip"], [1.0, 1.5])
  assert out["mean"] == 1.25
  gt = np.random.default_rng(0).uniform(size=(2, 4, 8, 8, 3))
  same = wmm.frame_statistics(gt, gt)
  assert same["max_rel_mean_dev"] == 0 and same["max_rel_std_dev"] == 0
  grey = np.full_like(gt, 0.5)  # a collapsed rollout: right mean, no contrast
  coll = wmm.frame_statistics(grey, gt)
  assert coll["max_rel_mean_dev"] < 0.05 and coll["max_rel_std_dev"] > 0.99


def test_frame_metrics_shapes_and_identity():
  v = np.random.default_rng(1).uniform(size=(2, 3, 16, 16, 3)).astype(np.float32)
  m = wmm.frame_metrics(v, v)
  assert m["psnr"].shape == (2, 3) and np.all(m["mse"] == 0) and np.allclose(m["ssim"], 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="one shape"):
    wmm.frame_metrics(v, v[:1])
