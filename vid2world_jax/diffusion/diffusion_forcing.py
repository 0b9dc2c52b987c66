"""Diffusion-Forcing-style training objective (spec §3.1).

Every (sample, frame) gets its own noise level ``t ~ U{0..N-1}`` (or ``sample_history_timesteps``: some samples
with a lightly noised history before a split frame); the clean latent is rescaled by
``scale_arr[t]`` per frame when the schedule uses dynamic rescale; ``x_t = q_sample(x0, t, eps)``; the target
is eps or v per the schedule's parameterisation; the loss is the MSE averaged over (H, W, C) -> ``[B, T]``,
optionally weighted per frame (e.g. to exclude padded frames), then averaged.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from vid2world_jax.diffusion.parameterization import q_sample, rescale_x0, training_target
from vid2world_jax.diffusion.schedules import Schedule

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t [B,T,H,W,C], t [B,T] int32) -> [B,T,H,W,C]

NUM_LOSS_BUCKETS = 10  # loss-per-noise-level logging: buckets of width N/10 over [0, N)


def sample_frame_timesteps(rng: jax.Array, batch: int, frames: int, num_timesteps: int = 1000) -> jax.Array:
  """``[B, T]`` int32, iid uniform over ``{0, ..., num_timesteps - 1}`` for every (sample, frame)."""
  if batch < 1 or frames < 1 or num_timesteps < 1:
    raise ValueError(f"bad sizes batch={batch} frames={frames} num_timesteps={num_timesteps}")
  return jax.random.randint(rng, (batch, frames), 0, num_timesteps, dtype=jnp.int32)


def sample_history_timesteps(rng: jax.Array, batch: int, frames: int, num_timesteps: int = 1000, *,
                             prob: float = 0.5, max_history_level: int = 200) -> jax.Array:
  """``[B, T]`` int32 noise levels that train the autoregressive case more often than iid levels do.

  With probability ``prob`` a sample is an "autoregressive" one: a split frame ``k ~ U{1..T-1}``; frames before it
  are history, noised only lightly (``U{0..max_history_level}``: noise augmentation of the context, with the level
  given to the model, as GameNGen and DIAMOND do; a rollout gives history at a small level,
  ``config.sampler.history_noise``), frames from ``k`` on get iid levels over the whole schedule. Other samples
  get iid levels for every frame (``sample_frame_timesteps``). With iid levels alone, a frame whose whole history is nearly clean (what every
  rollout step asks for) is rare: P(all k earlier frames below level 200) = 0.2^k."""
  if not 0.0 <= prob <= 1.0 or not 0 <= max_history_level < num_timesteps or frames < 2:
    raise ValueError(f"need prob in [0, 1], 0 <= max_history_level < {num_timesteps} and frames >= 2, got "
                     f"{prob}, {max_history_level}, {frames}")
  k_iid, k_hist, k_split, k_use = jax.random.split(rng, 4)
  iid = sample_frame_timesteps(k_iid, batch, frames, num_timesteps)
  hist = jax.random.randint(k_hist, (batch, frames), 0, max_history_level + 1, dtype=jnp.int32)
  split = jax.random.randint(k_split, (batch, 1), 1, frames, dtype=jnp.int32)
  use = jax.random.uniform(k_use, (batch, 1)) < prob
  is_history = use & (jnp.arange(frames)[None, :] < split)
  return jnp.where(is_history, hist, iid)


def bucket_losses(per_frame: jax.Array, t: jax.Array, weights: jax.Array, num_timesteps: int,
                  num_buckets: int = NUM_LOSS_BUCKETS) -> tuple[jax.Array, jax.Array]:
  """Per-noise-level-bucket sums of weighted frame losses and weight counts, both ``[num_buckets]`` float32.

  Bucket k holds t in ``[k N / K, (k+1) N / K)``. Averages across steps: ``sum(sums) / sum(counts)``.
  """
  idx = jnp.clip((t.astype(jnp.int32) * num_buckets) // num_timesteps, 0, num_buckets - 1)
  onehot = jax.nn.one_hot(idx, num_buckets, dtype=jnp.float32)  # [B, T, K]
  w = weights.astype(jnp.float32)[..., None]
  sums = jnp.sum(onehot * w * per_frame.astype(jnp.float32)[..., None], axis=(0, 1))
  counts = jnp.sum(onehot * w, axis=(0, 1))
  return sums, counts


def diffusion_forcing_loss(denoise_fn: DenoiseFn,
                           schedule: Schedule,
                           x0: jax.Array,
                           rng: jax.Array,
                           *,
                           frame_weights: Optional[jax.Array] = None,
                           t: Optional[jax.Array] = None,
                           noise: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
  """Per-frame-noise diffusion loss.

  Args:
    denoise_fn: ``(x_t [B,T,H,W,C], t [B,T] int32) -> prediction [B,T,H,W,C]`` in the schedule's
      parameterisation (closure adding conditioning / actions).
    schedule: noise schedule (its ``parameterization`` picks the target; ``scale_arr`` enables rescale).
    x0: clean latents ``[B, T, H, W, C]``.
    rng: PRNG key (split into timestep and noise keys).
    frame_weights: optional ``[B, T]`` weights / mask (0 excludes a frame). The loss is
      ``sum(w * l) / max(sum(w), tiny)``; without weights it is ``mean(l)``.
    t, noise: optional overrides (tests / reproducibility): ``[B, T]`` int, ``[B, T, H, W, C]``.

  Returns:
    ``(loss, aux)``: scalar float32; aux = {"frame_loss" [B,T], "t" [B,T] int32, "bucket_loss_sum" [K],
    "bucket_count" [K]}.
  """
  if x0.ndim != 5:
    raise ValueError(f"x0 must be [B, T, H, W, C], got shape {x0.shape}")
  B, T = x0.shape[:2]
  k_t, k_n = jax.random.split(rng)
  if t is None:
    t = sample_frame_timesteps(k_t, B, T, schedule.num_timesteps)
  elif t.shape != (B, T):
    raise ValueError(f"t must be [B, T] = {(B, T)}, got {t.shape}")
  t = t.astype(jnp.int32)
  if noise is None:
    noise = jax.random.normal(k_n, x0.shape, dtype=x0.dtype)
  if schedule.scale_arr is not None:
    x0 = rescale_x0(schedule, x0, t)
  x_t = q_sample(schedule, x0, t, noise)
  target = training_target(schedule, x0, noise, t)
  pred = denoise_fn(x_t, t)
  if pred.shape != x0.shape:
    raise ValueError(f"denoise_fn returned shape {pred.shape}, expected {x0.shape}")
  err = (pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2
  frame_loss = jnp.mean(err, axis=(2, 3, 4))  # [B, T]
  if frame_weights is None:
    w = jnp.ones((B, T), jnp.float32)
    loss = jnp.mean(frame_loss)
  else:
    if frame_weights.shape != (B, T):
      raise ValueError(f"frame_weights must be [B, T] = {(B, T)}, got {frame_weights.shape}")
    w = frame_weights.astype(jnp.float32)
    loss = jnp.sum(w * frame_loss) / jnp.maximum(jnp.sum(w), 1e-12)
  sums, counts = bucket_losses(frame_loss, t, w, schedule.num_timesteps)
  aux = {"frame_loss": frame_loss, "t": t, "bucket_loss_sum": sums, "bucket_count": counts}
  return loss, aux
