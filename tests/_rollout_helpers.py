"""Shared tiny world models for the rollout / guidance / env / policy tests (not a test file itself)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vid2world_jax import rollout as rl


def tiny_model_config(arch: str = "toy", window: int = 4, action_dim: int = 3, hw=(8, 8)):
  """``config.model`` of a toy world model: 8x8 RGB frames -> patchify(2) -> latents [4, 4, 12]."""
  import sys, os
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
  import base  # configs/base.py
  c = base.get_base_config()
  m = c.model
  m.arch = arch
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
  model = rl.world_model_rollout_model(c.model, g, fg)
  return model, (s, fsd), c


def random_inputs(batch=2, k=1, horizon=3, action_dim=3, seed=0, latent=(4, 4, 12)):
  rng = np.random.default_rng(seed)
  ctx = jnp.asarray(rng.normal(size=(batch, k) + latent).astype(np.float32))
  acts = jnp.asarray(rng.normal(size=(batch, k + horizon - 1, action_dim)).astype(np.float32))
  return ctx, acts
