"""Breakout-specific evaluation of the embedded default: the paddle-position probe and Real2Sim policy evaluation.

* ``paddle_positions``: the controlled object's position (the paddle's column) in real or generated frames,
  found by ``breakout.CellDetector`` fit on REAL recorded frames only (their simulator labels).
* ``policy_evaluation``: the paper's Real2Sim experiment in miniature. Image policies (``breakout.make_policy``:
  the recorded family of graded quality, and policies outside it such as "away" and "always_left") act CLOSED-LOOP on frames: in the real simulator on its rendered frames, inside the world
  model on the frames it imagines (``envs.WorldModelVectorEnv``, all episodes stepped as one batch), from the same
  initial frames. Return = bricks broken before the ball is missed, read from the frames by the same detector in
  both worlds (on real frames it equals MinAtar's reward, tested). Pearson r and MMRV (SIMPLER) compare the
  per-policy mean returns (MMRV on returns divided by the best real mean return, as it is defined on rates), with
  percentile-bootstrap intervals over initial states; the miss rate (the ball reaches the paddle's row) is compared
  per policy.
"""

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


class _MixedPolicy:
  """One image policy per episode of the batch (episodes of several policies stepped together)."""

  def __init__(self, names: list[str], detector: breakout.CellDetector, seed: int):
    self.policies = [breakout.make_policy(n, detector) for n in names]
    self.detector = detector
    self.rng = np.random.default_rng(seed)

  def __call__(self, obs_u8: np.ndarray, step: int) -> np.ndarray:
    del step
    det = self.detector.detect(np.asarray(obs_u8, np.float32) / 255.0)
    acts = np.array([int(p.act_on_positions(det["paddle_x"][i:i + 1], det["ball_x"][i:i + 1], self.rng,
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
                              policy_seed=seed * 1000 + pi)
      runs.append({"policy": p, "seed": seed, "frames": r["frames"], "return": r["return"], "missed": r["done"]})
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
  pol = _MixedPolicy(names, detector, seed=int(seed) + 1)
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
                      f"{int(horizon)} actions; image policies act closed-loop on the frames of each world; "
                      f"return = bricks broken before the ball is missed, read from the frames by the detector "
                      f"fit on real frames")}
  real_frames = np.zeros_like(imagined)
  for i, r in enumerate(runs):  # real episodes end at a miss: hold the last frame for the side-by-side videos
    f = r["frames"].astype(np.float32) / 255.0
    real_frames[i, :len(f)] = f
    real_frames[i, len(f):] = f[-1]
  out["_videos"] = (real_frames, imagined)
  return out
