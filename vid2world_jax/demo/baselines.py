"""Trivial video-prediction baselines (pure numpy)."""

from __future__ import annotations

import numpy as np


def copy_last_frame(frames: np.ndarray, context_frames: int = 1) -> np.ndarray:
  """Copy-last-frame prediction: every frame after the ``context_frames`` given ones is the last given frame.

  Args:
    frames: ``[B, T, H, W, C]`` ground-truth clip (only the first ``context_frames`` frames are read).
    context_frames: number of given frames k >= 1.
  Returns:
    ``[B, T, H, W, C]``: frames ``< k`` are the given frames, frames ``>= k`` repeat frame ``k - 1``.
  """
  frames = np.asarray(frames)
  if frames.ndim != 5:
    raise ValueError(f"frames must be [B, T, H, W, C], got shape {frames.shape}")
  k = int(context_frames)
  if not 1 <= k <= frames.shape[1]:
    raise ValueError(f"context_frames must be in [1, T={frames.shape[1]}], got {k}")
  out = frames.copy()
  out[:, k:] = frames[:, k - 1:k]
  return out
