"""Breakout-specific evaluation of the embedded default: the paddle-position probe and Real2Sim policy evaluation.

* ``paddle_positions``: the controlled object's position (the paddle's column) in real or generated frames,
  found by ``breakout.CellDetector`` fit on REAL recorded frames only (their simulator labels).
* ``policy_evaluation``: the paper's Real2Sim experiment in miniature. Image policies of graded quality
  (``breakout.POLICIES``) act CLOSED-LOOP on frames: in the real simulator on its rendered frames, inside the world
  model on the frames it imagines (``envs.WorldModelVectorEnv``, all episodes stepped as one batch), from the same
  initial frames. Return = bricks broken before the ball is missed, read from the frames by the same detector in
  both worlds (on real frames it equals MinAtar's reward, tested). Pearson r and MMRV (SIMPLER) compare the
  per-policy mean returns (MMRV on returns divided by the best real mean return, as it is defined on rates).
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


class _MixedPolicy:
  """One image policy per episode of the batch (episodes of several policies stepped together)."""

  def __init__(self, names: list[str], detector: breakout.CellDetector, seed: int):
    self.policies = [breakout.make_policy(n, detector) for n in names]
    self.detector = detector
    self.rng = np.random.default_rng(seed)

  def __call__(self, obs_u8: np.ndarray, step: int) -> np.ndarray:
    del step
    det = self.detector.detect(np.asarray(obs_u8, np.float32) / 255.0)
    acts = np.array([int(p.act_on_positions(det["paddle_x"][i:i + 1], det["ball_x"][i:i + 1], self.rng)[0])
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
      runs.append({"policy": p, "seed": seed, "frames": r["frames"], "return": r["return"]})
  return runs


def policy_evaluation(venv, policies, episodes: int, first_seed: int, horizon: int,
                      detector: breakout.CellDetector, seed: int = 0) -> dict:
  """Real vs world-model returns of each policy. ``venv``: a ``WorldModelVectorEnv`` with
  ``num_envs = len(policies) * episodes`` (the caller builds it from the trained model)."""
  from vid2world_jax import policy_eval  # pylint: disable=import-outside-toplevel
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
  mean = lambda arr, p: float(np.mean([arr[i] for i in range(len(runs)) if names[i] == p]))
  real = {p: mean(real_ret, p) for p in pols}
  wm = {p: mean(wm_ret, p) for p in pols}
  # MMRV is defined on success rates in [0, 1] (SIMPLER); returns are divided by the best real mean return so the
  # 0.1 bar means the same here. Pearson r does not depend on the scale.
  norm = max(max(real.values()), 1e-9)
  out = {"policies": pols, "real": real, "world_model": wm, "return_normalizer": norm,
         "pearson_r": policy_eval.pearson([wm[p] for p in pols], [real[p] for p in pols]),
         "mmrv": policy_eval.mmrv([wm[p] / norm for p in pols], [real[p] / norm for p in pols]),
         "episodes_per_policy": int(episodes), "horizon": int(horizon),
         "per_episode": {"policy": names, "seed": [r["seed"] for r in runs], "real": real_ret.tolist(),
                         "world_model": wm_ret.tolist()},
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
