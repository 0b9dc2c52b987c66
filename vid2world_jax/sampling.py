"""A trained world model ready to sample, with the guidance scale as a traced value.

* ``GuidanceDenoiser``: causal action guidance whose scale is read from the parameters tuple (a traced scalar),
  so one compilation serves every scale (a guidance sweep, a shuffled-actions control and the main evaluation);
  scale 1 is exactly "no guidance" (the guided combination returns the conditional prediction bit-exactly and
  the CFG rescale ratio is 1).
* ``nar_sample``: non-autoregressive sampling (the paper's Vid2World-NAR): all generated frames denoised jointly
  with one shared timestep (a pure function of its inputs).
* ``WorldModelRunner``: encode / decode, autoregressive rollout (``rollout.rollout``) and NAR sampling of one
  set of world-model parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vid2world_jax import rollout as rl
from vid2world_jax.diffusion import guidance as guidance_lib


@dataclasses.dataclass(frozen=True, eq=False)
class GuidanceDenoiser:
  """Causal action guidance with the scale read from ``params[2]`` (a traced scalar): one compilation serves
  every scale. Rows ``[:B]`` conditional, ``[B:]`` the newest frame's action dropped (rollout.branch_inputs)."""
  fn: Callable
  rescale: float

  def init_state(self, params, inputs):
    del params, inputs
    return ()

  def __call__(self, params, state, inputs):
    both = rl.branch_inputs(inputs)
    out = self.fn(params, both.latents, both.t, both.cond, both.actions, both.action_mask)
    cond, uncond = guidance_lib.split_branches(out)
    valid = jnp.arange(inputs.latents.shape[1]) <= inputs.new_index
    return rl.combine_guidance(cond, uncond, params[2], self.rescale, valid), state


def nar_sample(base: rl.RolloutModel, scfg: rl.SamplerConfig, params, ctx: jax.Array, actions: jax.Array,
               scale: jax.Array, key: jax.Array, t_frames: int, rescale: float) -> jax.Array:
  """Non-autoregressive sampling: frames 1..T-1 denoised JOINTLY with one shared timestep; frame 0 is the given
  context latent ``ctx [B, h, w, c]`` at the fixed history level t_small (noise drawn once); the guidance's
  unconditional pass drops the actions of the generated frames. ``params``: the world model's
  ``(state, frozen state)``. Returns ``[B, T, h, w, c]``."""
  from vid2world_jax.diffusion import actions as actions_lib  # pylint: disable=import-outside-toplevel
  from vid2world_jax.diffusion import ddim  # pylint: disable=import-outside-toplevel
  sch = base.schedule
  taus, prevs, t_small = rl.timestep_plan(scfg, sch.num_timesteps)
  b = ctx.shape[0]
  cond = base.cond_fn(params, ctx)
  k0, k1, k2 = jax.random.split(key, 3)
  hist = rl.noise_history(sch, ctx, t_small, jax.random.normal(k0, ctx.shape))
  x = jax.random.normal(k1, (b, t_frames - 1) + ctx.shape[1:])
  acts = actions_lib.align_actions(actions[:, :t_frames])
  ones = jnp.ones((b, t_frames), jnp.float32)
  unc = ones.at[:, 1:].set(0.0)
  cond2 = guidance_lib.stack_branches(cond, cond)
  acts2 = guidance_lib.stack_branches(acts, acts)
  mask2 = guidance_lib.stack_branches(ones, unc)
  noises = jax.random.normal(k2, (len(taus),) + x.shape)

  def step(x, xs):
    tau, tp, z = xs
    lat = jnp.concatenate([hist[:, None], x], axis=1)
    t = jnp.concatenate([jnp.full((b, 1), t_small, jnp.int32), jnp.full((b, t_frames - 1), tau, jnp.int32)], 1)
    out = base.denoiser.fn(params, guidance_lib.stack_branches(lat, lat), guidance_lib.stack_branches(t, t),
                           cond2, acts2, mask2)
    c, u = guidance_lib.split_branches(out)
    pred = rl.combine_guidance(c, u, scale, rescale)[:, 1:]
    x, _ = ddim.ddim_step(sch, x, pred, jnp.full((b,), tau, jnp.int32), jnp.full((b,), tp, jnp.int32),
                          scfg.eta, z if scfg.eta != 0.0 else None, final_alpha_one=scfg.final_alpha_one)
    return x, None

  x, _ = jax.lax.scan(step, x, (jnp.asarray(taus), jnp.asarray(prevs), noises))
  return jnp.concatenate([ctx[:, None], x], axis=1)


class WorldModelRunner:
  """A trained world model ready to sample: encode/decode, AR rollout (traced guidance scale), NAR sampling.

  ``mcfg``: the model config (``train.model_config``); ``params``: the trained parameters as a pure dict;
  ``scfg``: the sampler settings (its ``guidance_scale`` is unused: the scale is an argument of each call and
  ``scfg.guidance_rescale`` is the CFG rescale phi); ``seed``: the model-construction seed (only non-parameter
  state such as RNG streams depends on it).
  """

  def __init__(self, mcfg, params: dict, scfg: rl.SamplerConfig, *, seed: int = 0):
    from vid2world_jax import world_model  # pylint: disable=import-outside-toplevel
    self.mcfg, self.scfg = mcfg, scfg
    self.rescale = float(scfg.guidance_rescale)
    wm, fs = world_model.build(mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    g, pst, rest = nnx.split(wm, nnx.Param, ...)
    nnx.replace_by_pure_dict(pst, params)
    wm = nnx.merge(g, pst, rest)
    self.graphdef, self.state = nnx.split(wm)
    self.fgraph, self.fstate = nnx.split(fs)
    self.base = rl.world_model_rollout_model(mcfg, self.graphdef, self.fgraph)
    self.model = rl.RolloutModel(denoiser=GuidanceDenoiser(self.base.denoiser.fn, self.rescale),
                                 cond_fn=self.base.cond_fn, schedule=self.base.schedule)
    fg, fst = self.fgraph, self.fstate
    self.encode_raw = lambda x: nnx.merge(fg, fst).encode(x, jax.random.key(0))  # [-1, 1] frames -> latents
    self.decode_raw = lambda z: nnx.merge(fg, fst).decode(z)                      # latents -> [-1, 1] frames
    self._encode = jax.jit(self.encode_raw)
    self._decode = jax.jit(self.decode_raw)
    self._nar = None
    self._cached = None

  def encode(self, frames_pm1: np.ndarray) -> jax.Array:
    return self._encode(jnp.asarray(frames_pm1, jnp.float32))

  def decode01(self, latents) -> np.ndarray:
    return np.clip((np.asarray(self._decode(latents)) + 1.0) / 2.0, 0.0, 1.0)

  def rollout(self, context_latents, actions, scale: float, seed: int, horizon: int) -> jax.Array:
    """AR rollout ``[B, k + horizon, h, w, c]`` from context latents and raw actions ``[B, >= k+horizon-1, A]``."""
    keys = rl.rollout_keys(int(seed), context_latents.shape[0])
    params = (self.state, self.fstate, jnp.float32(scale))
    return rl.rollout(self.model, self.scfg, params, context_latents, jnp.asarray(actions, jnp.float32), keys,
                      horizon=horizon)

  def cached_model(self, scale: float) -> tuple[rl.RolloutModel, rl.SamplerConfig, Any]:
    """``(model, sampler, params)`` of the cached fast path at a fixed guidance ``scale`` (strictly causal UNet
    only, ValueError otherwise): the same frames as ``rollout`` up to float error (``rollout.CachedDenoiser``),
    each DDIM step running the network on the new frame only."""
    if self._cached is None:
      self._cached = rl.world_model_rollout_model(self.mcfg, self.graphdef, self.fgraph, cached=True)
    return self._cached, dataclasses.replace(self.scfg, guidance_scale=float(scale)), (self.state, self.fstate)

  def rollout_cached(self, context_latents, actions, scale: float, seed: int, horizon: int) -> jax.Array:
    """``rollout`` on the cached fast path (``cached_model``)."""
    model, scfg, params = self.cached_model(scale)
    keys = rl.rollout_keys(int(seed), context_latents.shape[0])
    return rl.rollout(model, scfg, params, context_latents, jnp.asarray(actions, jnp.float32), keys, horizon=horizon)

  def nar_sample(self, context_latent, actions, scale: float, seed: int, frames: int) -> jax.Array:
    """``nar_sample`` of these parameters from ``context_latent [B, h, w, c]``: ``[B, frames, h, w, c]``."""
    if self._nar is None:
      self._nar = jax.jit(
          lambda ctx, acts, s, key, t: nar_sample(self.base, self.scfg, (self.state, self.fstate), ctx, acts, s,
                                                  key, t, self.rescale),
          static_argnums=(4,))
    return self._nar(jnp.asarray(context_latent), jnp.asarray(actions, jnp.float32), jnp.float32(scale),
                     jax.random.key(int(seed)), int(frames))
