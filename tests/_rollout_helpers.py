"""Shared tiny world models for the rollout / guidance / env / policy tests (not a test file itself)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vid2world_jax.inference import sampler as rl

from vid2world_jax.inference import rollout_model


def tiny_model_config(arch: str = "toy", window: int = 4, action_dim: int = 3, hw=(8, 8)):
  """``config.model`` of a toy world model: 8x8 RGB frames -> patchify(2) -> latents [4, 4, 12]."""
  import sys, os
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
  import base  # configs/base.py
  c = base.get_base_config()
  m = c.model
  m.arch = arch
  if arch == "unet":  # GroupNorm(32) needs >= 32 channels
    m.unet = base.tiny_unet_config(channels=32, in_channels=24, out_channels=12, frames=window,
                                   action_dim=action_dim, context_dim=8, num_head_channels=16)
  else:
    m.unet = base.tiny_unet_config(channels=8, in_channels=24, out_channels=12, frames=window,
                                   action_dim=action_dim, context_dim=8)
  m.context_len = 2
  m.first_stage = "patchify"
  m.patch_size = 2
  c.data.resolution = list(hw)
  c.data.action_dim = action_dim
  return c


def build_world_model(arch: str = "toy", window: int = 4, action_dim: int = 3, seed: int = 0,
                      output_scale: float = 1.0):
  """(RolloutModel, params, config) of a randomly initialised tiny causal world model."""
  from vid2world_jax import world_model
  c = tiny_model_config(arch, window, action_dim)
  wm, fs = world_model.build(c.model, rngs=nnx.Rngs(seed))
  if output_scale != 1.0:  # make the random net's output matter (zero-init output layers otherwise)
    st = nnx.state(wm, nnx.Param)
    st = jax.tree.map(lambda x: x * output_scale, st)
    nnx.update(wm, st)
  g, s = nnx.split(wm)
  fg, fsd = nnx.split(fs)
  model = rollout_model.world_model_rollout_model(c.model, g, fg)
  return model, (s, fsd), c


def random_inputs(batch=2, k=1, horizon=3, action_dim=3, seed=0, latent=(4, 4, 12)):
  rng = np.random.default_rng(seed)
  ctx = jnp.asarray(rng.normal(size=(batch, k) + latent).astype(np.float32))
  acts = jnp.asarray(rng.normal(size=(batch, k + horizon - 1, action_dim)).astype(np.float32))
  return ctx, acts


# ------------------------------------------------------------------------------------------------------------
# A cheap causal stand-in network (TEST DOUBLE, not a model): compiles in well under a second, so the rollout
# machinery (scans, windows, guidance, RNG) is tested quickly. Same signature as WorldModel.denoise.

LATENT = (4, 4, 12)


def standin_params(action_dim: int = 3, c: int = LATENT[-1], seed: int = 0, ctx_dim: int = 8):
  r = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(r.normal(size=s).astype(np.float32) / np.sqrt(s[0]))
  return {"w_in": f(c, 16), "w_cat": f(c, 16), "w_t": f(8, 16), "w_a": f(action_dim, 16), "b_a": f(1, 16)[0],
          "w_ctx": f(ctx_dim, 16), "w_out": f(16, c), "null_ctx": f(2, ctx_dim)}


def standin_denoise(params, lat, t, cond, actions, mask):
  """Causal in time: per-frame features plus a running (cumulative) mean over earlier frames."""
  freqs = jnp.exp(-jnp.arange(4, dtype=jnp.float32))
  ang = t.astype(jnp.float32)[..., None] / 100.0 * freqs
  temb = jnp.concatenate([jnp.cos(ang), jnp.sin(ang)], -1) @ params["w_t"]                 # [N, T, 16]
  aemb = (actions @ params["w_a"] + params["b_a"]) * mask[..., None]                        # [N, T, 16]
  ctx = cond["context"].mean(axis=1) @ params["w_ctx"]                                     # [N, 16]
  h = lat @ params["w_in"] + (cond["concat"] @ params["w_cat"])[:, None]
  h = h + (temb + aemb + ctx[:, None])[:, :, None, None]
  run = jnp.cumsum(h, axis=1) / jnp.arange(1, h.shape[1] + 1, dtype=h.dtype)[None, :, None, None, None]
  return jnp.tanh(h + run) @ params["w_out"]


def standin_cond(params, first_latent):
  b = first_latent.shape[0]
  return {"concat": first_latent, "context": jnp.broadcast_to(params["null_ctx"][None], (b, 2, 8))}


def standin_model():
  from vid2world_jax.diffusion import schedules
  sched = schedules.schedule_for_variant("512")
  return rollout_model.RolloutModel(denoiser=rollout_model.FnDenoiser(standin_denoise), cond_fn=standin_cond, schedule=sched)


def write_toy_checkpoint(workdir, step: int = 5, seed: int = 3):
  """A training-format checkpoint (<workdir>/checkpoints/<step>/state with 'params') of configs/test_tiny.py:toy."""
  import os
  import orbax.checkpoint as ocp
  from configs import test_tiny
  from vid2world_jax import world_model
  cfg = test_tiny.get_config("toy")
  wm, _ = world_model.build(cfg.model, rngs=nnx.Rngs(params=seed, dropout=1))
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(wm, nnx.Param)))
  path = os.path.join(str(workdir), "checkpoints", str(step), "state")
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(path, {"params": params, "step": np.int32(step)})
  ckpt.wait_until_finished()
  return cfg


# ------------------------------------------------------------------------------------------------------------
# Inference sessions of tiny world models (8x8 RGB frames, window 4).

def random_pure_params(model_cfg, seed: int = 1):
  """Every trainable parameter of ``world_model.build(model_cfg)`` drawn at random (zero-inits included, so every
  path influences the output), as a pure dict of numpy arrays (built abstractly: no eager initialisation)."""
  from vid2world_jax import world_model
  abs_wm, _ = nnx.eval_shape(lambda: world_model.build(model_cfg, rngs=nnx.Rngs(0)))
  pure = nnx.to_pure_dict(nnx.state(abs_wm, nnx.Param))
  r = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (r.standard_normal(x.shape) / np.sqrt(x.shape[0] if x.ndim else 1))
                      .astype(np.float32), pure)


def tiny_session(arch: str = "toy", window: int = 4, action_dim: int = 3, seed: int = 1, sampler=None,
                 cached: bool = False, context_frames: int = 1):
  """``inference.InferenceSession`` of a randomised tiny causal world model (2 DDIM steps, eta 1, rescale 0.7)."""
  from vid2world_jax import inference
  c = tiny_model_config(arch, window, action_dim)
  if arch == "unet":  # one level: the nested-scan rollouts compile quickly
    c.model.unet.channel_mult = [1]
    c.model.unet.attention_resolutions = [1]
  c.eval.context_frames = context_frames
  sampler = sampler or rl.SamplerConfig(ddim_steps=2, eta=1.0, guidance_scale=1.0, guidance_rescale=0.7,
                                        window=window)
  return inference.InferenceSession.from_params(c, random_pure_params(c.model, seed), sampler=sampler,
                                                cached=cached)
