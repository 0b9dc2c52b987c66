"""Autoregressive world-model rollout with causal action guidance (spec §5, §6.2).

Frame-by-frame generation, as the released sampler (``ar=True``) does it:

* History frames enter the network at a fixed small noise level ``t_small`` (default: the second-to-last DDIM
  timestep, 39 with 50 trailing steps; ``history_noise=0`` feeds them clean). Their noise is drawn ONCE per frame
  (when the frame is added to the history) and reused at every DDIM step and every later window.
* The new frame starts from N(0, I) and is denoised with DDIM over the descending timesteps; at every step the
  network sees ``[noisy history, x_new]`` with per-frame timesteps ``[t_small, ..., t_small, tau]`` and only the
  newest frame's output is used (history outputs are discarded).
* Actions are aligned per window (``diffusion.actions.align_actions``): window position 0 gets the zero action,
  position j the action taken at window frame j-1 (exactly as a training clip that starts at the window's start).
* Concat / context conditioning is computed from the FIRST frame of the current window (``cond_fn``).
* Causal action guidance: both passes in one batched forward (rows ``[:B]`` all actions, rows ``[B:]`` the
  newest frame's action masked out), combined by ``diffusion.guidance.causal_action_guidance`` (``uncond + scale *
  (cond - uncond)`` + CFG rescale, the rescale statistics over the window's valid frames; the released sampler
  takes them over the whole window). The scale is a traced value carried in the window state (``WindowState.scale``):
  every scale shares one compilation and it may change from frame to frame (``inference.InferenceSession.step``).
* Windows: at most ``window`` frames (the UNet's temporal length): the first ``window`` frames grow the window,
  later frames slide it (the oldest frame drops out).

Implementation: ``rollout`` is one ``jax.jit`` of a ``lax.scan`` over new frames with an inner ``lax.scan`` over
DDIM steps. To keep one static shape, the window is a fixed buffer of ``window`` frames; while it is still growing
the positions after the newest frame are zero padding. This is exact because the network is causal in time
(padding after the newest frame cannot influence it); ``inference.reference.rollout_reference`` (a plain Python loop
with exactly sized windows) checks it. A checkpoint-faithful UNet whose temporal GroupNorm pools over time is NOT causal, and
``rollout_model.world_model_rollout_model`` refuses it (``allow_noncausal=True`` overrides, knowingly).

The per-step network call is the seam ``WindowDenoiser``: ``init_state`` runs once per new frame (outside the
inner scan) and ``__call__`` once per DDIM step, threading a state through the inner scan. The default
(``FnDenoiser``) is stateless and runs the full window; a KV-cached fast path can keep history keys/values (and
the history outputs, which are constant across DDIM steps) in that state without touching the scan structure.
``CachedDenoiser`` is that fast path (``rollout_model.world_model_rollout_model(..., cached=True)``, ``--cached`` in the CLI):
``init_state`` runs the UNet once on the history (``models.frame_cache``: temporal-conv inputs, temporal
attention keys/values, cumulative-norm statistics), each DDIM step runs it on the new frame only. The cache is
rebuilt for every new frame (the window's conditioning frame and action alignment change when it slides), so
growing and sliding windows share one compiled step.

RNG: one key per rollout (``keys [B]``); the noise of frame f is derived from ``fold_in(key_b, f)`` only, so a
batched rollout equals the rollouts run one by one, and a longer rollout reproduces a shorter one's frames.

Shapes: latents ``[B, T, h, w, c]`` (channels last), actions ``[B, T, A]`` where ``actions[:, f]`` is the action
taken at frame f (it leads to frame f+1). A rollout from ``k`` context frames over ``horizon`` new frames needs
``k + horizon - 1`` actions (more are ignored).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vid2world_jax.diffusion import actions as actions_lib
from vid2world_jax.diffusion import ddim
from vid2world_jax.diffusion import guidance as guidance_lib
from vid2world_jax.diffusion import parameterization
from vid2world_jax.diffusion import sampler_settings
from vid2world_jax.diffusion.schedules import Schedule
from vid2world_jax.inference.rollout_model import Params, RolloutModel, WindowDenoiser, WindowInputs


# ------------------------------------------------------------------------------------------------------------
# Configuration.

_DEFAULTS = sampler_settings.default_sampler_config()   # the config.sampler block's defaults


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Static sampler settings (hashable: part of the jit cache key). The defaults are the ``config.sampler``
  block's (``diffusion.sampler_settings``); a run's settings come from ``inference.sampler_config(cfg)``."""
  ddim_steps: int = _DEFAULTS.ddim_steps              # DDIM steps per generated frame
  eta: float = _DEFAULTS.eta                          # DDIM eta (released evaluations: 1.0, stochastic)
  spacing: str = _DEFAULTS.spacing                    # DDIM timestep spacing ("uniform_trailing" | "uniform")
  guidance_scale: float | None = _DEFAULTS.guidance_scale  # causal action guidance s (code convention); None =
  #                                                     the conditional pass only (config.sampler.guidance "none")
  guidance_rescale: float = _DEFAULTS.guidance_rescale  # CFG rescale phi in [0, 1] (0 = off)
  history_noise: int | str = _DEFAULTS.history_noise  # t_small: "second_last" DDIM timestep (39 @ 50 steps) or an
  #                                                     int >= 0
  window: int = 16                                    # temporal window (frames the network sees, new frame
  #                                                     included; a run's: the UNet's temporal length)
  final_alpha_one: bool = _DEFAULTS.final_alpha_one   # last DDIM step to alpha-bar 1 (returns x0_hat) instead of
  #                                                     DynamiCrafter's ab[0]

  def __post_init__(self):
    if self.ddim_steps < 1:
      raise ValueError(f"ddim_steps must be >= 1, got {self.ddim_steps}")
    if not 0.0 <= float(self.eta):
      raise ValueError(f"eta must be >= 0, got {self.eta}")
    if not 0.0 <= float(self.guidance_rescale) <= 1.0:
      raise ValueError(f"guidance_rescale must be in [0, 1], got {self.guidance_rescale}")
    if self.window < 2:
      raise ValueError(f"window must be >= 2 (history + new frame), got {self.window}")
    if isinstance(self.history_noise, str) and self.history_noise != "second_last":
      raise ValueError(f"history_noise must be 'second_last' or an int, got {self.history_noise!r}")
    if not isinstance(self.history_noise, str) and int(self.history_noise) < 0:
      raise ValueError(f"history_noise must be >= 0, got {self.history_noise}")


def timestep_plan(cfg: SamplerConfig, num_timesteps: int) -> tuple[np.ndarray, np.ndarray, int]:
  """``(taus [S], tau_prevs [S], t_small)``: descending DDIM timesteps, their t_prev (``ddim.FINAL_STEP`` for the
  last) and the history noise level."""
  taus = ddim.ddim_timesteps(cfg.ddim_steps, num_timesteps, cfg.spacing)
  prevs = ddim.ddim_prev_timesteps(taus)
  return taus, prevs, ddim.history_timestep(taus, cfg.history_noise, num_timesteps)


# ------------------------------------------------------------------------------------------------------------
# Pure pieces.

def guided_prediction(denoiser: WindowDenoiser, params: Params, state: Any, inputs: WindowInputs,
                      scale: float | None, rescale: float) -> tuple[jax.Array, Any]:
  """Window prediction ``[B, W, ...]`` with causal action guidance (one batched call of 2B rows), or the
  conditional pass only when ``scale is None``. ``inputs`` are the conditional (B-row) inputs."""
  if scale is None:
    return denoiser(params, state, inputs)
  both = branch_inputs(inputs)
  out, state = denoiser(params, state, both)
  cond, uncond = guidance_lib.split_branches(out)
  valid = jnp.arange(inputs.latents.shape[1]) <= inputs.new_index
  return guidance_lib.causal_action_guidance(cond, uncond, scale, rescale, valid), state


def branch_inputs(inputs: WindowInputs) -> WindowInputs:
  """``[B] -> [2B]`` rows: conditional, then the same with the newest frame's action masked."""
  cond_mask, uncond_mask = guidance_lib.guidance_masks(inputs.action_mask, inputs.new_index)
  dup = lambda x: guidance_lib.stack_branches(x, x)
  return WindowInputs(latents=dup(inputs.latents), t=dup(inputs.t), cond=dup(inputs.cond),
                      actions=dup(inputs.actions),
                      action_mask=guidance_lib.stack_branches(cond_mask, uncond_mask), new_index=inputs.new_index)


def frame_noise(keys: jax.Array, frame: jax.Array | int, shape: tuple[int, ...], num_steps: int
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Noise of global frame ``frame`` for each rollout: ``(init [B, *shape], history [B, *shape],
  steps [S, B, *shape])`` (``S = num_steps`` DDIM steps), all drawn in one call from ``fold_in(keys[b], frame)``
  (order-independent and per rollout: a batched rollout equals the rollouts run one by one)."""
  def one(k):
    return jax.random.normal(jax.random.fold_in(k, frame), (num_steps + 2,) + tuple(shape), jnp.float32)
  z = jax.vmap(one)(keys)  # [B, S + 2, *shape]
  return z[:, 0], z[:, 1], jnp.swapaxes(z[:, 2:], 0, 1)


def noise_history(schedule: Schedule, x0: jax.Array, t_small: int, noise: jax.Array) -> jax.Array:
  """History latent at level ``t_small`` (``q_sample`` with the schedule's dynamic rescale, as in training);
  ``t_small == 0`` returns the clean latent."""
  if t_small == 0:
    return x0
  t = jnp.full(x0.shape[:1], t_small, jnp.int32)
  return parameterization.q_sample(schedule, x0, t, noise.astype(x0.dtype),
                                   dynamic_rescale=schedule.dynamic_rescale)


# ------------------------------------------------------------------------------------------------------------
# Window state and one generated frame (shared by the scan and the step-by-step session, inference.py).

class WindowState(NamedTuple):
  clean: jax.Array       # [B, W, h, w, c] clean latents of the window's frames (zeros after ``count``)
  noisy: jax.Array       # [B, W, h, w, c] the same at t_small, noise drawn once per frame
  actions: jax.Array     # [B, W, A] raw action taken at each window frame (leading to the next frame)
  count: jax.Array       # [] int32 frames in the window
  frame: jax.Array       # [] int32 global index of the next frame to generate
  keys: jax.Array        # [B] per-rollout PRNG keys
  scale: jax.Array       # [] float32 causal action guidance scale of the next frame (a traced value: changing it
  #                        between frames needs no recompilation; unused when cfg.guidance_scale is None)


def init_window(model: RolloutModel, cfg: SamplerConfig, context: jax.Array, context_actions: jax.Array,
                keys: jax.Array, scale: jax.Array | float | None = None) -> WindowState:
  """Window from ``k`` context latents ``[B, k, h, w, c]`` and the ``k - 1`` actions between them.

  Only the last ``window - 1`` context frames are kept (the window needs room for the new frame). ``scale``: the
  guidance scale (default ``cfg.guidance_scale``; a traced value serves every scale with one compilation)."""
  b, k = context.shape[:2]
  w = cfg.window
  m = min(k, w - 1)
  _, _, t_small = timestep_plan(cfg, model.schedule.num_timesteps)
  frame_shape = context.shape[2:]
  clean = jnp.zeros((b, w) + frame_shape, context.dtype)
  noisy = jnp.zeros_like(clean)
  acts = jnp.zeros((b, w, context_actions.shape[-1]), jnp.float32)
  kept = context[:, k - m:]                                             # [B, m, ...]
  hist_noise = jax.vmap(lambda g: frame_noise(keys, g, frame_shape, cfg.ddim_steps)[1], out_axes=1)(
      jnp.arange(k - m, k, dtype=jnp.int32))                             # [B, m, ...]
  flat = lambda x: x.reshape((b * m,) + frame_shape)
  noisy_kept = noise_history(model.schedule, flat(kept), t_small, flat(hist_noise)).reshape(kept.shape)
  clean = clean.at[:, :m].set(kept)
  noisy = noisy.at[:, :m].set(noisy_kept)
  if m > 1:
    acts = acts.at[:, :m - 1].set(context_actions[:, k - m:k - 1].astype(jnp.float32))
  if scale is None:
    scale = 1.0 if cfg.guidance_scale is None else cfg.guidance_scale
  return WindowState(clean, noisy, acts, jnp.asarray(m, jnp.int32), jnp.asarray(k, jnp.int32), keys,
                     jnp.asarray(scale, jnp.float32))


def push_action(state: WindowState, action: jax.Array) -> WindowState:
  """Sets the action taken at the newest window frame (``[B, A]``): it leads to the next generated frame."""
  idx = state.count - 1
  acts = jax.lax.dynamic_update_slice_in_dim(state.actions, action[:, None].astype(jnp.float32), idx, axis=1)
  return state._replace(actions=acts)


def _shift_if_full(state: WindowState, w: int) -> WindowState:
  full = state.count >= w
  roll = lambda x: jnp.where(full, jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1), x)
  return state._replace(clean=roll(state.clean), noisy=roll(state.noisy), actions=roll(state.actions),
                        count=jnp.where(full, w - 1, state.count))


def generate_frame(model: RolloutModel, cfg: SamplerConfig, params: Params, state: WindowState
                   ) -> tuple[jax.Array, WindowState]:
  """Generates the next frame (its action must have been pushed). Returns ``(latent [B, h, w, c], new state)``.

  jit-able; the window position of the new frame is dynamic, so one compilation serves growing and sliding."""
  w = cfg.window
  taus, prevs, t_small = timestep_plan(cfg, model.schedule.num_timesteps)
  state = _shift_if_full(state, w)
  p = state.count
  b = state.clean.shape[0]
  frame_shape = state.clean.shape[2:]
  x_init, hist_noise, step_noises = frame_noise(state.keys, state.frame, frame_shape, len(taus))
  pos = jnp.arange(w)
  is_new = (pos == p)
  hist = (pos < p)
  aligned = actions_lib.align_actions(state.actions)
  mask = jnp.broadcast_to(hist | is_new, (b, w)).astype(jnp.float32)
  cond = model.cond_fn(params, state.clean[:, 0])
  sel = lambda m: m.reshape((1, w) + (1,) * len(frame_shape))

  def inputs_for(x, tau):
    lat = jnp.where(sel(is_new), x[:, None].astype(state.noisy.dtype),
                    jnp.where(sel(hist), state.noisy, 0.0))
    t = jnp.broadcast_to(jnp.where(hist, t_small, tau), (b, w)).astype(jnp.int32)
    return WindowInputs(lat, t, cond, aligned, mask, p)

  if cfg.guidance_scale is None:
    dstate = model.denoiser.init_state(params, inputs_for(x_init, taus[0]))
  elif hasattr(model.denoiser, "init_state_branches"):  # history shared by both branches: computed once
    dstate = model.denoiser.init_state_branches(params, inputs_for(x_init, taus[0]))
  else:
    dstate = model.denoiser.init_state(params, branch_inputs(inputs_for(x_init, taus[0])))

  def step(carry, xs):
    x, ds = carry
    tau, tau_prev, z = xs
    scale = None if cfg.guidance_scale is None else state.scale
    pred, ds = guided_prediction(model.denoiser, params, ds, inputs_for(x, tau), scale, cfg.guidance_rescale)
    v = jax.lax.dynamic_index_in_dim(pred, p, axis=1, keepdims=False).astype(jnp.float32)
    tb = jnp.full((b,), tau, jnp.int32)
    tpb = jnp.full((b,), tau_prev, jnp.int32)
    x, _ = ddim.ddim_step(model.schedule, x, v, tb, tpb, cfg.eta, z if cfg.eta != 0.0 else None,
                          final_alpha_one=cfg.final_alpha_one)
    return (x, ds), None

  xs = (jnp.asarray(taus), jnp.asarray(prevs), step_noises)
  (x, _), _ = jax.lax.scan(step, (x_init, dstate), xs)
  x = x.astype(state.clean.dtype)
  clean = jax.lax.dynamic_update_slice_in_dim(state.clean, x[:, None], p, axis=1)
  noisy = jax.lax.dynamic_update_slice_in_dim(
      state.noisy, noise_history(model.schedule, x, t_small, hist_noise)[:, None], p, axis=1)
  new = state._replace(clean=clean, noisy=noisy, count=p + 1, frame=state.frame + 1)
  return x, new


# ------------------------------------------------------------------------------------------------------------
# Rollouts.

def _check_inputs(context, actions, keys, horizon, window_actions_dim=None):
  if context.ndim != 5:
    raise ValueError(f"context latents must be [B, k, h, w, c], got shape {context.shape}")
  if actions.ndim != 3 or actions.shape[0] != context.shape[0]:
    raise ValueError(f"actions must be [B, N, A] with B={context.shape[0]}, got shape {actions.shape}")
  k = context.shape[1]
  if k < 1:
    raise ValueError("at least one context frame is required")
  if horizon < 1:
    raise ValueError(f"horizon must be >= 1, got {horizon}")
  need = k + horizon - 1
  if actions.shape[1] < need:
    raise ValueError(f"{k} context frames + horizon {horizon} need {need} actions (one per frame before the "
                     f"last), got {actions.shape[1]}")
  if window_actions_dim is not None and actions.shape[2] != window_actions_dim:
    raise ValueError(f"action dimension {actions.shape[2]} != model action_dim {window_actions_dim}")
  if keys.shape != (context.shape[0],):
    raise ValueError(f"keys must be one PRNG key per rollout, shape ({context.shape[0]},), got {keys.shape}")


def rollout_keys(seed_or_key, batch: int) -> jax.Array:
  """``[B]`` typed (threefry) PRNG keys, one per rollout."""
  key = jax.random.key(int(seed_or_key)) if isinstance(seed_or_key, (int, np.integer)) else seed_or_key
  return jax.random.split(key, batch)


def noise_mode():
  """Context in which every rollout function is traced and run: non-partitionable threefry.

  jax's default (partitionable) threefry sampler takes ~10x longer to compile on CPU (measured here under load:
  15 s vs 1.5 s for one ``normal`` call) and a rollout draws noise per frame. The values differ between the two
  modes, so every entry point (``rollout``, ``rollout_reference``, ``make_frame_generator``) uses this one.
  (``rbg`` keys are not an option: vmapped over a batch of keys they do not reproduce the unbatched draws.)"""
  return jax.threefry_partitionable(False)


def _rollout_impl(model: RolloutModel, cfg: SamplerConfig, horizon: int, params: Params, context: jax.Array,
                  actions: jax.Array, keys: jax.Array, progress: Callable[[Any], None] | None = None,
                  scale: jax.Array | None = None) -> jax.Array:
  k = context.shape[1]
  state = init_window(model, cfg, context, actions[:, :max(k - 1, 0)], keys, scale)
  new_actions = jnp.swapaxes(actions[:, k - 1:k - 1 + horizon], 0, 1).astype(jnp.float32)  # [H, B, A]

  def body(st, a):
    st = push_action(st, a)
    x, st = generate_frame(model, cfg, params, st)
    if progress is not None:
      jax.debug.callback(progress, st.frame, ordered=True)
    return st, x

  _, xs = jax.lax.scan(body, state, new_actions)
  return jnp.concatenate([context, jnp.swapaxes(xs, 0, 1).astype(context.dtype)], axis=1)


_JIT_CACHE = weakref.WeakKeyDictionary()   # model -> {(cfg, horizon, progress): jitted fn}


def rollout(model: RolloutModel, cfg: SamplerConfig, params: Params, context: jax.Array, actions: jax.Array,
            keys: jax.Array, *, horizon: int | None = None, progress: Callable[[Any], None] | None = None,
            guidance_scale: float | jax.Array | None = None) -> jax.Array:
  """Autoregressive rollout (jit: one compilation per (model, cfg, horizon, shapes)).

  Args:
    context: ``[B, k, h, w, c]`` context latents. actions: ``[B, N, A]``, ``actions[:, f]`` taken at frame f.
    keys: ``[B]`` PRNG keys (``rollout_keys``). horizon: new frames (default ``N - k + 1``).
    progress: optional host callback, called with the number of frames produced so far after each frame.
    guidance_scale: the guidance scale as a traced value (default ``cfg.guidance_scale``); every scale shares
      one compilation. Ignored when ``cfg.guidance_scale is None`` (conditional pass only).
  Returns:
    ``[B, k + horizon, h, w, c]``: the context followed by the generated latents.
  """
  context = jnp.asarray(context)
  actions = jnp.asarray(actions)
  if horizon is None:
    horizon = int(actions.shape[1]) - int(context.shape[1]) + 1 if actions.ndim == 3 and context.ndim == 5 else 0
  _check_inputs(context, actions, keys, horizon)
  actions = actions[:, :context.shape[1] + horizon - 1]
  cache = _JIT_CACHE.setdefault(model, {})
  key = (cfg, horizon, progress)
  fn = cache.get(key)
  if fn is None:
    fn = jax.jit(lambda p, c, a, kk, s: _rollout_impl(model, cfg, horizon, p, c, a, kk, progress, s))
    cache[key] = fn
  if guidance_scale is None:
    guidance_scale = 1.0 if cfg.guidance_scale is None else cfg.guidance_scale
  with noise_mode():
    return fn(params, context, actions, keys, jnp.float32(guidance_scale))
