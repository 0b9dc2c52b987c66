"""Forward noising and eps / v / x0 conversions (spec §1.2, §3.1), with per-frame timesteps.

Conventions: ``x`` is a video ``[B, T, H, W, C]`` (any rank >= t.ndim works); ``t`` is int ``[B]`` (one level
per sample, broadcast over frames) or ``[B, T]`` (one level per frame). ``ab`` = alpha-bar.

  q_sample:  x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps
  v:         v   = sqrt(ab_t) eps - sqrt(1 - ab_t) x0
  x0 from v: x0  = sqrt(ab_t) x_t - sqrt(1 - ab_t) v
  eps from v: eps = sqrt(ab_t) v + sqrt(1 - ab_t) x_t
  x0 from eps: x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)     (undefined at a zero-SNR step, ab_t = 0)
  eps from x0: eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)      (undefined at t with ab_t = 1; never happens)

Dynamic rescale (512/1024 variants): in training the clean latent is multiplied by ``scale_arr[t]`` per frame
before noising (``rescale_x0``); the v / eps targets use that rescaled x0. ``q_sample`` itself never rescales
unless asked (``dynamic_rescale=True``): the released AR sampler noises history frames with plain ``q_sample``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vid2world_jax.diffusion.schedules import Schedule, gather


def _check(x: jax.Array, t: jax.Array) -> None:
  t = jnp.asarray(t)
  if t.ndim not in (1, 2):
    raise ValueError(f"timesteps must be [B] or [B, T], got shape {t.shape}")
  if x.ndim < t.ndim or tuple(x.shape[:t.ndim]) != tuple(t.shape):
    raise ValueError(f"timesteps shape {t.shape} does not match the leading dims of x {x.shape}")


def rescale_x0(schedule: Schedule, x0: jax.Array, t: jax.Array) -> jax.Array:
  """``x0 * scale_arr[t]`` per sample / frame; error if the schedule has no dynamic rescale."""
  _check(x0, t)
  if schedule.scale_arr is None:
    raise ValueError("schedule has no scale_arr (dynamic_rescale disabled)")
  return x0 * gather(schedule.scale_arr, t, x0.ndim).astype(x0.dtype)


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array, *,
             dynamic_rescale: bool = False) -> jax.Array:
  """Noised sample ``x_t`` (same shape/dtype as x0). ``dynamic_rescale=True`` first rescales x0 by
  ``scale_arr[t]`` (training path of the 512/1024 variants)."""
  _check(x0, t)
  if noise.shape != x0.shape:
    raise ValueError(f"noise shape {noise.shape} != x0 shape {x0.shape}")
  if dynamic_rescale:
    x0 = rescale_x0(schedule, x0, t)
  a = gather(schedule.sqrt_alphas_cumprod, t, x0.ndim).astype(x0.dtype)
  s = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim).astype(x0.dtype)
  return a * x0 + s * noise


def v_target(schedule: Schedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """``v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0`` (x0 already rescaled if dynamic rescale is used)."""
  _check(x0, t)
  a = gather(schedule.sqrt_alphas_cumprod, t, x0.ndim).astype(x0.dtype)
  s = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim).astype(x0.dtype)
  return a * noise - s * x0


def x0_from_v(schedule: Schedule, x_t: jax.Array, v: jax.Array, t: jax.Array) -> jax.Array:
  _check(x_t, t)
  a = gather(schedule.sqrt_alphas_cumprod, t, x_t.ndim).astype(x_t.dtype)
  s = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim).astype(x_t.dtype)
  return a * x_t - s * v


def eps_from_v(schedule: Schedule, x_t: jax.Array, v: jax.Array, t: jax.Array) -> jax.Array:
  _check(x_t, t)
  a = gather(schedule.sqrt_alphas_cumprod, t, x_t.ndim).astype(x_t.dtype)
  s = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim).astype(x_t.dtype)
  return a * v + s * x_t


def x0_from_eps(schedule: Schedule, x_t: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
  """``(x_t - sqrt(1-ab) eps) / sqrt(ab)`` (inf/nan where ab_t == 0, as in torch)."""
  _check(x_t, t)
  a = gather(schedule.sqrt_alphas_cumprod, t, x_t.ndim).astype(x_t.dtype)
  s = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim).astype(x_t.dtype)
  return (x_t - s * eps) / a


def eps_from_x0(schedule: Schedule, x_t: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
  _check(x_t, t)
  a = gather(schedule.sqrt_alphas_cumprod, t, x_t.ndim).astype(x_t.dtype)
  s = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim).astype(x_t.dtype)
  return (x_t - a * x0) / s


def v_from_x0_eps(schedule: Schedule, x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
  """Alias of ``v_target`` with the argument order (x0, eps, t)."""
  return v_target(schedule, x0, eps, t)


def training_target(schedule: Schedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """Regression target of the schedule's parameterisation: ``noise`` (eps) or ``v``."""
  if schedule.parameterization == "eps":
    return noise
  if schedule.parameterization == "v":
    return v_target(schedule, x0, noise, t)
  raise ValueError(f"unknown parameterization {schedule.parameterization!r}")


def model_output_to_x0_eps(schedule: Schedule, x_t: jax.Array, model_out: jax.Array,
                           t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(x0_hat, eps_hat) from a model output in the schedule's parameterisation."""
  if model_out.shape != x_t.shape:
    raise ValueError(f"model output shape {model_out.shape} != x_t shape {x_t.shape}")
  if schedule.parameterization == "v":
    return x0_from_v(schedule, x_t, model_out, t), eps_from_v(schedule, x_t, model_out, t)
  if schedule.parameterization == "eps":
    return x0_from_eps(schedule, x_t, model_out, t), model_out
  raise ValueError(f"unknown parameterization {schedule.parameterization!r}")


def x0_to_model_output(schedule: Schedule, x_t: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
  """The output a perfect model would give when its clean estimate is ``x0`` (used by oracle tests)."""
  eps = eps_from_x0(schedule, x_t, x0, t)
  if schedule.parameterization == "eps":
    return eps
  return v_target(schedule, x0, eps, t)
