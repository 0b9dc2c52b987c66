"""DDPM noise schedules of DynamiCrafter / Vid2World (spec §1.2).

All buffers are computed in float64 NumPy and cast to float32 at the end, exactly like the torch code
(``register_schedule``), so they match the checkpoint buffers bit-for-bit up to float32 rounding.

``Schedule`` is a ``flax.struct`` dataclass (a pytree): its arrays are leaves (jit-able, can be passed
into jitted functions), ``parameterization`` and ``num_timesteps`` are static metadata.

Shapes: every per-timestep buffer is ``[num_timesteps]`` float32; ``scale_arr`` (dynamic rescale, 512/1024
variants) is ``[turning_step + num_timesteps]`` float32 (1400 for the real configs; only the first
``num_timesteps`` entries are ever indexed) or ``None``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

PARAMETERIZATIONS = ("eps", "v")

# Names of the top-level schedule buffers of DynamiCrafter's ``LatentDiffusion`` state_dict (the keys of the
# manifests' ``dynamicrafter_R_schedule_buffers.npz``), minus ``scale_arr`` which exists only with dynamic rescale.
TORCH_BUFFER_NAMES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


@struct.dataclass
class Schedule:
  """Per-timestep diffusion buffers (float32 ``[N]``) + static parameterisation.

  Unlike the torch buffers, ``sqrt_recip_alphas_cumprod`` / ``sqrt_recipm1_alphas_cumprod`` hold the true
  values for every parameterisation (``inf`` at a zero-SNR terminal step); see ``torch_buffers`` for the
  checkpoint's zeros-with-v quirk.
  """

  betas: jax.Array
  alphas: jax.Array
  alphas_cumprod: jax.Array
  alphas_cumprod_prev: jax.Array
  sqrt_alphas_cumprod: jax.Array
  sqrt_one_minus_alphas_cumprod: jax.Array
  log_one_minus_alphas_cumprod: jax.Array
  sqrt_recip_alphas_cumprod: jax.Array
  sqrt_recipm1_alphas_cumprod: jax.Array
  posterior_variance: jax.Array
  posterior_log_variance_clipped: jax.Array
  posterior_mean_coef1: jax.Array
  posterior_mean_coef2: jax.Array
  scale_arr: Optional[jax.Array]  # dynamic-rescale factors [turning_step + N], or None when disabled
  parameterization: str = struct.field(pytree_node=False, default="eps")  # "eps" | "v"
  num_timesteps: int = struct.field(pytree_node=False, default=1000)

  @property
  def dynamic_rescale(self) -> bool:
    return self.scale_arr is not None


def linear_betas(num_timesteps: int, linear_start: float, linear_end: float) -> np.ndarray:
  """LDM "linear" schedule (linear in sqrt(beta)): ``linspace(sqrt(start), sqrt(end), N)**2``, float64 ``[N]``."""
  return np.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=np.float64) ** 2


def make_betas(schedule: str, num_timesteps: int, linear_start: float, linear_end: float,
               cosine_s: float = 8e-3) -> np.ndarray:
  """Beta schedules of LDM's ``make_beta_schedule`` (float64 ``[N]``)."""
  if schedule == "linear":
    return linear_betas(num_timesteps, linear_start, linear_end)
  if schedule == "sqrt_linear":
    return np.linspace(linear_start, linear_end, num_timesteps, dtype=np.float64)
  if schedule == "sqrt":
    return np.linspace(linear_start, linear_end, num_timesteps, dtype=np.float64) ** 0.5
  if schedule == "cosine":
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps + cosine_s
    ab = np.cos(steps / (1 + cosine_s) * np.pi / 2) ** 2
    ab = ab / ab[0]
    return np.clip(1 - ab[1:] / ab[:-1], 0, 0.999)
  raise ValueError(f"unknown beta schedule {schedule!r}; expected linear|sqrt_linear|sqrt|cosine")


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
  """Lin et al. 2023 (Alg. 1): shift/scale sqrt(alpha-bar) so that the last step has SNR 0 and the first keeps
  its value; returns float64 betas ``[N]`` (last beta == 1)."""
  betas = np.asarray(betas, dtype=np.float64)
  s = np.sqrt(np.cumprod(1.0 - betas))
  s0, sT = s[0].copy(), s[-1].copy()
  s = (s - sT) * (s0 / (s0 - sT))
  ab = s**2
  alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
  return 1.0 - alphas


def dynamic_rescale_array(num_timesteps: int, base_scale: float, turning_step: int) -> np.ndarray:
  """``concat(linspace(1, base_scale, turning_step), full(num_timesteps, base_scale))`` (float64)."""
  return np.concatenate([np.linspace(1.0, base_scale, turning_step, dtype=np.float64),
                         np.full(num_timesteps, base_scale, dtype=np.float64)])


def _schedule_arrays_f64(betas: np.ndarray, v_posterior: float = 0.0) -> dict:
  """All buffers in float64 as the torch ``register_schedule`` computes them (before the float32 cast)."""
  alphas = 1.0 - betas
  ab = np.cumprod(alphas, axis=0)
  ab_prev = np.append(1.0, ab[:-1])
  with np.errstate(divide="ignore", invalid="ignore"):
    post_var = (1 - v_posterior) * betas * (1.0 - ab_prev) / (1.0 - ab) + v_posterior * betas
    out = dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=ab,
        alphas_cumprod_prev=ab_prev,
        sqrt_alphas_cumprod=np.sqrt(ab),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ab),
        log_one_minus_alphas_cumprod=np.log(1.0 - ab),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ab),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ab - 1),
        posterior_variance=post_var,
        posterior_log_variance_clipped=np.log(np.maximum(post_var, 1e-20)),
        posterior_mean_coef1=betas * np.sqrt(ab_prev) / (1.0 - ab),
        posterior_mean_coef2=(1.0 - ab_prev) * np.sqrt(alphas) / (1.0 - ab),
    )
  return out


def make_schedule(num_timesteps: int = 1000,
                  linear_start: float = 0.00085,
                  linear_end: float = 0.012,
                  schedule: str = "linear",
                  zero_terminal_snr: bool = False,
                  parameterization: str = "eps",
                  dynamic_rescale: bool = False,
                  base_scale: float = 0.7,
                  turning_step: int = 400) -> Schedule:
  """Builds the DDPM buffers (float64 -> float32) like DynamiCrafter's ``register_schedule``.

  Args: see spec §1.2; ``dynamic_rescale`` adds ``scale_arr`` of length ``turning_step + num_timesteps``.
  """
  if parameterization not in PARAMETERIZATIONS:
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
  if num_timesteps < 2:
    raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
  if dynamic_rescale and not (0 < turning_step and 0.0 < base_scale <= 1.0):
    raise ValueError(f"bad dynamic rescale settings base_scale={base_scale}, turning_step={turning_step}")
  betas = make_betas(schedule, num_timesteps, linear_start, linear_end)
  if zero_terminal_snr:
    betas = rescale_zero_terminal_snr(betas)
  arrs = _schedule_arrays_f64(betas)
  f32 = {k: jnp.asarray(v.astype(np.float32)) for k, v in arrs.items()}
  scale_arr = None
  if dynamic_rescale:
    scale_arr = jnp.asarray(dynamic_rescale_array(num_timesteps, base_scale, turning_step).astype(np.float32))
  return Schedule(**f32, scale_arr=scale_arr, parameterization=parameterization, num_timesteps=num_timesteps)


# The three DynamiCrafter inference configs (configs/inference_{256,512,1024}_v1.0.yaml).
VARIANT_SETTINGS = {
    "256": dict(parameterization="eps", zero_terminal_snr=False, dynamic_rescale=False),
    "512": dict(parameterization="v", zero_terminal_snr=True, dynamic_rescale=True, base_scale=0.7,
                turning_step=400),
    "1024": dict(parameterization="v", zero_terminal_snr=True, dynamic_rescale=True, base_scale=0.3,
                 turning_step=400),
}


def schedule_for_variant(variant: str) -> Schedule:
  """Schedule of a DynamiCrafter variant: "256" (eps, linear), "512" (v, zero-SNR, rescale 0.7) or "1024"
  (v, zero-SNR, rescale 0.3). All use 1000 steps, linear betas 0.00085 -> 0.012. Vid2World uses "512"."""
  variant = str(variant)
  if variant not in VARIANT_SETTINGS:
    raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANT_SETTINGS)}")
  return make_schedule(1000, 0.00085, 0.012, "linear", **VARIANT_SETTINGS[variant])


def torch_buffers(schedule: Schedule) -> dict[str, np.ndarray]:
  """The schedule as DynamiCrafter's state_dict stores it (float32 numpy, torch buffer names).

  Quirk reproduced here (and only here): with ``parameterization == "v"`` the torch code registers
  ``sqrt_recip_alphas_cumprod`` and ``sqrt_recipm1_alphas_cumprod`` as zeros. ``scale_arr`` is included
  only when dynamic rescale is on (as in the checkpoint).
  """
  out = {k: np.asarray(getattr(schedule, k)) for k in TORCH_BUFFER_NAMES}
  if schedule.parameterization == "v":
    out["sqrt_recip_alphas_cumprod"] = np.zeros_like(out["sqrt_recip_alphas_cumprod"])
    out["sqrt_recipm1_alphas_cumprod"] = np.zeros_like(out["sqrt_recipm1_alphas_cumprod"])
  if schedule.scale_arr is not None:
    out["scale_arr"] = np.asarray(schedule.scale_arr)
  return out


def gather(arr: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
  """``arr[t]`` reshaped to broadcast against an array of rank ``ndim`` whose leading dims are ``t.shape``.

  ``t`` is int ``[B]`` or ``[B, T]``; result is ``t.shape + (1,) * (ndim - t.ndim)`` float32.
  """
  t = jnp.asarray(t)
  if not jnp.issubdtype(t.dtype, jnp.integer):
    raise ValueError(f"timesteps must be integers, got dtype {t.dtype}")
  if t.ndim > ndim:
    raise ValueError(f"timesteps rank {t.ndim} exceeds data rank {ndim}")
  out = jnp.take(arr, t, axis=0)
  return out.reshape(t.shape + (1,) * (ndim - t.ndim))
