"""PSNR and SSIM with the reference settings (dm-pix; SSIM: 11x11 Gaussian window, sigma 1.5, k1=0.01, k2=0.03).

Images are channels-last floats in ``[0, 1]``: ``[..., H, W, C]``. SSIM follows the usual "valid" convention
(the mean of the SSIM map over positions where the whole 11x11 window fits), which is what skimage's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`` returns
(it crops the border before averaging), averaged over channels.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

SSIM_FILTER_SIZE = 11     # Gaussian window size (reference: 11x11)
SSIM_FILTER_SIGMA = 1.5   # Gaussian sigma (reference: 1.5)
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(a, b, name):
  if a.shape != b.shape:
    raise ValueError(f"{name}: prediction shape {a.shape} != ground-truth shape {b.shape}")
  if a.ndim < 3:
    raise ValueError(f"{name}: want [..., H, W, C] images, got shape {a.shape}")


@jax.jit
def psnr(pred: jax.Array, gt: jax.Array) -> jax.Array:
  """Per-image PSNR (dB) for ``[..., H, W, C]`` images in ``[0, 1]`` (max value 1). Returns ``[...]``."""
  _check_pair(pred, gt, "psnr")
  return pix.psnr(pred.astype(jnp.float32), gt.astype(jnp.float32))


@jax.jit
def ssim(pred: jax.Array, gt: jax.Array) -> jax.Array:
  """Per-image SSIM for ``[..., H, W, C]`` images in ``[0, 1]``; 11x11 Gaussian window, sigma 1.5. Returns ``[...]``."""
  _check_pair(pred, gt, "ssim")
  if min(pred.shape[-3:-1]) < SSIM_FILTER_SIZE:
    raise ValueError(f"ssim: images {pred.shape[-3:-1]} smaller than the {SSIM_FILTER_SIZE}x{SSIM_FILTER_SIZE} window")
  return pix.ssim(pred.astype(jnp.float32), gt.astype(jnp.float32), max_val=1.0,
                  filter_size=SSIM_FILTER_SIZE, filter_sigma=SSIM_FILTER_SIGMA, k1=SSIM_K1, k2=SSIM_K2)


def to_unit_float(videos_uint8) -> np.ndarray:
  """uint8 ``[..., H, W, C]`` -> float32 in ``[0, 1]``."""
  v = np.asarray(videos_uint8)
  if v.dtype != np.uint8:
    raise ValueError(f"expected uint8 frames, got {v.dtype}")
  return v.astype(np.float32) / 255.0
