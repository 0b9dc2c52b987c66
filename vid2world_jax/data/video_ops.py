"""Frame operations of the clip pipeline: resize / centre-crop / pad, scaling to [-1, 1], clip augmentation.

Pure numpy (plus Pillow for the per-frame resampling kernel). All functions take and return channels-last
video arrays `[T, H, W, 3]`; no function keeps state, randomness comes from the `np.random.Generator` passed in.
"""

from __future__ import annotations

import math

import numpy as np

from vid2world_jax import pixels
from PIL import Image

RESIZE_MODES = ("crop", "pad", "csgo", "none")


def _check_video(frames: np.ndarray, name: str = "frames") -> None:
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"{name} must be [T, H, W, 3], got shape {frames.shape}")


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear (antialiased when shrinking) resize of uint8 `[T, H, W, 3]` to `[T, height, width, 3]` uint8."""
  _check_video(frames)
  if frames.dtype != np.uint8:
    raise ValueError(f"resize_frames expects uint8 frames, got {frames.dtype}")
  if frames.shape[1:3] == (height, width):
    return frames
  out = np.empty((frames.shape[0], height, width, 3), np.uint8)
  for i, f in enumerate(frames):
    out[i] = np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR))
  return out


def center_crop_or_pad(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Centre-crop each spatial axis that is too large and zero-pad (black) each one that is too small.

  Matches torchvision's CenterCrop on a too-small image: padding is split with the extra row/column at the
  bottom/right (top = (H_out - H) // 2), cropping starts at round((H - H_out) / 2) like torchvision.
  """
  _check_video(frames)
  t, h, w, c = frames.shape
  out = np.zeros((t, height, width, c), frames.dtype)

  def spans(src, dst):
    if src >= dst:  # crop
      start = int(round((src - dst) / 2.0))
      return slice(start, start + dst), slice(0, dst)
    off = (dst - src) // 2  # pad
    return slice(0, src), slice(off, off + src)

  sy, dy = spans(h, height)
  sx, dx = spans(w, width)
  out[:, dy, dx] = frames[:, sy, sx]
  return out


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Resize so the frame COVERS (height, width) keeping aspect ratio, then centre-crop (RT-1 / generic default).

  RT-1 256x320 -> 320x512: scale 1.6 -> 410x512 -> crop 45 rows top / 45 bottom.
  """
  _check_video(frames)
  h, w = frames.shape[1:3]
  s = max(height / h, width / w)
  nh, nw = max(height, int(round(h * s))), max(width, int(round(w * s)))
  return center_crop_or_pad(resize_frames(frames, nh, nw), height, width)


def resize_pad(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Resize so the frame FITS inside (height, width) keeping aspect ratio, then zero-pad (letterbox)."""
  _check_video(frames)
  h, w = frames.shape[1:3]
  s = min(height / h, width / w)
  nh, nw = min(height, int(round(h * s))), min(width, int(round(w * s)))
  return center_crop_or_pad(resize_frames(frames, nh, nw), height, width)


def resize_csgo(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Vid2World's CS:GO rule: resize to (ceil(H * width / W), width), then centre crop (= zero-pad) to (height, width).

  150x280 -> 275x512 -> 320x512 with 22 black rows on top and 23 at the bottom (spec §7.2).
  """
  _check_video(frames)
  h, w = frames.shape[1:3]
  nh = int(math.ceil(h * width / w - 1e-9))
  return center_crop_or_pad(resize_frames(frames, nh, width), height, width)


def spatial_transform(frames: np.ndarray, resolution, mode: str) -> np.ndarray:
  """Dispatch on `mode` in RESIZE_MODES; returns uint8 [T, H, W, 3] at `resolution` (H, W)."""
  height, width = int(resolution[0]), int(resolution[1])
  if mode == "crop":
    return resize_center_crop(frames, height, width)
  if mode == "pad":
    return resize_pad(frames, height, width)
  if mode == "csgo":
    return resize_csgo(frames, height, width)
  if mode == "none":
    if frames.shape[1:3] != (height, width):
      raise ValueError(f"resize_mode 'none' but frames are {frames.shape[1:3]}, config resolution {(height, width)}")
    return frames
  raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")


def to_unit_range(frames: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1] (x / 127.5 - 1)."""
  if frames.dtype != np.uint8:
    raise ValueError(f"to_unit_range expects uint8, got {frames.dtype}")
  return pixels.from_uint8(frames)


# ----------------------------------------------------------------------------------------------- augmentation
# Spec §3.3 (`augment_data`): reflect-pad 2 px + random crop back to the original size, colour jitter with
# brightness/contrast/saturation factors in [0.9, 1.1] and hue shift in [-0.05, 0.05] (fraction of a turn).
# One set of parameters per clip, applied identically to every frame.

_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_GRAY = np.array([0.299, 0.587, 0.114], np.float32)


def sample_augment_params(rng: np.random.Generator, *, pad: int = 2, jitter: float = 0.1, hue: float = 0.05) -> dict:
  """One clip's augmentation parameters (crop offset, brightness, contrast, saturation, hue, jitter order)."""
  return {
      "dy": int(rng.integers(0, 2 * pad + 1)),
      "dx": int(rng.integers(0, 2 * pad + 1)),
      "pad": pad,
      "brightness": float(rng.uniform(1 - jitter, 1 + jitter)),
      "contrast": float(rng.uniform(1 - jitter, 1 + jitter)),
      "saturation": float(rng.uniform(1 - jitter, 1 + jitter)),
      "hue": float(rng.uniform(-hue, hue)),
      "order": [int(i) for i in rng.permutation(4)],  # torchvision ColorJitter applies the 4 ops in random order
  }


def augment_clip(frames: np.ndarray, params: dict) -> np.ndarray:
  """Apply one clip's augmentation to float32 frames in [-1, 1]; returns float32 in [-1, 1], same shape.

  Hue is rotated in YIQ space by `hue * 2 pi` (a linear approximation of torchvision's HSV hue shift).
  """
  _check_video(frames)
  t, h, w, _ = frames.shape
  p = params["pad"]
  x = (frames.astype(np.float32) + 1.0) * 0.5  # [0, 1]
  if p > 0:
    x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    x = x[:, params["dy"]:params["dy"] + h, params["dx"]:params["dx"] + w]
  for op in params["order"]:
    if op == 0:
      x = np.clip(x * params["brightness"], 0.0, 1.0)
    elif op == 1:
      mean = (x @ _GRAY).mean(axis=(1, 2), keepdims=True)[..., None]  # per-frame mean grey level
      x = np.clip((x - mean) * params["contrast"] + mean, 0.0, 1.0)
    elif op == 2:
      gray = (x @ _GRAY)[..., None]
      x = np.clip((x - gray) * params["saturation"] + gray, 0.0, 1.0)
    else:
      ang = params["hue"] * 2.0 * np.pi
      c, s = np.cos(ang), np.sin(ang)
      rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
      m = (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).T
      x = np.clip(x @ m, 0.0, 1.0)
  return (x * 2.0 - 1.0).astype(np.float32)
