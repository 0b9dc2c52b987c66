"""Metrics of a world model's rollouts against the ground truth: per-frame quality, action following, drift.

Pure numpy/JAX functions on arrays (no model, no I/O), shared by the demo, the ablation driver and tests.
Conventions: videos are ``[N, T, H, W, C]`` in [0, 1]; frame 0 is the given context, so "horizon h" is frame h
(h = 1 .. T-1) and per-horizon summaries have ``T - 1`` entries.

* ``frame_metrics`` / ``per_horizon`` / ``per_clip``: PSNR, SSIM, MSE per clip and frame, and their means.
* ``paired_difference``: mean and standard error of per-clip differences (same clips under two conditions).
* ``delta_psnr``: Genie's action-following measure, PSNR under the true actions minus PSNR under other actions
  (here another clip's actions, same context), per horizon with the paired standard error over clips.
* ``position_error``: error of a detected object position (e.g. the controlled paddle) against the ground truth.
* ``frame_statistics``: mean / std of the generated frames vs the ground truth's per horizon (drift, collapse).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _check_videos(pred01, gt01):
  pred01, gt01 = np.asarray(pred01), np.asarray(gt01)
  if pred01.shape != gt01.shape or pred01.ndim != 5:
    raise ValueError(f"pred and gt must be videos [N, T, H, W, C] of one shape, got {pred01.shape} / {gt01.shape}")
  return pred01, gt01


def frame_metrics(pred01: np.ndarray, gt01: np.ndarray) -> dict:
  """Per-clip, per-frame PSNR / SSIM / MSE ``[N, T]`` of videos in [0, 1] (dm-pix, 11x11 Gaussian SSIM)."""
  from vid2world_jax.metrics import image_metrics  # pylint: disable=import-outside-toplevel
  pred01, gt01 = _check_videos(pred01, gt01)
  n, t = pred01.shape[:2]
  p = jnp.asarray(pred01, jnp.float32).reshape((n * t,) + pred01.shape[2:])  # dm-pix wants [N, H, W, C]
  g = jnp.asarray(gt01, jnp.float32).reshape((n * t,) + gt01.shape[2:])
  out = {"psnr": image_metrics.psnr(p, g), "ssim": image_metrics.ssim(p, g),
         "mse": jnp.mean((p - g) ** 2, axis=(-3, -2, -1))}
  return {k: np.asarray(v).reshape(n, t) for k, v in out.items()}


def per_horizon(m: dict) -> dict:
  """``{metric: [T-1]}`` means over clips for horizons 1..T-1 (frame 0 is the given context)."""
  return {k: [float(x) for x in np.mean(np.asarray(v)[:, 1:], axis=0)] for k, v in m.items()}


def per_clip(values: np.ndarray) -> list:
  """``[N, T]`` -> ``[N]`` per-clip means over horizons 1..T-1 (for paired comparisons across clips)."""
  return [float(x) for x in np.mean(np.asarray(values)[:, 1:], axis=1)]


def paired_difference(a, b) -> tuple[float, float, int]:
  """Mean and standard error of the per-clip differences ``a - b`` (same clips), and the clip count."""
  diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if diff.ndim != 1 or diff.size < 2:
    raise ValueError(f"need per-clip values for at least 2 clips, got shape {diff.shape}")
  return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size)), int(diff.size)


def delta_psnr(psnr_true: np.ndarray, psnr_other: np.ndarray) -> dict:
  """Delta-t-PSNR: ``[N, T]`` PSNR under the true actions and under other actions (same clips, same context).

  Returns ``{"per_horizon" [T-1], "se_per_horizon" [T-1], "mean", "se", "n"}``: the mean over clips of the paired
  difference at each horizon with its standard error, and the same for the per-clip average over horizons."""
  a, b = np.asarray(psnr_true, np.float64), np.asarray(psnr_other, np.float64)
  if a.shape != b.shape or a.ndim != 2 or a.shape[1] < 2:
    raise ValueError(f"psnr arrays must both be [N, T >= 2], got {a.shape} / {b.shape}")
  per_h = [paired_difference(a[:, h], b[:, h]) for h in range(1, a.shape[1])]
  mean, se, n = paired_difference(a[:, 1:].mean(1), b[:, 1:].mean(1))
  return {"per_horizon": [x[0] for x in per_h], "se_per_horizon": [x[1] for x in per_h], "mean": mean, "se": se,
          "n": n}


def position_error(pos_pred: np.ndarray, pos_gt: np.ndarray) -> dict:
  """Absolute error of a detected position ``[N, T]`` (e.g. the paddle's column) against the ground truth's.

  Returns ``{"per_horizon" [T-1], "per_clip" [N], "mean"}`` over horizons 1..T-1."""
  p, g = np.asarray(pos_pred, np.float64), np.asarray(pos_gt, np.float64)
  if p.shape != g.shape or p.ndim != 2 or p.shape[1] < 2:
    raise ValueError(f"positions must both be [N, T >= 2], got {p.shape} / {g.shape}")
  err = np.abs(p - g)[:, 1:]
  return {"per_horizon": [float(x) for x in err.mean(0)], "per_clip": [float(x) for x in err.mean(1)],
          "mean": float(err.mean())}


def frame_statistics(pred01: np.ndarray, gt01: np.ndarray) -> dict:
  """Mean and std of all pixels of the generated vs the ground-truth frames at each horizon 1..T-1, and the largest
  relative deviation over horizons (``max_rel_mean_dev``, ``max_rel_std_dev``): a collapsing or saturating
  rollout drifts away from the data's statistics."""
  pred01, gt01 = _check_videos(pred01, gt01)
  ax = (0, 2, 3, 4)
  pm, ps = pred01.mean(ax)[1:], pred01.std(ax)[1:]
  gm, gs = gt01.mean(ax)[1:], gt01.std(ax)[1:]
  return {"pred_mean": [float(x) for x in pm], "gt_mean": [float(x) for x in gm],
          "pred_std": [float(x) for x in ps], "gt_std": [float(x) for x in gs],
          "max_rel_mean_dev": float(np.max(np.abs(pm - gm) / np.maximum(gm, 1e-8))),
          "max_rel_std_dev": float(np.max(np.abs(ps - gs) / np.maximum(gs, 1e-8)))}
