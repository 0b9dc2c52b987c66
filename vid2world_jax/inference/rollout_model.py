"""The rollout model: the network seam of the sampler (``WindowDenoiser``: ``FnDenoiser`` runs the full window,
``CachedDenoiser`` the cached fast path over ``models.frame_cache``) and its adapter for the trained world model
(``world_model_rollout_model``), which refuses a UNet that is not strictly causal in time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from vid2world_jax.diffusion import guidance as guidance_lib
from vid2world_jax.diffusion.schedules import Schedule

Params = Any
Cond = dict


# ------------------------------------------------------------------------------------------------------------
# The network seam.

class WindowInputs(NamedTuple):
  """One network call on a window (batch ``N`` = B, or 2B with guidance)."""
  latents: jax.Array      # [N, W, h, w, c] noisy history + the new frame at ``new_index`` (+ zero padding after)
  t: jax.Array            # [N, W] int32 per-frame timesteps
  cond: Cond              # {"concat": [N, h, w, c], "context": [N, L, D], ...} from the window's first frame
  actions: jax.Array      # [N, W, A] aligned (shifted right) actions
  action_mask: jax.Array  # [N, W] float32, 1 = action present
  new_index: jax.Array    # [] int32, window position of the frame being generated


class WindowDenoiser(Protocol):
  """Per-step network call. ``init_state`` once per new frame, ``__call__`` once per DDIM step.

  Optional: ``init_state_branches(params, inputs [B rows])``, used with guidance instead of
  ``init_state(params, branch_inputs(inputs))`` (a denoiser whose state only depends on the history can compute
  it once for both branches, see ``CachedDenoiser``)."""

  def init_state(self, params: Params, inputs: WindowInputs) -> Any:
    ...

  def __call__(self, params: Params, state: Any, inputs: WindowInputs) -> tuple[jax.Array, Any]:
    """Returns ``(prediction [N, W, h, w, c] in the schedule's parameterisation, new state)``."""
    ...


@dataclasses.dataclass(frozen=True, eq=False)
class FnDenoiser:
  """Stateless default: ``fn(params, latents, t, cond, actions, action_mask) -> [N, W, h, w, c]`` on the whole
  window (e.g. ``WorldModel.denoise``)."""
  fn: Callable[..., jax.Array]

  def init_state(self, params, inputs):
    del params, inputs
    return ()

  def __call__(self, params, state, inputs):
    out = self.fn(params, inputs.latents, inputs.t, inputs.cond, inputs.actions, inputs.action_mask)
    return out, state


@dataclasses.dataclass(frozen=True, eq=False)
class CachedDenoiser:
  """Cached fast path (causal models only): the history is run through the network ONCE per new frame, every
  DDIM step then runs the network on the new frame only (plus cache reads).

  ``fill(params, latents [N, W-1, ...], t [N, W-1], cond, actions [N, W-1, A], mask [N, W-1], new_index, window)
  -> (out [N, W-1, h, w, c], cache)``: full forward on the window buffer without its last slot (history positions
  are ``< new_index <= W-1``; later slots are ignored by causality) recording what the new frame reads
  (``models.frame_cache``, fill mode). ``step(params, cache, latents [N, 1, ...], t [N, 1], cond, actions [N, 1, A],
  mask [N, 1], new_index, window) -> [N, 1, h, w, c]`` (step mode).

  State = ``(history outputs [N, W-1, ...] (zero at positions >= new_index), cache)``. The history outputs are
  constant across DDIM steps and are returned with the new frame's output at ``new_index`` (the guidance rescale
  takes its statistics over all valid window frames); window positions after the new frame are zeros. Cost per
  frame: one forward on ``W-1`` frames + one single-frame forward per DDIM step (vs a ``W``-frame forward per
  step), the same at every history length (the window buffer has a fixed size). With guidance the history pass
  runs on the B conditional rows only (``init_state_branches``)."""
  fill: Callable[..., tuple[jax.Array, Any]]
  step: Callable[..., jax.Array]

  def init_state(self, params, inputs):
    w = inputs.latents.shape[1]
    hist = lambda x: x[:, :w - 1]
    out, cache = self.fill(params, hist(inputs.latents), hist(inputs.t), inputs.cond, hist(inputs.actions),
                           hist(inputs.action_mask), inputs.new_index, w)
    valid = (jnp.arange(w - 1) < inputs.new_index).reshape((1, w - 1) + (1,) * (out.ndim - 2))
    return jnp.where(valid, out, 0.0), cache

  def init_state_branches(self, params, inputs):
    """``init_state`` of ``branch_inputs(inputs)`` (``[B] -> [2B]`` rows) at half the cost: the two guidance
    branches differ only in the new frame's action mask, so their history (and hence the cache) is the same;
    it is computed on the B conditional rows and duplicated."""
    state = self.init_state(params, inputs)
    return jax.tree.map(lambda x: guidance_lib.stack_branches(x, x), state)

  def __call__(self, params, state, inputs):
    hist_out, cache = state
    w, p = inputs.latents.shape[1], inputs.new_index
    at = lambda x: jax.lax.dynamic_slice_in_dim(x, p, 1, axis=1)
    new = self.step(params, cache, at(inputs.latents), at(inputs.t), inputs.cond, at(inputs.actions),
                    at(inputs.action_mask), p, w)
    pred = jnp.concatenate([hist_out, jnp.zeros_like(hist_out[:, :1])], axis=1)
    pred = jax.lax.dynamic_update_slice_in_dim(pred, new.astype(pred.dtype), p, axis=1)
    return pred, state


@dataclasses.dataclass(frozen=True, eq=False)
class RolloutModel:
  """What a rollout needs besides the sampler settings.

  ``denoiser``: the network seam. ``cond_fn(params, first_latent [B, h, w, c]) -> cond dict`` (concat latent,
  context tokens, ...; every leaf with a leading batch dim). ``schedule``: the diffusion schedule (parameterisation
  and dynamic rescale as in training). ``window_fn(params, latents, t, cond, actions, mask)``: the network on a
  whole window (default: ``denoiser.fn`` of an ``FnDenoiser``); non-autoregressive sampling and the reference
  use it, so a cached model serves them too.
  """
  denoiser: WindowDenoiser
  cond_fn: Callable[[Params, jax.Array], Cond]
  schedule: Schedule
  window_fn: Callable[..., jax.Array] | None = None

  def full_window(self) -> Callable[..., jax.Array]:
    """The whole-window network call (``window_fn``, else the ``FnDenoiser``'s function)."""
    if self.window_fn is not None:
      return self.window_fn
    if isinstance(self.denoiser, FnDenoiser):
      return self.denoiser.fn
    raise ValueError(f"this rollout model has no whole-window network call ({type(self.denoiser).__name__} "
                     "without window_fn)")


# ------------------------------------------------------------------------------------------------------------
# Adapter for the trained world model (vid2world_jax.world_model).

CACHED_MODES = ("auto", "on", "off")


def cacheable(model_cfg) -> bool:
  """True when the cached fast path can run this model exactly: a UNet that is strictly causal in time (the answer
  of its modules, ``models.frame_cache.noncausal_reasons``, built abstractly)."""
  if model_cfg.get("arch", "unet") != "unet":
    return False
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from vid2world_jax.models import frame_cache, unet  # pylint: disable=import-outside-toplevel
  return not frame_cache.noncausal_reasons(nnx.eval_shape(lambda: unet.build(model_cfg.unet, rngs=nnx.Rngs(0))))


def resolve_cached(mode, model_cfg, single_pass: bool = False) -> bool:
  """``eval.cached_rollout`` -> whether a session runs the cached fast path: "auto" (the default) = whenever the
  model is cacheable (the same frames, faster) and its sampler makes more than one network pass per frame
  (``single_pass``: one DDIM step, no guidance pass, where the cache's history pass + new-frame pass cost as much
  as the one full-window pass, measured slower: 28.6 vs 32.1 frames/s, docs/speed.md); "on" = always (an error
  for a model that is not), "off" = never."""
  mode = str(mode).lower()
  if mode in ("true", "1"):
    mode = "on"
  if mode in ("false", "0"):
    mode = "off"
  if mode not in CACHED_MODES:
    raise ValueError(f"eval.cached_rollout must be one of {CACHED_MODES}, got {mode!r}")
  if mode == "auto":
    return not single_pass and cacheable(model_cfg)
  return mode == "on"


def check_causal_unet(ucfg) -> None:
  """Raises ValueError if the UNet is not strictly causal in time (padded windows would then leak). The answer
  comes from the modules themselves (``models.frame_cache.noncausal_reasons``: each temporal conv and temporal
  transformer says what blocks it), built abstractly from ``ucfg`` (no parameters are allocated); the cached
  path asks the same modules at run time."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from vid2world_jax.models import frame_cache, unet  # pylint: disable=import-outside-toplevel
  problems = frame_cache.noncausal_reasons(nnx.eval_shape(lambda: unet.build(ucfg, rngs=nnx.Rngs(0))))
  if problems:
    shown = "; ".join(problems[:4]) + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
    raise ValueError("the rollout needs a strictly causal UNet (fixed-size windows are zero-padded while they "
                     "grow): " + shown + ". Pass allow_noncausal=True to run anyway.")


def world_model_rollout_model(model_cfg, graphdef, frozen_graphdef, schedule: Schedule | None = None, *,
                              allow_noncausal: bool = False, cached: bool = False) -> RolloutModel:
  """``RolloutModel`` for ``world_model.build``'s (WorldModel, FrozenStage), split with ``nnx.split``.

  ``params`` of the rollout is then ``(world_model_state, frozen_state)``. The concat latent is the window's first
  frame; the context comes from ``WorldModel.context`` on that frame decoded to pixels (only computed for a
  CLIP/resampler context; the learned null context ignores it).

  ``cached=True``: the cached fast path (``CachedDenoiser`` over ``models.frame_cache``): same outputs, each DDIM
  step runs the UNet on the new frame only. Needs ``arch="unet"`` and a strictly causal UNet (ValueError
  otherwise; ``allow_noncausal`` does not apply: a non-causal model cannot be cached).
  """
  from flax import nnx  # local: keep the pure pieces importable without flax
  from vid2world_jax.diffusion import schedules as schedules_lib

  is_unet = model_cfg.get("arch", "unet") == "unet"
  if cached and not is_unet:
    raise ValueError(f"cached rollout needs model.arch='unet', got {model_cfg.get('arch')!r}")
  if is_unet and (cached or not allow_noncausal):
    try:
      check_causal_unet(model_cfg.unet)
    except ValueError as e:
      if not cached:
        raise
      raise ValueError("cached rollout: " + str(e).split(". Pass allow_noncausal")[0] + " (the cached path "
                       "cannot run a non-causal model; use cached=False)") from None
  if schedule is None:
    schedule = schedules_lib.make_schedule(**dict(model_cfg.schedule))
  decode_for_context = model_cfg.get("context", "learned_null") != "learned_null"

  def denoise(params, lat, t, cond, acts, mask, cache=None):
    wm = nnx.merge(graphdef, params[0])
    wm.eval()  # inference: dropout off (also keeps RNG streams untouched inside the scans)
    return wm.denoise(lat, t, cond, acts, mask, cache=cache)

  def cond_fn(params, first_latent):
    wm = nnx.merge(graphdef, params[0])
    fs = nnx.merge(frozen_graphdef, params[1])
    if decode_for_context:
      pixels = fs.decode(first_latent[:, None])[:, 0]
    else:
      pixels = None
    if pixels is None:
      ctx = wm.context(fs, first_latent)  # learned null context: the frame is not used
    else:
      ctx = wm.context(fs, pixels)
    return {"concat": first_latent, "context": ctx}

  if not cached:
    return RolloutModel(denoiser=FnDenoiser(denoise), cond_fn=cond_fn, schedule=schedule, window_fn=denoise)

  from vid2world_jax.models.frame_cache import FrameCache

  def fill(params, lat, t, cond, acts, mask, new_index, window):
    cache = FrameCache.for_fill(new_index, window)
    out = denoise(params, lat, t, cond, acts, mask, cache=cache)
    return out, cache.entries

  def step(params, cache, lat, t, cond, acts, mask, new_index, window):
    return denoise(params, lat, t, cond, acts, mask, cache=FrameCache.for_step(cache, new_index, window))

  return RolloutModel(denoiser=CachedDenoiser(fill, step), cond_fn=cond_fn, schedule=schedule, window_fn=denoise)
