"""The one model function shared by the trainer and the rollout.

``denoise(model, x_t, t, cond, actions=None, action_mask=None)`` builds the DynamiCrafter hybrid input
(noisy latent concatenated on channels with the first-frame latent repeated over T) and calls the UNet.
"""

from __future__ import annotations

import jax.numpy as jnp

from vid2world_jax.models.unet import UNet


def denoise(model: UNet, x_t, t, cond: dict, actions=None, action_mask=None):
  """UNet prediction for noisy latents.

  Args:
    model: a :class:`vid2world_jax.models.unet.UNet` (``in_channels == 2 * latent channels``).
    x_t: ``[B, T, H, W, C]`` noisy latents (C = 4).
    t: ``[B]`` (one step per clip) or ``[B, T]`` (per-frame steps), int.
    cond: ``{"concat": [B, H, W, C] first-frame latent, "context": [B, L, D] cross-attention tokens,
      "fs": [B] int or None (None -> the model's ``default_fs``)}``.
    actions: ``[B, T, A]`` already aligned (``actions[:, k]`` conditions frame k) or None.
    action_mask: ``[B, T]`` (1 keep / 0 drop) or None (keep all).
  Returns:
    ``[B, T, H, W, out_channels]`` float32.
  """
  x_t = jnp.asarray(x_t)
  if x_t.ndim != 5:
    raise ValueError(f"x_t must be [B, T, H, W, C], got shape {x_t.shape}")
  b, nt, h, w, c = x_t.shape
  if not isinstance(cond, dict):
    raise ValueError(f"cond must be a dict with 'concat', 'context' and 'fs', got {type(cond).__name__}")
  missing = {"concat", "context"} - set(cond)
  if missing:
    raise ValueError(f"cond lacks {sorted(missing)}")
  unknown = set(cond) - {"concat", "context", "fs"}
  if unknown:
    raise ValueError(f"cond has unknown entries {sorted(unknown)}")
  concat = jnp.asarray(cond["concat"])
  if concat.ndim != 4 or concat.shape[0] != b or concat.shape[1:3] != (h, w):
    raise ValueError(f"cond['concat'] must be [B, H, W, C']=[{b}, {h}, {w}, C'], got {concat.shape}")
  in_ch = model.cfg["in_channels"]
  if c + concat.shape[-1] != in_ch:
    raise ValueError(f"x_t channels {c} + concat channels {concat.shape[-1]} != UNet in_channels {in_ch}")
  context = jnp.asarray(cond["context"])
  if context.ndim != 3 or context.shape[0] != b:
    raise ValueError(f"cond['context'] must be [B={b}, L, D], got {context.shape}")
  t = jnp.asarray(t)
  if t.shape not in ((b,), (b, nt)):
    raise ValueError(f"t must be [B]=({b},) or [B, T]=({b}, {nt}), got {t.shape}")
  fs = cond.get("fs")
  if fs is not None:
    fs = jnp.asarray(fs)
    if fs.shape != (b,):
      raise ValueError(f"cond['fs'] must be [B]=({b},) or None, got {fs.shape}")
  rep = jnp.broadcast_to(concat[:, None].astype(x_t.dtype), (b, nt, h, w, concat.shape[-1]))
  x = jnp.concatenate([x_t, rep], axis=-1)
  return model(x, t, context, fs=fs, actions=actions, action_mask=action_mask)
