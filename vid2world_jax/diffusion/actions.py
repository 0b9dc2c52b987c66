"""Action alignment and per-frame action dropout (spec §4).

* ``align_actions``: right shift by one frame, ``a'_0 = 0, a'_f = a_{f-1}`` so frame f is conditioned on the
  action taken at frame f-1; the last action of the clip is dropped (unused).
* ``sample_action_mask``: training dropout mask ``m[b, f] = 1[u_{b,f} >= drop_prob]`` (1 keep, 0 drop),
  independent per (sample, frame). The UNet multiplies the action *embedding* by this mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def align_actions(actions: jax.Array) -> jax.Array:
  """``[B, T, A] -> [B, T, A]`` shifted right by one frame along T, zero action at frame 0."""
  if actions.ndim != 3:
    raise ValueError(f"actions must be [B, T, A], got shape {actions.shape}")
  zeros = jnp.zeros_like(actions[:, :1])
  return jnp.concatenate([zeros, actions[:, :-1]], axis=1)


def sample_action_mask(rng: jax.Array, batch: int, frames: int, drop_prob: float) -> jax.Array:
  """``[B, T]`` float32 mask, 1 = keep, 0 = drop, iid per (sample, frame) with P(drop) = ``drop_prob``.

  ``drop_prob`` must be in [0, 1) (0 gives all ones, i.e. the "no action guidance" training).
  """
  drop_prob = float(drop_prob)
  if not 0.0 <= drop_prob < 1.0:
    raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
  if batch < 1 or frames < 1:
    raise ValueError(f"batch and frames must be >= 1, got {batch}, {frames}")
  u = jax.random.uniform(rng, (batch, frames), dtype=jnp.float32)
  return (u >= drop_prob).astype(jnp.float32)
