"""The few-step student's objective (spec §5's sampler, trained for directly): pure math, no I/O.

A world model samples a new frame with a few DDIM steps while its history enters the network at a fixed small
noise level ``t_small`` (``inference.sampler``). A student is the same network trained for exactly that situation
and nothing else: for each clip one target position ``p`` (a frame with at least one frame of history), the
history ``[0, p)`` noised to ``t_small``, the target at one of the student's own DDIM timesteps ``tau_k`` (the
first is ``T - 1``: pure noise under a zero-terminal-SNR schedule), positions after ``p`` zero (they cannot reach
``p`` through a causal network, as in the sampler's padded window), and the prediction read out as ``x0_hat`` and
regressed on the recorded frame. No guidance pass: the student is run with the conditional pass only, so what
guidance added to action following has to be learned by the conditional prediction itself.

``student_window`` builds the window (the inputs are exactly those the sampler feeds at that step);
``student_loss`` is the objective. A student sampled with a window shorter than the training clips
(``config.sampler.window``) trains on sub-clips of that length (``crop_clips``): the sampler's window starts at
its oldest history frame, whose latent is the concat conditioning and whose action slot is zero, as a sub-clip's. The trainer (``training.steps``) selects it with
``config.train.objective = "student"``; the sampler settings it trains for come from ``config.sampler``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vid2world_jax.diffusion import ddim
from vid2world_jax.diffusion.parameterization import model_output_to_x0_eps, q_sample, rescale_x0
from vid2world_jax.diffusion.schedules import Schedule

# ``(latents [B, T, h, w, c], t [B, T] int32, action_mask [B, T]) -> prediction [B, T, h, w, c]`` (float32,
# the schedule's parameterisation), with the conditioning and actions closed over.
WindowFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class StudentWindow(NamedTuple):
  latents: jax.Array      # [B, T, h, w, c] history at t_small, the target frame at tau, zeros after it
  t: jax.Array            # [B, T] int32: t_small on the history, tau on the target (and the padding after it)
  action_mask: jax.Array  # [B, T] float32: 1 up to and including the target, 0 after (as the sampler's window)
  target_index: jax.Array  # [B] int32 target position p in [1, T)
  tau: jax.Array          # [B] int32 the target's timestep


def student_timesteps(ddim_steps: int, num_timesteps: int, spacing: str = "uniform_trailing") -> np.ndarray:
  """The student's DDIM timesteps (descending): the ones its sampler visits."""
  return ddim.ddim_timesteps(int(ddim_steps), int(num_timesteps), spacing)


def crop_clips(key: jax.Array, batch: dict, window: int, keys=("frames", "latent_moments", "actions"),
               anchored: bool = False) -> dict:
  """``batch`` with each array named in ``keys`` (``[B, T, ...]``) cut to ``window`` consecutive frames starting at
  one random frame per clip (the same start for every key of a clip); other entries unchanged. ``anchored``:
  every sub-clip starts at frame 0 (when something in the batch belongs to frame 0, e.g. precomputed CLIP
  tokens of the first frame)."""
  present = [k for k in keys if k in batch]
  if not present:
    raise ValueError(f"crop_clips: the batch has none of {keys}")
  b, t = batch[present[0]].shape[:2]
  if not 2 <= window <= t:
    raise ValueError(f"crop_clips: window {window} must be in [2, {t}] (the clip length)")
  if window == t:
    return dict(batch)
  starts = (jnp.zeros((b,), jnp.int32) if anchored
            else jax.random.randint(key, (b,), 0, t - window + 1, jnp.int32))
  cut = jax.vmap(lambda x, s0: jax.lax.dynamic_slice_in_dim(x, s0, window, axis=0))
  return {k: (cut(v, starts) if k in present else v) for k, v in batch.items()}


def student_window(schedule: Schedule, x0: jax.Array, key: jax.Array, taus: np.ndarray | jax.Array,
                   t_small: int) -> tuple[StudentWindow, jax.Array]:
  """One training window per clip. ``x0``: clean latents ``[B, T, h, w, c]`` (T >= 2). Returns the window and the
  target's clean latent ``[B, h, w, c]`` (rescaled at ``tau`` when the schedule has a dynamic rescale, as the
  Diffusion-Forcing target is)."""
  if x0.ndim != 5 or x0.shape[1] < 2:
    raise ValueError(f"x0 must be [B, T >= 2, h, w, c], got shape {x0.shape}")
  b, t = x0.shape[:2]
  k_p, k_tau, k_hist, k_new = jax.random.split(key, 4)
  p = jax.random.randint(k_p, (b,), 1, t, jnp.int32)
  taus = jnp.asarray(taus, jnp.int32)
  tau = taus[jax.random.randint(k_tau, (b,), 0, taus.shape[0])]
  dyn = schedule.dynamic_rescale
  flat = x0.reshape((b * t,) + x0.shape[2:])
  if t_small > 0:
    hist = q_sample(schedule, flat, jnp.full((b * t,), t_small, jnp.int32),
                    jax.random.normal(k_hist, flat.shape, flat.dtype), dynamic_rescale=dyn).reshape(x0.shape)
  else:
    hist = x0
  target = jnp.take_along_axis(x0, p[:, None, None, None, None], axis=1)[:, 0]   # [B, h, w, c]
  if schedule.scale_arr is not None:
    target = rescale_x0(schedule, target, tau)
  new = q_sample(schedule, target, tau, jax.random.normal(k_new, target.shape, target.dtype))
  pos = jnp.arange(t)[None, :]
  before, at = pos < p[:, None], pos == p[:, None]
  sel = lambda m: m.reshape(m.shape + (1,) * (x0.ndim - 2))
  latents = jnp.where(sel(at), new[:, None], jnp.where(sel(before), hist, 0.0))
  tt = jnp.where(before, t_small, tau[:, None]).astype(jnp.int32)
  mask = (pos <= p[:, None]).astype(jnp.float32)
  return StudentWindow(latents, tt, mask, p, tau), target


def student_loss(window_fn: WindowFn, schedule: Schedule, x0: jax.Array, key: jax.Array,
                 taus: np.ndarray | jax.Array, t_small: int) -> tuple[jax.Array, dict]:
  """Mean squared error of the student's ``x0_hat`` at the target position against the recorded frame.

  Returns ``(loss, aux)``; aux: ``frame_loss [B]`` (per clip), ``tau [B]`` and ``target_index [B]``."""
  win, target = student_window(schedule, x0, key, taus, t_small)
  pred = window_fn(win.latents, win.t, win.action_mask)
  at = lambda x: jnp.take_along_axis(x, win.target_index[:, None, None, None, None], axis=1)[:, 0]
  x_tau = at(win.latents)
  x0_hat, _ = model_output_to_x0_eps(schedule, x_tau.astype(jnp.float32), at(pred).astype(jnp.float32), win.tau)
  per_clip = jnp.mean((x0_hat - target.astype(jnp.float32)) ** 2, axis=tuple(range(1, target.ndim)))
  return jnp.mean(per_clip), {"frame_loss": per_clip, "tau": win.tau, "target_index": win.target_index}
