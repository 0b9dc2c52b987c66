"""The embedded Breakout simulator (rendering, detector, returns, recording) and the world-model metrics
(Delta-t-PSNR with its paired SE, position error, long-horizon frame statistics) on hand-made cases."""

import json
import os

import numpy as np
import pytest

from vid2world_jax.data import breakout, breakout_recording
from vid2world_jax.demo import breakout_eval
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
  d = breakout_recording.embedded_dataset_dir(str(tmp_path), episodes_per_policy=8, steps=12, progress=False)
  meta = json.load(open(os.path.join(d, "meta.json")))
  splits = json.load(open(os.path.join(d, "splits.json")))
  assert meta["action_dim"] == 3 and len(splits["test"]) >= 1 and not set(splits["test"]) & set(splits["train"])
  assert breakout_recording.embedded_dataset_dir(str(tmp_path), episodes_per_policy=8, steps=12) == d  # cached
  det = breakout_recording.fit_detector(d)
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


# ------------------------------------------------------------------------------------------------------------
# Policies outside the ball-chasing family, kept misses, the out-of-family split, miss rate and the bootstrap.

def _paddle_and_ball(frames_u8):
  det = breakout.exact_detector().detect(frames_u8.astype(np.float32) / 255.0)
  return det["paddle_x"], det["ball_x"]


def test_breakout_away_and_constant_policies_do_what_they_say():
  away = breakout.make_policy("away")
  rng = np.random.default_rng(0)
  acts = away.act_on_positions(np.array([5, 5, 2, 7]), np.array([2, 8, 2, 7]), rng)
  np.testing.assert_array_equal(acts, [2, 1, 2, 1])     # away from the ball; same column: towards the far wall
  r = breakout.run_policy("away", 7, steps=12)
  paddle, ball = _paddle_and_ball(r["frames"])
  gap = np.abs(paddle.astype(int) - ball.astype(int))
  assert gap[-1] >= gap[0] or paddle[-1] in (0, breakout.GRID - 1)
  left = breakout.run_policy("always_left", 8, steps=10)
  assert np.all(np.argmax(left["actions"], -1) == 1) and _paddle_and_ball(left["frames"])[0][-1] == 0
  with pytest.raises(ValueError, match="unknown policy"):
    breakout.make_policy("chase")


def test_breakout_explore_policy_holds_random_runs_whatever_the_ball_does():
  pol = breakout.make_policy("explore")
  rng = np.random.default_rng(3)
  acts = np.array([int(pol.act_on_positions(np.array([4]), np.array([4 + (t % 3) - 1]), rng)[0])
                   for t in range(400)])
  runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, acts, -1]) != 0))      # lengths of constant stretches
  assert runs.mean() > 2.0                            # temporally correlated (i.i.d. actions: ~1.5)
  assert set(acts.tolist()) == {0, 1, 2} and abs(np.mean(acts == 0) - 1 / 3) < 0.15
  mix = breakout.make_policy("explore_mix")
  paddle, ball = np.full(300, 2), np.full(300, 7)     # ball to the right: tracking means "right"
  m = np.array([int(mix.act_on_positions(paddle[i:i + 1], ball[i:i + 1], rng)[0]) for i in range(300)])
  assert 0.5 < np.mean(m == 2) < 0.95                 # tracks in some runs, random in the others


def _catch_configurations(policy: str, seeds: range) -> list:
  """(paddle - ball column, action), mirrored so that the ball moves right, of every catch in the episodes."""
  out = []
  for seed in seeds:
    r = breakout.run_policy(policy, seed, steps=40, policy_seed=seed)
    det = breakout.exact_detector().detect(r["frames"].astype(np.float32) / 255.0)
    by, bx, px = (np.asarray(det[k]).astype(int) for k in ("ball_y", "ball_x", "paddle_x"))
    for t in range(1, len(by) - 1):
      if by[t] == 8 and by[t - 1] == 7 and by[t + 1] == 8:
        d = 1 if bx[t] > bx[t - 1] else -1
        out.append(((px[t] - bx[t]) * d, [0, -1, 1][int(np.argmax(r["actions"][t]))] * d))
  return out


def test_breakout_landing_follows_minatar_walls():
  assert breakout.landing(4, 1, 3) == (7, 1)
  assert breakout.landing(8, 1, 3) == (8, -1)          # 9, then held at the wall for a frame, then back
  assert breakout.landing(1, -1, 2) == (0, 1) and breakout.landing(0, -1, 0) == (0, -1)


def test_breakout_intercept_policy_catches_from_every_side():
  """The trackers catch from one column behind the ball (moving with it); the intercept policy's catches spread
  over the other configurations of MinAtar's rule (the paddle ends under the ball's old or new column)."""
  tracker = _catch_configurations("tracker", range(1000, 1016))
  intercept = _catch_configurations("intercept", range(1000, 1016))
  assert len(tracker) > 20 and len(intercept) > 20
  lag = (-1, 1)                                        # one column behind, moving with the ball
  assert np.mean([c == lag for c in tracker]) > 0.9
  assert np.mean([c == lag for c in intercept]) < 0.3
  assert len(set(intercept)) >= 5
  game_rule = {(-1, 1), (0, 0), (0, 1), (1, -1), (1, 0), (2, -1)}   # ends under the old or the new column
  assert np.mean([c in game_rule for c in intercept]) > 0.9   # (the rest: wall cells, where columns coincide)
  with pytest.raises(ValueError, match="ball_y"):
    breakout.make_policy("intercept").act_on_positions(np.array([3]), np.array([4]), np.random.default_rng(0))
  with pytest.raises(ValueError, match="miss_prob"):
    breakout.InterceptPolicy(miss_prob=1.5)


def test_breakout_recording_keeps_misses_with_frozen_frames(tmp_path):
  r = breakout.run_policy("random", 1001, steps=40, policy_seed=4, miss_hold=3)
  assert r["done"] and r["miss_frame"] == len(r["frames"]) - 4
  tail = r["frames"][r["miss_frame"]:]
  assert all(np.array_equal(f, tail[0]) for f in tail) and len(r["actions"]) == len(r["frames"])
  assert _paddle_and_ball(tail[:1])[0] is not None
  assert breakout.exact_detector().detect(tail[:1] / 255.0)["ball_y"][0] == breakout.GRID - 1   # the miss shows
  d = breakout_recording.embedded_dataset_dir(str(tmp_path), episodes_per_policy=8, steps=16, progress=False,
                                    policies=("tracker", "random", "explore"), miss_hold=2)
  meta = json.load(open(os.path.join(d, "meta.json")))
  assert meta["policies"] == ["tracker", "random", "explore"] and meta["miss_hold"] == 2
  assert meta["misses"]["tracker"] == 0 and meta["misses"]["random"] > 4 and meta["skipped_short"] == 0
  other = breakout_recording.embedded_dataset_dir(str(tmp_path), episodes_per_policy=8, steps=16, progress=False,
                                        policies=("tracker", "random"), miss_hold=2)
  assert other != d                                   # other settings, other folder: recordings never mix
  with pytest.raises(ValueError, match="recording policies"):
    breakout_recording.embedded_dataset_dir(str(tmp_path), policies=("away",))


def test_out_of_family_clips_share_contexts_and_follow_their_family():
  from vid2world_jax.demo import out_of_family as oof
  clips = oof.make_clips(3, 8, first_seed=9000)
  n = 3 * (len(oof.FAMILIES) + 1)
  assert clips["frames"].shape == (n, 8, 32, 32, 3) and clips["actions"].shape == (n, 8, 3)
  assert clips["frames"].min() >= -1.0 and clips["frames"].max() <= 1.0
  fam, ctx = clips["family"], clips["context"]
  acts = np.argmax(clips["actions"], -1)
  for c in range(3):                                   # every family starts from the same frame of context c
    first = clips["frames"][ctx == c][:, 0]
    assert all(np.array_equal(f, first[0]) for f in first)
  assert np.all(acts[fam == "noop"] == 0)
  alt = acts[fam == "alternate"]
  assert np.all(alt[:, 1:] != alt[:, :-1]) and set(alt.ravel().tolist()) == {1, 2}
  hold = acts[fam == "hold"]
  assert set(hold.ravel().tolist()) == {1, 2} and np.all(hold[:, 1] == hold[:, 0])      # runs of >= 2
  # "away": the paddle never moves towards the ball (frames read by the exact detector)
  away = ((clips["frames"][fam == "away"] + 1) * 127.5).round().astype(np.uint8)
  for v in away:
    p, b = _paddle_and_ball(v)
    steps = np.flatnonzero(p[1:] != p[:-1])
    assert all(abs(int(p[t + 1]) - int(b[t])) > abs(int(p[t]) - int(b[t])) for t in steps)
  other = oof.other_family_actions(clips)
  assert not np.any(np.all(other == clips["actions"], axis=(1, 2))[fam != oof.CONTROL])  # never the same sequence
  i = int(np.flatnonzero(fam == "hold")[1])
  j = int(np.flatnonzero((fam == "alternate") & (ctx == ctx[i]))[0])
  np.testing.assert_array_equal(other[i], clips["actions"][j])                 # same context, next family
  with pytest.raises(ValueError, match="unknown action family"):
    oof.make_clips(1, 4, families=("spin",))


def test_ball_error_and_miss_detection_by_hand():
  from vid2world_jax.demo import breakout_eval
  from vid2world_jax.demo import out_of_family as oof
  gt = np.array([[[0, 0], [1, 1], [2, 2]]])
  pred = np.array([[[0, 0], [1, 1], [5, 6]]])
  e = oof.ball_error(pred, gt)
  np.testing.assert_allclose(e["per_horizon"], [0.0, 5.0])
  assert e["mean"] == 2.5
  with pytest.raises(ValueError):
    oof.ball_error(pred[..., :1], gt[..., :1])
  missed = breakout.run_policy("random", 1001, steps=40, policy_seed=4)
  kept = breakout.run_policy("tracker", 1001, steps=20)
  assert missed["done"] and not kept["done"]
  v = np.stack([missed["frames"][-2:], kept["frames"][-2:]]).astype(np.float32) / 255.0
  np.testing.assert_array_equal(breakout_eval.frames_missed(breakout.exact_detector(), v), [True, False])


def test_policy_ranking_bootstrap_intervals():
  from vid2world_jax.demo import breakout_eval
  rng = np.random.default_rng(0)
  k = 16
  real = np.concatenate([rng.poisson(lam, k) for lam in (3.0, 1.5, 0.5)]).astype(float)
  by = np.repeat(np.arange(3), k)
  same = breakout_eval.bootstrap_ranking(real, real, by, 3, resamples=200, seed=1)
  assert same["mmrv"] == [0.0, 0.0] and same["pearson_r"][0] > 0.99        # the model agrees with reality
  flipped = breakout_eval.bootstrap_ranking(real, real[::-1].copy(), by, 3, resamples=200, seed=1)
  assert flipped["pearson_r"][1] < 0 and flipped["mmrv"][0] > 0.3           # the ranking reversed
  lo, hi = breakout_eval.bootstrap_ranking(real, real + rng.normal(0, 1.0, real.size), by, 3, resamples=200,
                                           seed=1)["pearson_r"]
  assert lo < hi <= 1.0
  with pytest.raises(ValueError, match="same number"):
    breakout_eval.bootstrap_ranking(real[:-1], real[:-1], by[:-1], 3)


def test_catch_test_counts_catches_and_misses_by_configuration():
  det = breakout.exact_detector()
  frames = breakout_eval.deciding_frames(["tracker_eps0.5", "intercept"], 6, 5000, det, steps=30)
  n, missed, conf = len(frames["missed"]), frames["missed"], frames["configuration"]
  assert frames["context"].shape == (n, 4, 32, 32, 3) and frames["action"].shape == (n, 1, 3)
  assert missed.any() and (~missed).any()
  rule = {(-1, 1), (0, 0), (0, 1), (1, -1), (1, 0), (2, -1)}         # MinAtar: ends under the old or new column
  assert all(tuple(c) in rule for c in conf[~missed] if abs(c[0]) < 3)
  assert not any(tuple(c) in rule for c in conf[missed])
  miss_screen = breakout.run_policy("always_left", 5001, steps=40)["frames"][-1]
  assert det.detect(miss_screen[None].astype(np.float32) / 255.0)["ball_y"][0] == breakout.GRID - 1

  class Fixed:   # a world model that always draws the same next frame (or repeats the newest context frame)
    def __init__(self, frame):
      self.frame = frame

    def rollout(self, context_u8, actions, *, guidance_scale, seed, context_actions):
      assert context_actions.shape[1] == context_u8.shape[1] - 1 and actions.shape[1] == 1
      nxt = context_u8[:, -1] if self.frame is None else np.broadcast_to(self.frame, context_u8[:, -1].shape)
      return np.asarray(nxt)[:, None]

  always_miss = breakout_eval.catch_test(Fixed(miss_screen), frames, det, guidance_scale=None, batch=5)
  assert always_miss["catch_drawn_as_miss"] == always_miss["catches"] == int((~missed).sum())
  assert always_miss["miss_drawn_as_catch"] == 0 and always_miss["events"] == n
  assert sum(v["n"] for v in always_miss["by_configuration"].values()) == n
  never_miss = breakout_eval.catch_test(Fixed(None), frames, det, guidance_scale=None, batch=7)
  assert never_miss["catch_drawn_as_miss"] == 0 and never_miss["miss_drawn_as_catch"] == int(missed.sum())
  assert never_miss["lag_catches"] + never_miss["other_catches"] == never_miss["catches"]


def test_policy_evaluation_pairs_the_policies_randomness_with_the_real_game():
  """In a world model that is the game itself, every episode, random actions included, is the real one: the real
  and imagined miss rates and returns agree exactly (the policies' streams are paired, not drawn afresh)."""
  pols, episodes, first_seed, horizon = ["tracker_eps0.5", "random", "tracker"], 4, 5000, 12
  seeds = [first_seed + k for _ in pols for k in range(episodes)]

  class GameVenv:   # the real simulator behind the world model's vector-env interface
    num_envs = len(seeds)

    def reset(self, seed, options):
      del seed
      self.games = [breakout.Game() for _ in seeds]
      self.frames = [[g.reset(s)] for g, s in zip(self.games, seeds)]
      assert all(np.array_equal(f[0], c[0]) for f, c in zip(self.frames, options["context"]))
      return np.stack([f[-1] for f in self.frames]), {}

    def step(self, actions):
      for g, f, a in zip(self.games, self.frames, np.argmax(actions, -1)):
        f.append(f[-1] if g.done else g.step(int(a))[0])
      return np.stack([f[-1] for f in self.frames]), None, None, None, None

    def episode_frames(self):
      return np.stack([np.stack(f) for f in self.frames])

  out = breakout_eval.policy_evaluation(GameVenv(), pols, episodes, first_seed, horizon, breakout.exact_detector(),
                                        bootstrap=10)
  ep = out["per_episode"]
  assert ep["real_missed"] == ep["world_model_missed"] and ep["real"] == ep["world_model"]
  assert 0 < np.mean(ep["real_missed"]) < 1                                  # both outcomes occur
