"""Policy evaluation in the world model: Pearson / MMRV on hand-computed examples, the evaluation loop, CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import _rollout_helpers as h
from vid2world_jax.inference import envs
from vid2world_jax.inference import policy_eval as pe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_policy_metrics_hand_computed_example():
  sim, real = [0.1, 0.5, 0.3], [0.2, 0.4, 0.6]
  # only the pair (1, 2) is ranked differently: RV = |0.4 - 0.6| = 0.2 for i = 1 and i = 2, 0 for i = 0
  rv = pe.rank_violations(sim, real)
  np.testing.assert_allclose(rv, [[0, 0, 0], [0, 0, 0.2], [0, 0.2, 0]], atol=1e-12)
  assert pe.mmrv(sim, real) == pytest.approx(0.4 / 3)
  # dx = (-0.2, 0.2, 0), dy = (-0.2, 0, 0.2): r = 0.04 / sqrt(0.08 * 0.08) = 0.5
  assert pe.pearson(sim, real) == pytest.approx(0.5)


def test_policy_metrics_reversed_tied_and_perfect_rankings():
  # fully reversed: every pair violates; max gaps 0.8, 0.8, 0.4
  assert pe.mmrv([0.9, 0.1, 0.5], [0.1, 0.9, 0.5]) == pytest.approx(2.0 / 3)
  assert pe.pearson([0.9, 0.1, 0.5], [0.1, 0.9, 0.5]) == pytest.approx(-1.0)
  # tie in the world model, strict order in reality: violation weighted by the real gap for the better policy
  assert pe.mmrv([0.5, 0.5], [0.1, 0.7]) == pytest.approx(0.3)
  assert np.isnan(pe.pearson([0.5, 0.5], [0.1, 0.7]))
  # the paper's Real2Sim numbers (Fig. 5, approximate): same ranking -> MMRV 0, high correlation
  real, wm = [0.000, 0.889, 0.926], [0.260, 0.820, 0.880]
  assert pe.mmrv(wm, real) == 0.0
  assert pe.pearson(wm, real) == pytest.approx(0.9998, abs=2e-3)
  with pytest.raises(ValueError, match="equal length"):
    pe.mmrv([0.1, 0.2], [0.1])
  c = pe.compare_to_real({"a": 0.1, "b": 0.5, "c": 0.3}, {"a": 0.2, "b": 0.4, "c": 0.6})
  assert c["policies"] == ["a", "b", "c"] and c["mmrv"] == pytest.approx(0.4 / 3)
  with pytest.raises(ValueError, match="not evaluated"):
    pe.compare_to_real({"a": 0.1, "b": 0.2}, {"a": 0.1, "z": 0.3})


def test_policy_evaluation_loop_in_world_model():
  frame = (8, 8, 3)
  venv = envs.WorldModelVectorEnv(h.tiny_session("toy", window=4), num_envs=3, guidance_scale=2.5)
  ctx = np.random.default_rng(0).integers(0, 256, size=(3, 1) + frame, dtype=np.uint8)
  seen = []

  def closed_loop(frames, t):  # acts on the imagined frames
    seen.append(frames.shape)
    return np.tile(frames.mean(axis=(1, 2))[:, :3] / 255.0, 1).astype(np.float32)

  replay = pe.ReplayPolicy(np.full((3, 5, 3), -1.0, np.float32))
  threshold = 127.5

  def success(frames):
    return frames[-1].mean() > threshold

  rep = pe.evaluate(venv, {"closed": closed_loop, "replay": replay}, ctx, steps=4, success_fn=success,
                    real_rates={"closed": 0.9, "replay": 0.1})
  assert seen == [(3,) + frame] * 4
  for name in ("closed", "replay"):
    succ = np.asarray(rep["successes"][name])
    assert succ.shape == (3,) and rep["success_rates"][name] == pytest.approx(succ.mean())
  # the scores are those of the episodes' last frames
  res = pe.run_policy_in_world_model(venv, replay, ctx, 4, success, seed=1)
  assert res["frames"].shape == (3, 5) + frame
  np.testing.assert_array_equal(res["successes"], [f[-1].mean() > threshold for f in res["frames"]])
  cmp_ = rep["comparison"]
  assert cmp_["policies"] == ["closed", "replay"] and 0.0 <= cmp_["mmrv"] <= 0.8


def test_policy_nearest_frame_verifier():
  a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 200, np.uint8)
  v = pe.NearestFrameVerifier(np.stack([a, b]), np.array([False, True]))
  assert v(np.stack([a, b + 10])) and not v(np.stack([b, a + 5]))


def test_policy_eval_cli_reports_rates_pearson_mmrv(tmp_path):
  h.write_toy_checkpoint(tmp_path / "work")
  rng = np.random.default_rng(0)
  n, steps = 2, 3
  np.savez(tmp_path / "set.npz",
           contexts=rng.integers(0, 256, size=(n, 1, 16, 16, 3), dtype=np.uint8),
           actions__good=np.ones((n, steps, 2), np.float32), actions__bad=-np.ones((n, steps, 2), np.float32),
           actions__mid=np.zeros((n, steps, 2), np.float32),
           real__good=0.9, real__bad=0.1, real__mid=0.5,
           verifier_frames=rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8),
           verifier_labels=np.array([True, False, True, False]))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  r = subprocess.run([sys.executable, "-m", "vid2world_jax.policy_eval", f"--config={REPO}/configs/test_tiny.py:toy",
                      f"--checkpoint={tmp_path / 'work'}", f"--episodes={tmp_path / 'set.npz'}", "--ddim_steps=2",
                      f"--out={tmp_path / 'rep.json'}"], cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  last = json.loads(r.stdout.strip().splitlines()[-1])
  assert set(last["success_rates"]) == {"good", "bad", "mid"} and "mmrv" in last and "pearson" in last
  rep = json.load(open(tmp_path / "rep.json"))
  sims = [rep["success_rates"][k] for k in ("bad", "good", "mid")]
  assert rep["comparison"]["mmrv"] == pytest.approx(pe.mmrv(sims, [0.1, 0.9, 0.5]))


def test_policy_eval_set_from_recorded_simulator_dataset(tmp_path):
  from vid2world_jax.data import episodes as episodes_lib
  rng = np.random.default_rng(0)
  eps = []
  for pi, (pol, succ) in enumerate([("expert", [True, True]), ("random", [False, True])]):
    for k, s in enumerate(succ):
      frames = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
      frames[0] = 10 * k                      # same initial frame per seed for both policies
      name = f"{pol}_{k:03d}"
      episodes_lib.write_episode(str(tmp_path / (name + ".npz")), frames,
                                 np.full((6, 4), pi + 0.1 * k, np.float32), s)
      eps.append({"name": name, "policy": pol, "seed": 1000 + k, "success": s})
  (tmp_path / "meta.json").write_text(json.dumps({"episodes": eps}))
  es = pe.eval_set_from_recording(str(tmp_path), context_frames=1, steps=4)
  assert es["contexts"].shape == (2, 1, 8, 8, 3) and (es["contexts"][1] == 10).all()
  assert es["real"] == {"expert": 1.0, "random": 0.5}
  np.testing.assert_allclose(es["policies"]["random"].actions[:, :, 0], [[1.0] * 4, [1.1] * 4], rtol=1e-6)
  assert es["verifier"].frames.shape == (4, 8, 8, 3)
