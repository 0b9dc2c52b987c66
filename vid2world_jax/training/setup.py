"""Everything static about a training run (``Setup``): mesh, graphdefs, shardings, optimizer, the jitted step;
fresh or ``init_from`` state born sharded; the synthetic data source (``SyntheticClips``) and the data iterator.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vid2world_jax import param_tree, sharding, world_model

from vid2world_jax.training import optim, steps
from vid2world_jax.training.config import init_checkpoint, uses_latents


# =============================================================================================================
# Data.

class SyntheticClips:
  """Deterministic moving-square clips whose motion follows the actions (learnable, no files).

  Yields host-local ``{"frames" [B_local, T, H, W, 3] in [-1, 1], "actions" [B_local, T, A] in [-1, 1]}``;
  clip ``i`` of process ``p`` depends only on ``(seed, p, i)``. ``get_state``/``set_state`` = position.
  """

  def __init__(self, dcfg, *, process_index: int, process_count: int):
    self.b = int(dcfg.batch_size) // process_count
    self.t, self.a = int(dcfg.clip_length), int(dcfg.action_dim)
    self.h, self.w = (int(s) for s in dcfg.resolution)
    self.seed, self.proc = int(dcfg.seed), process_index
    self.pos = 0

  def _clip(self, i):
    r = np.random.default_rng([self.seed, self.proc, i])
    acts = r.uniform(-1, 1, (self.t, self.a)).astype(np.float32)
    bg, fg = r.uniform(-1, 0, 3), r.uniform(0, 1, 3)
    s = max(2, self.h // 4)
    y, x = r.uniform(0, self.h - s), r.uniform(0, self.w - s)
    frames = np.empty((self.t, self.h, self.w, 3), np.float32)
    for f in range(self.t):
      frames[f] = bg
      yi, xi = int(y), int(x)
      frames[f, yi:yi + s, xi:xi + s] = fg
      y = float(np.clip(y + acts[f, 0] * s / 2, 0, self.h - s))
      x = float(np.clip(x + acts[f, 1 % self.a] * s / 2, 0, self.w - s))
    return frames, acts

  def __iter__(self):
    return self

  def __next__(self):
    clips = [self._clip(self.pos * self.b + j) for j in range(self.b)]
    self.pos += 1
    return {"frames": np.stack([c[0] for c in clips]), "actions": np.stack([c[1] for c in clips])}

  def get_state(self):
    return {"pos": self.pos}

  def set_state(self, state):
    self.pos = int(state["pos"])


def make_data_iterator(dcfg):
  pi, pc = jax.process_index(), jax.process_count()
  if dcfg.source == "synthetic":
    return SyntheticClips(dcfg, process_index=pi, process_count=pc)
  from vid2world_jax.data import pipeline
  return pipeline.make_train_iterator(dcfg, process_index=pi, process_count=pc)


# =============================================================================================================
# Sharded initialisation.

class Setup:
  """Everything static about a run: mesh, graphdefs, shardings, optimizer, the jitted step."""

  def __init__(self, cfg, mesh):
    self.cfg, self.mesh = cfg, mesh
    mcfg = world_model.model_config(cfg)
    self.mcfg = mcfg
    seed = int(cfg.seed)
    self.tx, self.lr_schedule = optim.make_optimizer(cfg.optim, int(cfg.total_steps))
    rules = [tuple(r) for r in cfg.mesh.rules]
    min_size = int(cfg.mesh.fsdp_min_size)

    # Training from precomputed latents: the step gets the frozen encoders' outputs; no VAE / CLIP is built.
    self.encoders = not uses_latents(cfg)

    def create():
      model, frozen = world_model.build(mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1), encoders=self.encoders)
      _, params, rest = nnx.split(model, nnx.Param, ...)
      _, fstate = nnx.split(frozen)
      return nnx.to_pure_dict(params), rest, fstate

    abs_model, abs_frozen = nnx.eval_shape(lambda: world_model.build(
        mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1), encoders=self.encoders))
    self.graphdef = nnx.split(abs_model, nnx.Param, ...)[0]
    self.frozen_graphdef = nnx.split(abs_frozen)[0]
    abs_params, abs_rest, abs_fstate = jax.eval_shape(create)
    self.params_sh = sharding.tree_shardings(abs_params, mesh, rules, min_size)
    self.rest_sh = jax.tree.map(lambda _: sharding.replicated(mesh), abs_rest)
    self.frozen_sh = sharding.tree_shardings(abs_fstate, mesh, rules, min_size)
    self._create = jax.jit(create, out_shardings=(self.params_sh, self.rest_sh, self.frozen_sh))

    use_ema = cfg.optim.ema_decay > 0

    def make_state(params):
      st = {"step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed)),
            "params": params, "opt_state": self.tx.init(params)}
      if use_ema:
        st["ema"] = jax.tree.map(jnp.copy, params)
      return st

    self.abs_state = jax.eval_shape(make_state, abs_params)
    self.state_sh = sharding.tree_shardings(self.abs_state, mesh, rules, min_size)
    self._make_state = jax.jit(make_state, in_shardings=(self.params_sh,), out_shardings=self.state_sh)
    self.num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abs_params))

    from vid2world_jax.diffusion import schedules
    self.schedule = schedules.make_schedule(**mcfg.schedule.to_dict())
    step_fn = steps.make_train_step(self.graphdef, self.frozen_graphdef, cfg, self.tx, self.lr_schedule,
                                    self.schedule)
    self.abs_batch = abstract_batch(cfg, mcfg)
    self.batch_sh = {k: sharding.batch_sharding(mesh, v.ndim) for k, v in self.abs_batch.items()}
    def step_in_mesh(*args):   # traced under the mesh: activation constraints and splash's shard_map see it
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return step_fn(*args)

    self.step = jax.jit(step_in_mesh, in_shardings=(self.state_sh, self.frozen_sh, self.rest_sh, self.batch_sh),
                        out_shardings=(self.state_sh, sharding.replicated(mesh)), donate_argnums=(0,))

  def abstract_args(self):
    """Abstract (shape, dtype, sharding) arguments of the step: for AOT compilation and restore targets."""
    def attach(tree, sh):
      return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, sh)
    _, abs_rest, abs_fstate = jax.eval_shape(self._create)
    return (attach(self.abs_state, self.state_sh), attach(abs_fstate, self.frozen_sh),
            attach(abs_rest, self.rest_sh), attach(self.abs_batch, self.batch_sh))

  def init(self, init_params: dict | None = None, *, eager: bool = False):
    """Fresh (or init_from) state; parameters are created already sharded by the jitted constructor.

    ``init_params``: trainable parameters to start from instead (a pure dict of the model's exact structure and
    shapes, e.g. an earlier stage's parameters after ``init_from.transfer_params``), placed with the shardings.
    ``eager``: build the modules op by op and then place them (no constructor compilation: minutes on a busy CPU
    for the VAE + CLIP; only where one device holds the whole model, e.g. benchmarks/accelerator_check.py).
    """
    if eager:
      seed = int(self.cfg.seed)
      model, fz = world_model.build(self.mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1), encoders=self.encoders)
      _, p, rest = nnx.split(model, nnx.Param, ...)
      params, rest, frozen = jax.device_put((nnx.to_pure_dict(p), rest, nnx.split(fz)[1]),
                                            (self.params_sh, self.rest_sh, self.frozen_sh))
    else:
      params, rest, frozen = self._create()
    if init_checkpoint(self.cfg):
      from vid2world_jax.conversion import init_from
      params, frozen = init_from.load(self.cfg, self.mcfg, params, frozen, self.params_sh, self.frozen_sh)
    if init_params is not None:
      params = place_params(init_params, params, self.params_sh)
    return self._make_state(params), rest, frozen


def abstract_batch(cfg, mcfg) -> dict:
  """Global batch shapes of the step: frames + actions, or (latents source) the batch keys of
  ``steps.LATENT_KEYS`` + actions, all float32."""
  gb, t, a = int(cfg.data.batch_size), int(cfg.data.clip_length), int(cfg.data.action_dim)
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
  if not uses_latents(cfg):
    h, w = (int(s) for s in cfg.data.resolution)
    return {"frames": f32(gb, t, h, w, 3), "actions": f32(gb, t, a)}
  h, w = world_model.latent_hw(mcfg, cfg.data.resolution)
  out = {"latent_moments": f32(gb, t, h, w, world_model.latent_moments_channels(mcfg)), "actions": f32(gb, t, a)}
  if mcfg.context == "resampler":
    out["clip_image_tokens"] = f32(gb, *world_model.image_token_shape(mcfg))
  return out


def place_params(values: dict, like: dict, shardings: dict) -> dict:
  """``values`` (host arrays) put on ``shardings``; structure, shapes and dtypes must match ``like``."""
  param_tree.check_params_tree(like, values, "init_params")
  return jax.device_put(jax.tree.map(lambda v, ref: np.asarray(v, ref.dtype), values, like), shardings)
