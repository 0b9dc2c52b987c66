"""CLIP image preprocessing exactly as DynamiCrafter's ``FrozenOpenCLIPImageEmbedderV2.preprocess``.

Pipeline (input ``[B, H, W, C]`` float in [-1, 1], channels-last):

1. ``kornia.geometry.resize(x, (224, 224), interpolation='bicubic', align_corners=True, antialias=True)``
   (kornia 0.9.0), reproduced by :func:`kornia_resize`:

   * nothing at all if ``(H, W)`` already equals the target size;
   * antialias only if some axis shrinks (``max(H/h, W/w) > 1``): separable Gaussian blur, per axis
     ``sigma = max((factor - 1) / 2, 0.001)``, kernel size ``int(max(4 * sigma, 3))`` bumped to the next odd
     number, taps ``exp(-x^2 / (2 sigma^2))`` normalised to sum 1, ``reflect`` border padding; an axis that is
     enlarged still gets the (numerically delta) sigma-0.001 kernel. Width is blurred first, then height.
   * ``torch.nn.functional.interpolate(mode='bicubic', align_corners=True)``: source coordinate
     ``i * (in - 1) / (out - 1)``, cubic convolution with ``A = -0.75`` on the 4 neighbours
     ``floor(src) - 1 .. floor(src) + 2``, indices clamped to the border, no clamping of the values.

   Both steps are linear and separable, so each is a small ``[out, in]`` matrix per axis (built in numpy
   at trace time with float32 arithmetic like torch/kornia) applied with HIGHEST-precision einsums.
   ``jax.image.resize`` is not used: it has A = -0.5, half-pixel centres and a different antialias.
2. ``x = (x + 1) / 2`` then ``(x - mean) / std`` with OpenAI CLIP's mean/std (:func:`clip_normalize`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CUBIC_A = -0.75  # torch's bicubic coefficient
_HI = jax.lax.Precision.HIGHEST


def antialias_params(in_size: int, out_size: int) -> tuple[float, int]:
  """kornia's ``(sigma, kernel_size)`` for one axis (used when the resize antialiases at all)."""
  factor = in_size / out_size
  sigma = max((factor - 1.0) / 2.0, 0.001)
  ks = int(max(2.0 * 2 * sigma, 3))
  if ks % 2 == 0:
    ks += 1
  return sigma, ks


def gaussian_kernel1d(kernel_size: int, sigma: float) -> np.ndarray:
  """kornia's ``get_gaussian_kernel1d`` in float32: ``[kernel_size]`` taps summing to 1."""
  x = np.arange(kernel_size, dtype=np.float32) - np.float32(kernel_size // 2)
  if kernel_size % 2 == 0:
    x = x + np.float32(0.5)
  s = np.float32(sigma)
  g = np.exp(-(x * x) / (np.float32(2.0) * s * s)).astype(np.float32)
  return (g / g.sum(dtype=np.float32)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def blur_matrix(n: int, kernel_size: int, sigma: float) -> np.ndarray:
  """``[n, n]`` float32 matrix of a 1-D correlation with the Gaussian kernel and ``reflect`` padding."""
  r = kernel_size // 2
  if r >= n:
    raise ValueError(f"reflect padding {r} needs an axis longer than {r}, got {n}")
  k = gaussian_kernel1d(kernel_size, sigma)
  m = np.zeros((n, n), np.float64)
  for i in range(n):
    for t in range(kernel_size):
      j = i + t - r
      if j < 0:
        j = -j
      elif j > n - 1:
        j = 2 * (n - 1) - j
      m[i, j] += k[t]
  return m.astype(np.float32)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
  """torch ``get_cubic_upsample_coefficients`` (float32): ``[..., 4]`` weights of taps -1, 0, 1, 2."""
  a = np.float32(CUBIC_A)
  one = np.float32(1.0)

  def conv1(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + one

  def conv2(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  t = t.astype(np.float32)
  return np.stack([conv2(t + one), conv1(t), conv1(one - t), conv2((one - t) + one)], axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """``[out, in]`` float32 matrix of torch bicubic interpolation with ``align_corners=True``."""
  scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0.0)
  src = np.arange(out_size, dtype=np.float32) * scale
  idx = np.floor(src).astype(np.int64)
  w = _cubic_weights(src - idx.astype(np.float32))
  m = np.zeros((out_size, in_size), np.float64)
  for o in range(out_size):
    for t in range(4):
      j = min(max(idx[o] - 1 + t, 0), in_size - 1)
      m[o, j] += w[o, t]
  return m.astype(np.float32)


def _apply_axes(x: jax.Array, mh: np.ndarray, mw: np.ndarray) -> jax.Array:
  """Applies ``mw`` along W first, then ``mh`` along H, to ``x [B, H, W, C]``."""
  x = jnp.einsum("pw,bhwc->bhpc", jnp.asarray(mw), x, precision=_HI)
  return jnp.einsum("oh,bhwc->bowc", jnp.asarray(mh), x, precision=_HI)


def kornia_resize(x: jax.Array, size: tuple[int, int] = (224, 224), antialias: bool = True) -> jax.Array:
  """``kornia.geometry.resize(x, size, 'bicubic', align_corners=True, antialias=antialias)`` channels-last.

  ``x``: ``[B, H, W, C]`` float. Returns ``[B, size[0], size[1], C]`` in ``x``'s dtype (computed in float32).
  The aspect ratio is not kept (no crop).
  """
  if x.ndim != 4:
    raise ValueError(f"kornia_resize expects [B, H, W, C], got shape {x.shape}")
  oh, ow = int(size[0]), int(size[1])
  if oh < 1 or ow < 1:
    raise ValueError(f"target size must be positive, got {size}")
  h, w = x.shape[1], x.shape[2]
  if (h, w) == (oh, ow):
    return x
  dtype = x.dtype
  x = x.astype(jnp.float32)
  if antialias and max(h / oh, w / ow) > 1:
    sh, kh = antialias_params(h, oh)
    sw, kw = antialias_params(w, ow)
    x = _apply_axes(x, blur_matrix(h, kh, sh), blur_matrix(w, kw, sw))
  x = _apply_axes(x, bicubic_matrix(h, oh), bicubic_matrix(w, ow))
  return x.astype(dtype)


def clip_normalize(x: jax.Array, mean=CLIP_MEAN, std=CLIP_STD) -> jax.Array:
  """``((x + 1) / 2 - mean) / std`` per channel; ``x``: ``[..., 3]`` in [-1, 1]."""
  if x.shape[-1] != len(mean):
    raise ValueError(f"clip_normalize expects {len(mean)} channels last, got shape {x.shape}")
  x = (x + 1.0) / 2.0
  return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)


def preprocess(x: jax.Array, size: tuple[int, int] = (224, 224), antialias: bool = True,
               return_resized: bool = False):
  """Full DynamiCrafter CLIP preprocessing. ``x``: ``[B, H, W, 3]`` in [-1, 1] -> ``[B, *size, 3]``.

  With ``return_resized`` returns ``(preprocessed, resized)`` (``resized`` = after the kornia resize only).
  """
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"preprocess expects images [B, H, W, 3], got shape {x.shape}")
  resized = kornia_resize(x, size, antialias)
  out = clip_normalize(resized)
  return (out, resized) if return_resized else out
