"""Meta-World drawer-close policy evaluation (the previous embedded default; ``data.embedded.env="metaworld"``).

Scripted policies act on the simulator's STATE, which an imagined video does not provide, so the world model
replays each real episode's actions open-loop from the real initial frame; success in both worlds is judged by
one frame verifier (a ridge classifier fit on the recorded frames) on the final frame.
"""

from __future__ import annotations

import json
import os

import numpy as np
from tqdm.auto import tqdm

from vid2world_jax import pixels

def _features(frames01: np.ndarray, size: int) -> np.ndarray:
  """``[N, H, W, 3]`` -> ``[N, size*size*3]`` area-downsampled (H, W divisible by size)."""
  n, h, w, c = frames01.shape
  if h % size or w % size:
    raise ValueError(f"verifier size {size} must divide the frame size {(h, w)}")
  x = frames01.reshape(n, size, h // size, size, w // size, c).mean(axis=(2, 4))
  return x.reshape(n, -1)


class SuccessVerifier:
  """Drawer-closed classifier on frames (stands in for the paper's human verifier): ridge regression on
  downsampled frames of the embedded dataset, label 1 from the recorded success step on (0 before / never)."""

  def __init__(self, cfg, size: int, lam: float = 1e-2):
    from vid2world_jax.data import episodes, simulator, video_ops
    e = cfg.data.get("embedded", {})
    root = cfg.data.path or simulator.embedded_dataset_dir(
        episodes_per_policy=e.get("episodes_per_policy", 6), steps=e.get("steps", 50),
        resolution=e.get("resolution", 64))
    with open(os.path.join(root, "meta.json")) as f:
      meta = json.load(f)
    xs, ys = [], []
    self.res = tuple(int(r) for r in cfg.data.resolution)
    for ep in meta["episodes"]:
      with np.load(os.path.join(root, ep["name"] + ".npz")) as z:
        frames = z["frames"]
      fr = (video_ops.to_unit_range(video_ops.spatial_transform(frames, self.res, "crop")) + 1.0) / 2.0
      y = np.zeros(len(fr), np.float32)
      if ep["success_step"] >= 0:
        y[ep["success_step"]:] = 1.0
      xs.append(_features(fr, size))
      ys.append(y)
    del episodes
    x, y = np.concatenate(xs), np.concatenate(ys)
    self.size = size
    self.mu, self.sd = x.mean(0), x.std(0) + 1e-3
    xn = np.concatenate([(x - self.mu) / self.sd, np.ones((len(x), 1))], 1)
    self.w = np.linalg.solve(xn.T @ xn + lam * len(x) * np.eye(xn.shape[1]), xn.T @ (2 * y - 1))
    self.train_accuracy = float(np.mean(self.predict(None, xn) == (y > 0.5)))

  def predict(self, frames01, xn=None) -> np.ndarray:
    if xn is None:
      x = _features(np.asarray(frames01, np.float32), self.size)
      xn = np.concatenate([(x - self.mu) / self.sd, np.ones((len(x), 1))], 1)
    return xn @ self.w > 0.0


def policy_evaluation(cfg, session) -> dict:
  """Scripted policies in the real simulator and inside the world model, from the same initial frames.

  The scripted policies act on the simulator's STATE observation, which an imagined video does not provide, so
  the world model replays each real episode's actions open-loop from the real initial frame (the paper's
  closed-loop protocol needs an image policy). Success in both worlds is judged by the same frame verifier on
  the final frame; the real simulator's own success flag is reported as the ground truth. ``session``: the world
  model (``inference.InferenceSession``)."""
  from vid2world_jax.inference import policy_eval  # Pearson r and MMRV (SIMPLER)
  from vid2world_jax.data import simulator, video_ops
  pe = cfg.demo.policy_eval
  res = tuple(int(r) for r in cfg.data.resolution)
  h = int(pe.horizon)
  runs = []
  env = simulator.make_env(int(cfg.data.get("embedded", {}).get("resolution", 64)))
  try:
    with tqdm(total=len(pe.policies) * int(pe.episodes), desc="(c') policies in the real simulator",
              disable=not cfg.demo.progress) as bar:
      for pi, p in enumerate(pe.policies):
        for k in range(int(pe.episodes)):
          r = simulator.run_policy(p, int(pe.first_seed) + k, steps=h, env=env,
                                   resolution=int(cfg.data.get("embedded", {}).get("resolution", 64)),
                                   policy_seed=(int(pe.first_seed) + k) * 1000 + pi)
          runs.append({"policy": p, "frames": r["frames"], "actions": r["actions"], "success": r["success"]})
          bar.update(1)
  finally:
    simulator.close_env(env)
  verifier = SuccessVerifier(cfg, int(pe.verifier_size))
  frames = np.stack([video_ops.to_unit_range(video_ops.spatial_transform(r["frames"], res, "crop")) for r in runs])
  actions = np.stack([r["actions"] for r in runs]).astype(np.float32)
  z = session.encode(pixels.to_uint8(frames[:, :1]))
  outs = []
  n = len(runs)
  with tqdm(total=n, desc=f"(c') policies inside the world model ({h} frames)", disable=not cfg.demo.progress) as bar:
    lat = session.latent_rollout(z, actions, guidance_scale=session.guidance_scale,
                                 seed=int(cfg.demo.seed) + 99, horizon=h)
    outs = (session.decode(lat[:, -1:], as_uint8=False)[:, 0] + 1.0) / 2.0
    bar.update(n)
  real_last = (frames[:, -1] + 1.0) / 2.0
  wm_success = verifier.predict(outs)
  real_verified = verifier.predict(real_last)
  real_flag = np.array([r["success"] for r in runs])
  pols = list(pe.policies)
  rate = lambda arr, p: float(np.mean([arr[i] for i in range(n) if runs[i]["policy"] == p]))
  real_rates = {p: rate(real_flag, p) for p in pols}
  wm_rates = {p: rate(wm_success, p) for p in pols}
  out = {"policies": pols, "real": real_rates, "world_model": wm_rates,
         "real_verifier": {p: rate(real_verified, p) for p in pols},
         "pearson_r": policy_eval.pearson([wm_rates[p] for p in pols], [real_rates[p] for p in pols]),
         "mmrv": policy_eval.mmrv([wm_rates[p] for p in pols], [real_rates[p] for p in pols]),
         "verifier_accuracy": float(np.mean(real_verified == real_flag)),
         "verifier_train_accuracy": verifier.train_accuracy,
         "episodes_per_policy": int(pe.episodes), "horizon": h,
         "protocol": (f"{int(pe.episodes)} unseen initial states per policy; real: Meta-World success flag after "
                      f"{h} actions; world model: the real episode's actions replayed open-loop from the same first "
                      f"frame for {h} frames (sliding window {session.window}), success = frame verifier on the "
                      f"last imagined frame.")}
  side = np.stack([np.concatenate([real_last[i], outs[i]], axis=1) for i in range(n)])
  out["_last_frames"] = side
  return out


