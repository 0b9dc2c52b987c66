"""Breakout-specific evaluation of the embedded default: the paddle-position probe, Real2Sim policy evaluation and
the catch test.

* ``paddle_positions``: the controlled object's position (the paddle's column) in real or generated frames,
  found by ``breakout.CellDetector`` fit on REAL recorded frames only (their simulator labels).
* ``policy_evaluation``: the paper's Real2Sim experiment in miniature. Image policies (``breakout.make_policy``:
  the recorded family of graded quality, and policies outside it such as "away" and "always_left") act
  CLOSED-LOOP on frames: in the real simulator on its rendered frames, inside the world model on the frames it
  imagines (``envs.WorldModelVectorEnv``, all episodes stepped as one batch), from the same initial frames and
  with the same random stream per episode (``policy_seed``: a world model that equals the game gives the same
  episodes). Return = bricks broken before the ball is missed, read from the frames by the same detector in
  both worlds (on real frames it equals MinAtar's reward, tested). Pearson r and MMRV (SIMPLER) compare the
  per-policy mean returns (MMRV on returns divided by the best real mean return, as it is defined on rates), with
  percentile-bootstrap intervals over initial states; the miss rate (the ball reaches the paddle's row) is compared
  per policy.
* ``deciding_frames`` / ``catch_test``: the next frame at every real frame where the ball has just reached the row
  above the paddle (the action settles catch or miss), by the paddle's configuration relative to the ball."""

from __future__ import annotations

import numpy as np

from vid2world_jax.data import breakout


def paddle_positions(detector: breakout.CellDetector, videos01: np.ndarray) -> np.ndarray:
  """``[N, T, 32, 32, 3]`` in [0, 1] -> ``[N, T]`` paddle columns."""
  return np.asarray(detector.detect(np.asarray(videos01, np.float32))["paddle_x"])


def frames_return(detector: breakout.CellDetector, videos01: np.ndarray) -> np.ndarray:
  """``[N, T, 32, 32, 3]`` in [0, 1] -> ``[N]`` bricks broken before the first detected miss."""
  v = np.asarray(videos01, np.float32)
  return breakout.episode_return(detector.classify(v), detector.detect(v)["ball_y"])


def frames_missed(detector: breakout.CellDetector, videos01: np.ndarray) -> np.ndarray:
  """``[N, T, 32, 32, 3]`` in [0, 1] -> ``[N]`` bool: the ball is seen in the paddle's row (a miss: the only time
  Breakout shows it there) in some frame."""
  return np.any(np.asarray(detector.detect(np.asarray(videos01, np.float32))["ball_y"]) == breakout.GRID - 1, axis=1)


def _policy_means(values: np.ndarray, by_policy: np.ndarray, pols: list) -> dict:
  return {p: float(np.mean(values[by_policy == i])) for i, p in enumerate(pols)}


def bootstrap_ranking(real_ret: np.ndarray, wm_ret: np.ndarray, by_policy: np.ndarray, n_policies: int, *,
                      resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
  """Percentile bootstrap over initial states of Pearson r and MMRV (returns normalised as in
  ``policy_evaluation``). Every policy was run from the same states (episode k of each policy starts from state
  k), so a resample draws state indices and keeps them for all policies. Returns ``{"pearson_r": [lo, hi],
  "mmrv": [lo, hi], "level", "resamples", "undefined_r"}`` (resamples where r is undefined, a constant side)."""
  from vid2world_jax.inference import policy_eval  # pylint: disable=import-outside-toplevel
  real_ret, wm_ret, by_policy = np.asarray(real_ret, float), np.asarray(wm_ret, float), np.asarray(by_policy)
  per = [np.flatnonzero(by_policy == i) for i in range(n_policies)]
  k = len(per[0])
  if any(len(x) != k for x in per) or k < 2:
    raise ValueError(f"every policy needs the same number (>= 2) of states, got {[len(x) for x in per]}")
  real = np.stack([real_ret[x] for x in per])                            # [P, K], column k = state k
  wm = np.stack([wm_ret[x] for x in per])
  rng = np.random.default_rng(seed)
  rs, ms = [], []
  for _ in range(int(resamples)):
    idx = rng.integers(0, k, k)
    r_m, w_m = real[:, idx].mean(1), wm[:, idx].mean(1)
    norm = max(float(r_m.max()), 1e-9)
    rs.append(policy_eval.pearson(w_m, r_m))
    ms.append(policy_eval.mmrv(w_m / norm, r_m / norm))
  q = [50 * (1 - level), 100 - 50 * (1 - level)]
  rs = np.asarray(rs)
  ok = np.isfinite(rs)
  return {"pearson_r": [float(x) for x in np.percentile(rs[ok], q)] if ok.any() else [float("nan")] * 2,
          "mmrv": [float(x) for x in np.percentile(ms, q)], "level": level, "resamples": int(resamples),
          "undefined_r": int((~ok).sum())}


def policy_seed(state_seed: int, policy_index: int) -> int:
  """The seed of a policy's own randomness (its random actions) in the episode from initial state ``state_seed``:
  the same in the real game and in the world model, so that a perfect world model gives the same episode."""
  return int(state_seed) * 1000 + int(policy_index)


class _MixedPolicy:
  """One image policy per episode of the batch (episodes of several policies stepped together), each with its own
  random stream (``seeds``, one per episode: ``policy_seed``), drawn in the same order as in the real game."""

  def __init__(self, names: list[str], detector: breakout.CellDetector, seeds: list[int]):
    self.policies = [breakout.make_policy(n, detector) for n in names]
    self.detector = detector
    self.rngs = [np.random.default_rng(int(s)) for s in seeds]

  def __call__(self, obs_u8: np.ndarray, step: int) -> np.ndarray:
    del step
    det = self.detector.detect(np.asarray(obs_u8, np.float32) / 255.0)
    acts = np.array([int(p.act_on_positions(det["paddle_x"][i:i + 1], det["ball_x"][i:i + 1], self.rngs[i],
                                            ball_y=det["ball_y"][i:i + 1])[0])
                     for i, p in enumerate(self.policies)])
    return np.eye(breakout.ACTION_DIM, dtype=np.float32)[acts]


def real_episodes(policies, episodes: int, first_seed: int, horizon: int, detector) -> list[dict]:
  """Every policy from the initial states ``first_seed + k`` in the real simulator (closed loop on frames)."""
  runs = []
  for pi, p in enumerate(policies):
    for k in range(int(episodes)):
      seed = int(first_seed) + k
      r = breakout.run_policy(breakout.make_policy(p, detector), seed, steps=int(horizon),
                              policy_seed=policy_seed(seed, pi))
      runs.append({"policy": p, "seed": seed, "policy_seed": policy_seed(seed, pi), "frames": r["frames"],
                   "return": r["return"], "missed": r["done"]})
  return runs


def policy_evaluation(venv, policies, episodes: int, first_seed: int, horizon: int,
                      detector: breakout.CellDetector, seed: int = 0, bootstrap: int = 1000) -> dict:
  """Real vs world-model returns of each policy. ``venv``: a ``WorldModelVectorEnv`` with
  ``num_envs = len(policies) * episodes`` (the caller builds it from the trained model)."""
  from vid2world_jax.inference import policy_eval  # pylint: disable=import-outside-toplevel
  pols = list(policies)
  runs = real_episodes(pols, episodes, first_seed, horizon, detector)
  names = [r["policy"] for r in runs]
  if venv.num_envs != len(runs):
    raise ValueError(f"vector env has {venv.num_envs} envs, need {len(runs)} (policies x episodes)")
  context = np.stack([r["frames"][:1] for r in runs])                     # [N, 1, 32, 32, 3] uint8
  obs, _ = venv.reset(seed=int(seed), options={"context": context})
  pol = _MixedPolicy(names, detector, [r["policy_seed"] for r in runs])   # paired: the real episode's stream
  for t in range(int(horizon)):
    obs, *_ = venv.step(pol(obs, t))
  imagined = venv.episode_frames().astype(np.float32) / 255.0             # [N, 1 + H, 32, 32, 3]
  wm_ret = frames_return(detector, imagined)
  real_ret = np.array([r["return"] for r in runs], np.float64)
  wm_miss = frames_missed(detector, imagined).astype(np.float64)
  real_miss = np.array([float(r["missed"]) for r in runs])
  by_policy = np.array([pols.index(n) for n in names])
  real, wm = _policy_means(real_ret, by_policy, pols), _policy_means(wm_ret, by_policy, pols)
  # MMRV is defined on success rates in [0, 1] (SIMPLER); returns are divided by the best real mean return so the
  # 0.1 bar means the same here. Pearson r does not depend on the scale.
  norm = max(max(real.values()), 1e-9)
  out = {"policies": pols, "real": real, "world_model": wm, "return_normalizer": norm,
         "pearson_r": policy_eval.pearson([wm[p] for p in pols], [real[p] for p in pols]),
         "mmrv": policy_eval.mmrv([wm[p] / norm for p in pols], [real[p] / norm for p in pols]),
         "miss_rate": {"real": _policy_means(real_miss, by_policy, pols),
                       "world_model": _policy_means(wm_miss, by_policy, pols)},
         "bootstrap": bootstrap_ranking(real_ret, wm_ret, by_policy, len(pols), resamples=bootstrap,
                                        seed=int(seed) + 2),
         "episodes_per_policy": int(episodes), "horizon": int(horizon),
         "per_episode": {"policy": names, "seed": [r["seed"] for r in runs], "real": real_ret.tolist(),
                         "world_model": wm_ret.tolist(), "real_missed": real_miss.tolist(),
                         "world_model_missed": wm_miss.tolist()},
         "protocol": (f"{int(episodes)} unseen initial states per policy (seeds {int(first_seed)}..), at most "
                      f"{int(horizon)} actions; image policies act closed-loop on the frames of each world, with "
                      f"the same random stream in both (paired); "
                      f"return = bricks broken before the ball is missed, read from the frames by the detector "
                      f"fit on real frames")}
  real_frames = np.zeros_like(imagined)
  for i, r in enumerate(runs):  # real episodes end at a miss: hold the last frame for the side-by-side videos
    f = r["frames"].astype(np.float32) / 255.0
    real_frames[i, :len(f)] = f
    real_frames[i, len(f):] = f[-1]
  out["_videos"] = (real_frames, imagined)
  return out


# -------------------------------------------------------------------------------------------------------------
# The catch test: the game's one rule at the paddle, one frame at a time, from real frames.

def deciding_frames(policies, episodes: int, first_seed: int, detector: breakout.CellDetector, *, steps: int = 40,
                    context: int = 4) -> dict:
  """Every frame of real episodes (each policy from seeds ``first_seed + k``) where the ball has just fallen into the
  row above the paddle: the next action settles catch or miss. Returns ``{"context" uint8 [N, context, 32, 32, 3]``
  (the frames up to that one), ``"context_actions" [N, context - 1, A]``, ``"action" [N, 1, A]``, ``"missed" bool
  [N]`` (the game's outcome), ``"configuration" [N, 2]``: the paddle's column minus the ball's and the paddle's
  move, both signed along the ball's horizontal direction (MinAtar catches when the paddle ends under the ball's
  column or the next one: (-1, +1), (0, 0), (0, +1), (1, -1), (1, 0), (2, -1)), ``"policy" [N]``}; None if there
  is none."""
  keys = ("context", "context_actions", "action", "missed", "configuration", "policy")
  out = {k: [] for k in keys}
  for pi, p in enumerate(policies):
    for k in range(int(episodes)):
      seed = int(first_seed) + k
      r = breakout.run_policy(breakout.make_policy(p, detector), seed, steps=int(steps),
                              policy_seed=policy_seed(seed, pi) + 500)   # not the evaluation's episodes
      det = detector.detect(r["frames"].astype(np.float32) / 255.0)
      by, bx, px = (np.asarray(det[n]).astype(int) for n in ("ball_y", "ball_x", "paddle_x"))
      for t in range(max(context - 1, 1), len(by) - 1):
        if by[t] == breakout.GRID - 2 and by[t - 1] == breakout.GRID - 3:
          d = 1 if bx[t] > bx[t - 1] else -1
          move = (0, -1, 1)[int(np.argmax(r["actions"][t]))]
          for n, v in zip(keys, (r["frames"][t + 1 - context:t + 1], r["actions"][t + 1 - context:t],
                                 r["actions"][t:t + 1], by[t + 1] == breakout.GRID - 1,
                                 ((px[t] - bx[t]) * d, move * d), p)):
            out[n].append(v)
  if not out["missed"]:
    return None
  return {k: np.asarray(v) if k == "policy" else np.stack(v) for k, v in out.items()}


def catch_test(session, frames: dict, detector: breakout.CellDetector, *, guidance_scale, seed: int = 0,
               batch: int = 32) -> dict:
  """The world model's next frame at every deciding frame (``deciding_frames``: real context, the real action):
  does it show the catch or the miss the game showed? ``session``: an ``InferenceSession``. Counts overall and
  per configuration (``"p{paddle - ball:+d} m{move:+d}"``)."""
  n = len(frames["missed"])
  preds = []
  for s in range(0, n, int(batch)):
    idx = np.minimum(np.arange(s, s + int(batch)), n - 1)          # pad the last batch: one compilation
    preds.append(session.rollout(frames["context"][idx], frames["action"][idx], guidance_scale=guidance_scale,
                                 seed=int(seed) + s, context_actions=frames["context_actions"][idx])[:, 0])
  pred = np.concatenate(preds)[:n].astype(np.float32) / 255.0
  drawn_miss = np.asarray(detector.detect(pred)["ball_y"]) == breakout.GRID - 1
  missed = np.asarray(frames["missed"], bool)
  wrong = drawn_miss != missed
  by_conf = {}
  for c in sorted({tuple(int(v) for v in row) for row in frames["configuration"]}):
    m = np.all(frames["configuration"] == np.array(c), axis=1)
    by_conf[f"p{c[0]:+d} m{c[1]:+d}"] = {"n": int(m.sum()), "catches": int((m & ~missed).sum()),
                                         "wrong": int((m & wrong).sum())}
  lag = np.all(frames["configuration"] == np.array([-1, 1]), axis=1)
  return {"events": n, "catches": int((~missed).sum()), "misses": int(missed.sum()),
          "catch_drawn_as_miss": int((~missed & drawn_miss).sum()),
          "miss_drawn_as_catch": int((missed & ~drawn_miss).sum()),
          "other_catches": int((~missed & ~lag).sum()), "other_catches_wrong": int((~missed & ~lag & wrong).sum()),
          "lag_catches": int((~missed & lag).sum()), "lag_catches_wrong": int((~missed & lag & wrong).sum()),
          "by_configuration": by_conf,
          "protocol": "the next frame from real frames and the real action where the ball has just reached the row "
                      "above the paddle; a miss = the ball detected in the paddle's row; 'lag' = the trackers' "
                      "catch (paddle one column behind the ball, moving with it)"}
