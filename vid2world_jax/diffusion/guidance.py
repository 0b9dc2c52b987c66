"""Causal action guidance (spec §5).

Two passes per DDIM step share every input except the action mask: the conditional pass keeps all actions, the
"unconditional" pass drops only the action of the newest frame. Outputs are combined in the model's output space
(v for the 512 model) as ``uncond + scale * (cond - uncond)`` (the code's convention: scale 2.5 <=> paper's
lambda = 1.5), followed by the optional CFG rescale of Lin et al.:
``resc = guided * std(cond) / std(guided)`` (std over all non-batch dims, unbiased like torch ``.std``),
``out = rescale * resc + (1 - rescale) * guided``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _std_nonbatch(x: jax.Array, w: jax.Array | None = None) -> jax.Array:
  """Unbiased std over all non-batch dims (like torch ``.std``), over the entries where ``w`` is 1 (None: all)."""
  axes = tuple(range(1, x.ndim))
  if w is None:
    return jnp.std(x, axis=axes, keepdims=True, ddof=1)
  n = jnp.sum(w, axis=axes, keepdims=True)
  mu = jnp.sum(x * w, axis=axes, keepdims=True) / n
  return jnp.sqrt(jnp.sum(((x - mu) * w) ** 2, axis=axes, keepdims=True) / (n - 1))


def cfg_rescale(guided: jax.Array, cond: jax.Array, rescale, w: jax.Array | None = None) -> jax.Array:
  """``rescale * guided * std(cond)/std(guided) + (1 - rescale) * guided`` per batch element (std over the
  entries where ``w`` is 1; None = all)."""
  resc = guided * (_std_nonbatch(cond, w) / _std_nonbatch(guided, w))
  return rescale * resc + (1.0 - rescale) * guided


def causal_action_guidance(cond: jax.Array, uncond: jax.Array, scale, rescale=0.0,
                           valid: jax.Array | None = None) -> jax.Array:
  """Guided output ``uncond + scale * (cond - uncond)`` (then CFG rescale if ``rescale > 0``): the one guidance
  combination of the project (AR rollout, step-by-step generation and NAR sampling all call it).

  ``cond``/``uncond``: outputs of the two passes, same shape ``[B, ...]`` (e.g. ``[B, T, H, W, C]``: the std of the
  rescale is then taken over all frames, as the released sampler does, or ``[B, H, W, C]`` for the newest frame).
  ``valid``: optional bool ``[T]`` (axis 1): frames that exist (a zero-padded rollout window); padded frames are
  excluded from the rescale statistics (and returned as computed: they are never used). ``scale`` may be a traced
  value. ``scale == 1`` returns ``cond``; ``scale == 0`` returns ``uncond`` (both exactly, when ``rescale == 0``).
  """
  if cond.shape != uncond.shape:
    raise ValueError(f"cond {cond.shape} and uncond {uncond.shape} must have the same shape")
  if not isinstance(rescale, jax.Array) and not 0.0 <= float(rescale) <= 1.0:
    raise ValueError(f"rescale must be in [0, 1], got {rescale}")
  # == uncond + scale * (cond - uncond), written so that scale 1 / 0 give cond / uncond bit-exactly.
  guided = scale * cond + (1.0 - scale) * uncond
  if isinstance(rescale, jax.Array) or rescale > 0.0:
    w = None
    if valid is not None:
      w = jnp.broadcast_to(valid.astype(cond.dtype).reshape((1, -1) + (1,) * (cond.ndim - 2)), cond.shape)
    guided = cfg_rescale(guided, cond, rescale, w)
  return guided


def guidance_masks(action_mask: jax.Array, frame_index: int | jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(cond_mask, uncond_mask)`` both ``[B, T]``: cond = ``action_mask``; uncond = the same with frame
  ``frame_index`` (default: the last frame, T - 1) set to 0, i.e. the newest frame's action dropped."""
  if action_mask.ndim != 2:
    raise ValueError(f"action_mask must be [B, T], got shape {action_mask.shape}")
  T = action_mask.shape[1]
  if frame_index is None:
    frame_index = T - 1
  if isinstance(frame_index, int) and not -T <= frame_index < T:
    raise ValueError(f"frame_index {frame_index} out of range for T={T}")
  idx = jnp.asarray(frame_index) % T
  newest = (jnp.arange(T) == idx)[None, :]
  uncond = jnp.where(newest, jnp.zeros_like(action_mask), action_mask)
  return action_mask, uncond


def stack_branches(cond: Any, uncond: Any) -> Any:
  """Concatenates the two passes' inputs (pytrees of arrays with a leading batch dim) into one batch
  ``[2B, ...]``: rows ``[:B]`` conditional, ``[B:]`` unconditional."""
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), cond, uncond)


def split_branches(out: Any) -> tuple[Any, Any]:
  """Inverse of ``stack_branches`` on the model output: ``[2B, ...] -> ([B, ...] cond, [B, ...] uncond)``."""
  def _half(a, i):
    if a.shape[0] % 2:
      raise ValueError(f"leading dim {a.shape[0]} is not even")
    n = a.shape[0] // 2
    return a[:n] if i == 0 else a[n:]
  return jax.tree.map(lambda a: _half(a, 0), out), jax.tree.map(lambda a: _half(a, 1), out)
