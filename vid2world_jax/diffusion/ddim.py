"""DDIM sampling pieces (spec §6.1), per-frame timesteps supported.

Timestep conventions (as DynamiCrafter's ``make_ddim_timesteps`` / ``make_ddim_sampling_parameters``):

* ``ddim_timesteps(50, spacing="uniform_trailing")`` -> ``[999, 979, ..., 39, 19]`` (visiting order, descending).
  ``"uniform"`` gives LDM's ``range(0, N, N // S) + 1`` = ``[981, ..., 21, 1]``.
* ``final_alpha_one=True`` (diffusers' ``set_alpha_to_one``) uses ab_prev = 1 for the last step instead: the
  result is x0_hat exactly (fewer-step samplers otherwise keep ``sqrt(1 - ab[0]) eps_hat`` of noise).
* The "previous" timestep of a DDIM step is the next smaller timestep in the list; for the LAST step (smallest
  timestep) we pass ``t_prev = -1`` (``FINAL_STEP``). Then, as in the torch code
  (``alphas_prev = [ab[0]] + ab[ts[:-1]]`` in ascending order), ``ab_prev = ab[0]`` (not 1), and the dynamic
  rescale ratio ``scale_arr[t_prev] / scale_arr[t]`` is 1 (``ddim_scale_arr_prev = [s[ts[0]]] + s[ts[:-1]]``).

Update (model output in the schedule's parameterisation):
  x0_hat, eps_hat from the output; x0_hat *= scale_arr[t_prev] / scale_arr[t] (dynamic rescale only);
  sigma = eta sqrt((1 - ab_prev) / (1 - ab_t) (1 - ab_t / ab_prev));
  x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z.
The argument of the middle sqrt is computed as (1 - ab_prev)(1 - eta^2 r), r = (1 - ab_t/ab_prev)/(1 - ab_t),
(mathematically identical) and clamped at 0: at a zero-SNR step with eta = 1 it is exactly 0, where torch's
float32 ``1 - a_prev - sigma**2`` leaves rounding noise (or a NaN when slightly negative).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vid2world_jax.diffusion.parameterization import model_output_to_x0_eps
from vid2world_jax.diffusion.schedules import Schedule, gather

FINAL_STEP = -1  # t_prev value of the last DDIM step


def ddim_timesteps(num_steps: int, num_train: int = 1000, spacing: str = "uniform_trailing") -> np.ndarray:
  """DDIM timesteps in visiting (descending) order, int32 numpy ``[num_steps]``."""
  if not 1 <= num_steps <= num_train:
    raise ValueError(f"num_steps must be in [1, {num_train}], got {num_steps}")
  if spacing == "uniform_trailing":
    c = num_train / num_steps
    asc = np.flip(np.round(np.arange(num_train, 0, -c))).astype(np.int64) - 1
  elif spacing == "uniform":
    c = num_train // num_steps
    asc = np.asarray(list(range(0, num_train, c))) + 1
  else:
    raise ValueError(f"unknown spacing {spacing!r}; expected uniform_trailing|uniform")
  return np.ascontiguousarray(asc[::-1]).astype(np.int32)


def history_timestep(timesteps: np.ndarray, history_noise: int | str, num_train: int = 1000) -> int:
  """Noise level ``t_small`` of the history frames for a DDIM plan: ``"second_last"`` = the plan's second-to-last
  timestep (39 for 50 trailing steps; 0 for a one-step plan) or an explicit int in ``[0, num_train)``."""
  if history_noise == "second_last":
    return int(timesteps[-2]) if len(timesteps) >= 2 else 0
  t_small = int(history_noise)
  if not 0 <= t_small < num_train:
    raise ValueError(f"history_noise {t_small} must be in [0, {num_train})")
  return t_small


def ddim_prev_timesteps(timesteps: np.ndarray) -> np.ndarray:
  """For descending ``timesteps``, the t_prev of each step: the next entry, ``FINAL_STEP`` for the last."""
  ts = np.asarray(timesteps, dtype=np.int32)
  return np.concatenate([ts[1:], np.asarray([FINAL_STEP], np.int32)])


def _ab_prev(schedule: Schedule, t_prev: jax.Array, ndim: int, final_alpha_one: bool = False) -> jax.Array:
  if final_alpha_one:  # FINAL_STEP -> 1: the last step returns x0_hat itself (diffusers' set_alpha_to_one)
    table = jnp.append(schedule.alphas_cumprod, 1.0)
    return gather(table, jnp.where(t_prev < 0, table.shape[0] - 1, t_prev), ndim)
  return gather(schedule.alphas_cumprod, jnp.where(t_prev < 0, 0, t_prev), ndim)  # FINAL_STEP -> ab[0] (LDM)


def ddim_sigma(schedule: Schedule, t: jax.Array, t_prev: jax.Array, eta: float, ndim: int | None = None, *,
               final_alpha_one: bool = False) -> jax.Array:
  """``eta * sqrt((1 - ab_prev)/(1 - ab_t) * (1 - ab_t/ab_prev))``, shape ``t.shape (+ ones to ndim)``."""
  t = jnp.asarray(t)
  t_prev = jnp.asarray(t_prev)
  nd = t.ndim if ndim is None else ndim
  ab_t = gather(schedule.alphas_cumprod, t, nd)
  ab_p = _ab_prev(schedule, t_prev, nd, final_alpha_one)
  return eta * jnp.sqrt((1.0 - ab_p) / (1.0 - ab_t) * (1.0 - ab_t / ab_p))


def ddim_step(schedule: Schedule, x_t: jax.Array, model_out: jax.Array, t: jax.Array, t_prev: jax.Array,
              eta: float = 0.0, noise: jax.Array | None = None, *,
              final_alpha_one: bool = False) -> tuple[jax.Array, jax.Array]:
  """One DDIM update.

  Args:
    x_t: ``[B, T, H, W, C]`` (any rank) current sample. model_out: same shape, eps or v.
    t, t_prev: int ``[B]`` or ``[B, T]`` (broadcast over trailing dims); ``t_prev = -1`` marks the final step.
    eta: 0 deterministic DDIM, 1 DDPM-like. noise: ``z`` of x_t's shape (required if eta != 0).
    final_alpha_one: the final step uses ``ab_prev = 1`` (returns x0_hat, no noise left) instead of DynamiCrafter's
      ``ab[0]`` (which leaves ``sqrt(1 - ab[0]) eps_hat``, ~0.03 eps for the linear schedule).
  Returns:
    ``(x_prev, x0_hat)`` where x0_hat includes the dynamic-rescale ratio.
  """
  t = jnp.asarray(t)
  t_prev = jnp.asarray(t_prev)
  if t.shape != t_prev.shape:
    raise ValueError(f"t {t.shape} and t_prev {t_prev.shape} must have the same shape")
  if noise is None and (isinstance(eta, jax.Array) or eta != 0.0):
    raise ValueError("noise is required when eta != 0 (or when eta is a traced array)")
  nd = x_t.ndim
  x0_hat, eps_hat = model_output_to_x0_eps(schedule, x_t, model_out, t)
  final = (t_prev < 0)
  if schedule.scale_arr is not None:
    s_t = gather(schedule.scale_arr, t, nd)
    s_p = gather(schedule.scale_arr, jnp.where(final, t, t_prev), nd)
    x0_hat = x0_hat * (s_p / s_t).astype(x0_hat.dtype)
  ab_t = gather(schedule.alphas_cumprod, t, nd)
  ab_p = _ab_prev(schedule, t_prev, nd, final_alpha_one)
  r = (1.0 - ab_t / ab_p) / (1.0 - ab_t)  # sigma^2 = eta^2 (1 - ab_p) r
  sigma = eta * jnp.sqrt((1.0 - ab_p) * r)
  # 1 - ab_p - sigma^2 factored as (1 - ab_p)(1 - eta^2 r): exact 0 at a zero-SNR step with eta = 1 instead of
  # float32 cancellation noise (which the sqrt would amplify to ~1e-3).
  dir_coef = jnp.sqrt(jnp.maximum((1.0 - ab_p) * (1.0 - eta**2 * r), 0.0))
  x_prev = jnp.sqrt(ab_p) * x0_hat + dir_coef * eps_hat
  if noise is not None:
    if noise.shape != x_t.shape:
      raise ValueError(f"noise shape {noise.shape} != x_t shape {x_t.shape}")
    x_prev = x_prev + sigma * noise
  return x_prev.astype(x_t.dtype), x0_hat
