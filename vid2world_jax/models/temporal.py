"""Operations that mix information across frames: 5-D GroupNorm modes and the temporal conv block.

Everything here takes full sequences ``[B, T, H, W, C]`` (channels-last). With a ``cache``
(:class:`~vid2world_jax.models.frame_cache.FrameCache`) the causal variants also run incrementally: a fill
forward records what a new frame reads from the history, a step forward computes the new frame alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vid2world_jax.models import layers
from vid2world_jax.models.frame_cache import FrameCache, child

NORM_MODES = ("joint", "per_frame", "cumulative")
PADDING_MODES = ("symmetric", "causal")


def temporal_group_norm(gn: layers.GroupNorm, x, mode: str, cache: FrameCache | None = None):
  """GroupNorm of a video ``x [B, T, H, W, C]`` with the parameters of ``gn``; statistics per ``mode``.

  * ``"joint"``: torch's ``nn.GroupNorm`` on ``b c t h w`` (statistics over the group, all T, H, W).
  * ``"per_frame"``: statistics over (group, H, W) for each frame separately.
  * ``"cumulative"``: frame t uses the statistics of frames ``0..t`` pooled (a causal running version of
    "joint"; equals "joint" at the last frame). Computed exactly from per-frame means/variances.
  ``cache`` (cumulative: the pooled statistics of the history frames; per_frame: unused; joint: refused).
  Returns the input dtype; statistics in float32.
  """
  if x.ndim != 5:
    raise ValueError(f"temporal_group_norm expects [B, T, H, W, C], got shape {x.shape}")
  if mode == "joint":
    if cache is not None:
      raise ValueError("temporal_norm 'joint' pools statistics over future frames: it cannot run cached")
    return gn(x)
  b, t = x.shape[:2]
  if mode == "per_frame":
    return gn(x.reshape((b * t,) + x.shape[2:])).reshape(x.shape)
  if mode != "cumulative":
    raise ValueError(f"temporal_norm must be one of {NORM_MODES}, got {mode!r}")
  g, c = gn.num_groups, x.shape[-1]
  xf = x.astype(jnp.float32).reshape(b, t, -1, g, c // g)
  m_f = xf.mean(axis=(2, 4))                                             # [B, T, G] per-frame mean
  v_f = jnp.square(xf - m_f[:, :, None, :, None]).mean(axis=(2, 4))     # [B, T, G] per-frame variance
  if cache is not None and not cache.is_fill:
    mean, var = _pooled_with_history(cache, m_f, v_f)
  else:
    if cache is not None:
      _record_history_stats(cache, m_f, v_f)
    mean, var = _pooled_causal(m_f, v_f)
  y = layers.normalize(xf, mean[:, :, None, :, None], var[:, :, None, :, None], gn.eps, gn.scale[...], gn.bias[...])
  return y.reshape(x.shape).astype(x.dtype)


def _pooled_causal(m_f, v_f):
  """Mean / variance of frames ``0..t`` for every t from per-frame ``m_f, v_f [B, T, G]``."""
  t = m_f.shape[1]
  hi = jax.lax.Precision.HIGHEST
  tri = jnp.tril(jnp.ones((t, t), jnp.float32))                          # [t, f]: f <= t
  cnt = jnp.arange(1, t + 1, dtype=jnp.float32)[:, None]                 # frames pooled at t
  mean = jnp.einsum("tf,bfg->btg", tri, m_f, precision=hi) / cnt
  d = m_f[:, None, :, :] - mean[:, :, None, :]                           # [B, t, f, G]
  var = (jnp.einsum("tf,bfg->btg", tri, v_f, precision=hi)
         + jnp.einsum("tf,btfg->btg", tri, d * d, precision=hi)) / cnt  # law of total variance
  return mean, var


def _record_history_stats(cache: FrameCache, m_f, v_f):
  """Fill: pools the per-frame statistics ``[B, Th, G]`` of the history frames ``< index`` once, as their mean of
  means and sum of (within + between) variances ``[B, 1, G]``, so each step only merges in the new frame."""
  valid = cache.valid_history(m_f.shape[1])[None, :, None]
  n = cache.index.astype(jnp.float32)
  mean_h = jnp.sum(jnp.where(valid, m_f, 0.0), axis=1, keepdims=True) / jnp.maximum(n, 1.0)
  m2_h = jnp.sum(jnp.where(valid, v_f + jnp.square(m_f - mean_h), 0.0), axis=1, keepdims=True)
  cache.write("history_stats", (mean_h, m2_h))


def _pooled_with_history(cache: FrameCache, m_p, v_p):
  """Step: mean / variance of the history frames ``< index`` and the new frame (``m_p, v_p [B, 1, G]``), merged
  exactly (law of total variance, pairwise form)."""
  mean_h, m2_h = cache.read("history_stats")                            # [B, 1, G]
  n = cache.index.astype(jnp.float32)
  mean = (n * mean_h + m_p) / (n + 1.0)
  var = (m2_h + n * jnp.square(mean_h - mean) + v_p + jnp.square(m_p - mean)) / (n + 1.0)
  return mean, var


class TemporalConvBlock(nnx.Module):
  """DynamiCrafter ``TemporalConvBlock`` (torch attribute ``temopral_conv``): ``x + conv4(conv3(conv2(conv1(x))))``.

  ``conv1 = Seq(GN, SiLU, Conv3d)`` (conv at index 2), ``conv2..4 = Seq(GN, SiLU, Dropout, Conv3d)`` (index 3);
  Conv3d kernel ``(3, 1, 1)``, GroupNorm(32, eps 1e-5). ``padding``: "symmetric" (1 frame each side, original)
  or "causal" (2 frames on the left, 0 on the right). ``norm``: see :func:`temporal_group_norm`.
  """

  def __init__(self, in_dim: int, out_dim: int, *, dropout: float = 0.1, padding: str = "symmetric",
               norm: str = "joint", dtype=jnp.float32, rngs: nnx.Rngs):
    if padding not in PADDING_MODES:
      raise ValueError(f"temporal_conv_padding must be one of {PADDING_MODES}, got {padding!r}")
    if norm not in NORM_MODES:
      raise ValueError(f"temporal_norm must be one of {NORM_MODES}, got {norm!r}")
    self.padding = padding
    self.norm = norm
    conv = lambda i, o: nnx.Conv(i, o, kernel_size=(3, 1, 1), padding="VALID", dtype=dtype,
                                 param_dtype=jnp.float32, rngs=rngs)
    self.conv1 = layers.Seq([layers.GroupNorm(in_dim, 32, 1e-5, rngs=rngs), layers.SiLU(), conv(in_dim, out_dim)])
    self.conv2 = layers.Seq([layers.GroupNorm(out_dim, 32, 1e-5, rngs=rngs), layers.SiLU(),
                             layers.Dropout(dropout, rngs=rngs), conv(out_dim, in_dim)])
    self.conv3 = layers.Seq([layers.GroupNorm(out_dim, 32, 1e-5, rngs=rngs), layers.SiLU(),
                             layers.Dropout(dropout, rngs=rngs), conv(out_dim, in_dim)])
    self.conv4 = layers.Seq([layers.GroupNorm(out_dim, 32, 1e-5, rngs=rngs), layers.SiLU(),
                             layers.Dropout(dropout, rngs=rngs), conv(out_dim, in_dim)])

  def cache_blockers(self) -> list[str]:
    """Why this block cannot run with a frame cache (empty: it can)."""
    out = [] if self.padding == "causal" else [f"temporal conv padding {self.padding!r}"]
    return out + (["temporal_norm 'joint' pools GroupNorm statistics over time"] if self.norm == "joint" else [])

  def temporal_conv(self, conv: nnx.Conv, x, cache: FrameCache | None = None):
    """Kernel-3 conv over frames of ``x [B, T, H, W, C]`` with zero padding per ``self.padding``.

    ``cache`` (causal padding only): fill records the history's part of the new frame's output, ``conv`` of frames
    ``index-2, index-1`` (zeros before frame 0) and a zero frame (bias included); step adds the new frame's part,
    a matmul with the last kernel tap (a third of the conv, no copy of cached inputs)."""
    if cache is not None and self.padding != "causal":
      raise ValueError(f"temporal conv padding {self.padding!r} sees future frames: it cannot run cached")
    if cache is not None and not cache.is_fill:
      last_tap = conv.kernel[...][2, 0, 0].astype(x.dtype)              # [C_in, C_out]
      return cache.read("history_part").astype(x.dtype) + jnp.einsum("bthwc,co->bthwo", x, last_tap)
    pad = (1, 1) if self.padding == "symmetric" else (2, 0)
    x = jnp.pad(x, ((0, 0), pad, (0, 0), (0, 0), (0, 0)))
    if cache is not None:
      prev = jax.lax.dynamic_slice_in_dim(x, cache.index, 2, axis=1)    # frames index-2, index-1
      cache.write("history_part", conv(jnp.concatenate([prev, jnp.zeros_like(prev[:, :1])], axis=1)))
    return conv(x)

  def _stage(self, seq: layers.Seq, x, cache: FrameCache | None):
    gn, *pointwise, conv = list(seq)
    h = temporal_group_norm(gn, x, self.norm, child(cache, "norm"))
    for layer in pointwise:  # SiLU [, Dropout]
      h = layer(h)
    return self.temporal_conv(conv, h, cache)

  def __call__(self, x, cache: FrameCache | None = None):
    """``x [B, T, H, W, C]`` -> same shape. ``cache``: see :mod:`~vid2world_jax.models.frame_cache`."""
    h = x
    for k, seq in enumerate((self.conv1, self.conv2, self.conv3, self.conv4), start=1):
      h = self._stage(seq, h, child(cache, f"conv{k}"))
    return x + h
