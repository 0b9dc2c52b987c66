"""Non-autoregressive sampling (the paper's Vid2World-NAR): all generated frames denoised jointly with one
shared timestep, a pure function of its inputs (``inference.InferenceSession.sample_nar`` runs it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vid2world_jax.inference import sampler as rl

from vid2world_jax.inference import rollout_model
from vid2world_jax.diffusion import guidance as guidance_lib


def nar_sample(base: rollout_model.RolloutModel, scfg: rl.SamplerConfig, params, ctx: jax.Array, actions: jax.Array,
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
    out = base.full_window()(params, guidance_lib.stack_branches(lat, lat), guidance_lib.stack_branches(t, t),
                           cond2, acts2, mask2)
    c, u = guidance_lib.split_branches(out)
    pred = guidance_lib.causal_action_guidance(c, u, scale, rescale)[:, 1:]
    x, _ = ddim.ddim_step(sch, x, pred, jnp.full((b,), tau, jnp.int32), jnp.full((b,), tp, jnp.int32),
                          scfg.eta, z if scfg.eta != 0.0 else None, final_alpha_one=scfg.final_alpha_one)
    return x, None

  x, _ = jax.lax.scan(step, x, (jnp.asarray(taus), jnp.asarray(prevs), noises))
  return jnp.concatenate([ctx[:, None], x], axis=1)
