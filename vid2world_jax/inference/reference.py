"""Plain Python-loop reference of the sampler (a test oracle): exactly sized windows, Python loops over frames and
DDIM steps, the same RNG derivation as ``sampler.rollout``.
"""

from __future__ import annotations

import weakref

import jax
import jax.numpy as jnp

from vid2world_jax.diffusion import actions as actions_lib
from vid2world_jax.diffusion import ddim
from vid2world_jax.diffusion import guidance as guidance_lib
from vid2world_jax.inference.rollout_model import FnDenoiser, Params, RolloutModel
from vid2world_jax.inference.sampler import (SamplerConfig, _check_inputs, frame_noise, noise_history, noise_mode,
                                             timestep_plan)

_REF_JIT = weakref.WeakKeyDictionary()     # denoiser -> jitted fn


def rollout_reference(model: RolloutModel, cfg: SamplerConfig, params: Params, context, actions, keys, *,
                      horizon: int) -> jax.Array:
  """Plain Python-loop reference: exactly sized windows (no padding), Python loops over frames and DDIM steps.

  Same RNG derivation as ``rollout``; used to test the scan implementation."""
  with noise_mode():
    return _rollout_reference(model, cfg, params, context, actions, keys, horizon)


def _rollout_reference(model, cfg, params, context, actions, keys, horizon):
  context = jnp.asarray(context)
  actions = jnp.asarray(actions, jnp.float32)
  _check_inputs(context, actions, keys, horizon)
  b, k = context.shape[:2]
  w = cfg.window
  frame_shape = context.shape[2:]
  taus, prevs, t_small = timestep_plan(cfg, model.schedule.num_timesteps)
  if not isinstance(model.denoiser, FnDenoiser):
    raise ValueError("rollout_reference needs a full-window FnDenoiser (it calls the network on exactly sized "
                     f"windows), got {type(model.denoiser).__name__}")
  net = _REF_JIT.get(model.denoiser)
  if net is None:
    net = _REF_JIT[model.denoiser] = jax.jit(model.denoiser.fn)  # one compile per window length
  clean = [context[:, j] for j in range(k)]
  noisy = [noise_history(model.schedule, clean[j], t_small, frame_noise(keys, j, frame_shape, len(taus))[1])
           for j in range(k)]
  for f in range(k, k + horizon):
    s = max(0, f - (w - 1))                       # window = frames s .. f
    n = f - s + 1
    x, hist_noise, step_noises = frame_noise(keys, f, frame_shape, len(taus))
    win_actions = actions_lib.align_actions(jnp.stack(
        [actions[:, g] if g < f else jnp.zeros_like(actions[:, 0]) for g in range(s, f + 1)], axis=1))
    cond = model.cond_fn(params, clean[s])
    mask = jnp.ones((b, n), jnp.float32)
    hist = jnp.stack(noisy[s:f], axis=1) if n > 1 else None
    for i, (tau, tau_prev) in enumerate(zip(taus, prevs)):
      lat = x[:, None] if hist is None else jnp.concatenate([hist, x[:, None]], axis=1)
      t = jnp.asarray([[t_small] * (n - 1) + [int(tau)]] * b, jnp.int32)
      if cfg.guidance_scale is None:
        pred = net(params, lat, t, cond, win_actions, mask)
      else:
        pc = net(params, lat, t, cond, win_actions, mask)
        pu = net(params, lat, t, cond, win_actions, mask.at[:, -1].set(0.0))
        pred = guidance_lib.causal_action_guidance(pc, pu, cfg.guidance_scale, cfg.guidance_rescale)
      noise = step_noises[i] if cfg.eta != 0.0 else None
      x, _ = ddim.ddim_step(model.schedule, x, pred[:, -1], jnp.full((b,), tau, jnp.int32),
                            jnp.full((b,), tau_prev, jnp.int32), cfg.eta, noise,
                            final_alpha_one=cfg.final_alpha_one)
    clean.append(x.astype(context.dtype))
    noisy.append(noise_history(model.schedule, clean[-1], t_small, hist_noise))
  return jnp.stack(clean, axis=1)
