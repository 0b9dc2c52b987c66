"""Ahead-of-time memory / FLOP plan of the train step for a target (TPU topology or fake CPU devices).

Nothing is allocated: the step is lowered from ``ShapeDtypeStruct`` arguments with shardings and compiled by the
target's own compiler (libtpu for TPU topologies from ``jax.experimental.topologies``: the TPU compiler's buffer
assignment, not an estimate). Two step kinds:

* ``"latents"``: the train step from precomputed inputs, as when training from encoded shards: batch =
  ``{"latents" [B,T,h,w,4], "clip_tokens" [B,257,1280], "actions" [B,T,A]}``; the trainable UNet + resampler
  + action encoder, AdamW and grad accumulation are the real ones; no VAE / CLIP encoder in the program.
* ``"full"``: ``train.Setup``'s step (frozen VAE + CLIP-image encoder inside the step, frames as input).

``compile_plan`` returns a dict of per-device bytes and FLOPs; ``benchmarks/memory_plan.py`` is the CLI.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
from flax import nnx

from vid2world_jax import optim, sharding, steps, world_model

GIB = 2.0 ** 30
CLIP_TOKENS, CLIP_WIDTH = 257, 1280      # OpenCLIP ViT-H/14 penultimate tokens (the resampler's input)
# Dense bf16 peak FLOP/s per chip (vendor figures) for the "step time at 40% MFU" column.
PEAK_BF16_FLOPS = {"v5e": 197e12, "v4": 275e12, "v5p": 459e12, "h100": 989e12}
HBM_GIB = {"v5e": 16, "v4": 32, "v5p": 95, "h100": 80}


def target_devices(target: str, n_cpu: int = 0):
  """Devices of ``target``: "cpu" (the process's CPU devices) or a TPU topology such as "v5p:2x2x1"."""
  if target == "cpu":
    devs = jax.devices("cpu")
    return devs[:n_cpu] if n_cpu else devs
  from jax.experimental import topologies
  return topologies.get_topology_desc(platform="tpu", topology_name=target).devices


def make_latent_loss_fn(graphdef, cfg, schedule):
  """``loss_fn(params, frozen, rest, batch, keys)`` of :func:`steps.make_loss_fn` with the VAE latents and
  CLIP-image tokens given in the batch (``frozen = {"text_context": [77, D]}``)."""
  from vid2world_jax.diffusion import actions as actions_lib
  from vid2world_jax.diffusion import diffusion_forcing

  compute_dtype = jnp.dtype(cfg.precision)
  p_drop = float(cfg.train.action_dropout_prob)
  use_actions = int(cfg.model.unet.action_dim) > 0

  def loss_fn(params, frozen, rest, batch, keys):
    if compute_dtype != jnp.float32:
      params = optim.cast_floats(params, compute_dtype)
    model = nnx.merge(graphdef, nnx.State(params), rest, copy=True)
    nnx.reseed(model, dropout=keys["dropout"])
    x0 = batch["latents"].astype(jnp.float32)
    b, t = x0.shape[:2]
    if "clip_tokens" in batch:
      img = model.resampler(batch["clip_tokens"].astype(compute_dtype))
      txt = jnp.broadcast_to(frozen["text_context"][None], (b,) + frozen["text_context"].shape).astype(img.dtype)
      context = jnp.concatenate([txt, img], axis=1)
    else:   # context "learned_null" (tiny configs)
      context = model.context(None, x0[:, 0])
    cond = {"concat": x0[:, 0].astype(compute_dtype), "context": context.astype(compute_dtype)}
    acts = mask = None
    if use_actions:
      acts = actions_lib.align_actions(batch["actions"]).astype(compute_dtype)
      mask = actions_lib.sample_action_mask(keys["action_mask"], b, t, p_drop)

    def denoise_fn(x_t, t_bt):
      return model.denoise(x_t.astype(compute_dtype), t_bt, cond, acts, mask).astype(jnp.float32)

    loss, aux = diffusion_forcing.diffusion_forcing_loss(denoise_fn, schedule, x0, keys["noise"])
    return loss, {"bucket_loss_sum": aux["bucket_loss_sum"], "bucket_count": aux["bucket_count"]}

  return loss_fn


def _attach(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def latent_step(cfg, mesh):
  """``(jitted step, abstract args, trainable params)`` of the latent-input train step."""
  from vid2world_jax import train
  from vid2world_jax.diffusion import schedules
  mcfg = train.model_config(cfg)
  rules = [tuple(r) for r in cfg.mesh.rules]
  min_size = int(cfg.mesh.fsdp_min_size)
  tx, lr_schedule = optim.make_optimizer(cfg.optim, int(cfg.total_steps))
  seed = int(cfg.seed)

  def create():
    model = world_model.WorldModel(mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    return nnx.split(model, nnx.Param, ...)

  from vid2world_jax.models import tracing
  with tracing.cheap_tracer_errors():
    graphdef, abs_params, abs_rest = nnx.eval_shape(create)
  abs_params, abs_rest = nnx.to_pure_dict(abs_params), abs_rest
  params_sh = sharding.tree_shardings(abs_params, mesh, rules, min_size)
  abs_state = jax.eval_shape(lambda p: {"step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(
      jax.random.key(0)), "params": p, "opt_state": tx.init(p)}, abs_params)
  state_sh = sharding.tree_shardings(abs_state, mesh, rules, min_size)
  rest_sh = jax.tree.map(lambda _: sharding.replicated(mesh), abs_rest)
  d = int(mcfg.unet.context_dim)
  abs_frozen = {"text_context": jax.ShapeDtypeStruct((77, d), jnp.float32)}
  frozen_sh = {"text_context": sharding.replicated(mesh)}
  h, w = world_model.latent_hw(mcfg, cfg.data.resolution)
  gb, t, a = int(cfg.data.batch_size), int(cfg.data.clip_length), int(cfg.data.action_dim)
  abs_batch = {"latents": jax.ShapeDtypeStruct((gb, t, h, w, world_model.latent_channels(mcfg)), jnp.float32),
               "actions": jax.ShapeDtypeStruct((gb, t, a), jnp.float32)}
  if mcfg.context == "resampler":
    abs_batch["clip_tokens"] = jax.ShapeDtypeStruct((gb, CLIP_TOKENS, CLIP_WIDTH), jnp.float32)
  batch_sh = {k: sharding.batch_sharding(mesh, v.ndim) for k, v in abs_batch.items()}
  schedule = schedules.make_schedule(**mcfg.schedule.to_dict())
  loss_fn = make_latent_loss_fn(graphdef, cfg, schedule)
  step_fn = steps.make_train_step(graphdef, None, cfg, tx, lr_schedule, schedule, loss_fn=loss_fn)
  step = jax.jit(step_fn, in_shardings=(state_sh, frozen_sh, rest_sh, batch_sh),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
  args = (_attach(abs_state, state_sh), _attach(abs_frozen, frozen_sh), _attach(abs_rest, rest_sh),
          _attach(abs_batch, batch_sh))
  return step, args, sum(math.prod(x.shape) for x in jax.tree.leaves(abs_params))


def full_step(cfg, mesh):
  from vid2world_jax import train
  setup = train.Setup(cfg, mesh)
  return setup.step, setup.abstract_args(), setup.num_params


def compile_plan(cfg, mesh, kind: str = "latents") -> dict:
  """Compile the step for ``mesh``'s devices and return per-device memory (GiB) and FLOPs."""
  t0 = time.time()
  build = {"latents": latent_step, "full": full_step}[kind]
  step, args, n_params = build(cfg, mesh)
  with jax.set_mesh(mesh):                      # activation constraints / splash shard_map see the mesh
    compiled = step.lower(*args).compile()
  ma = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  arg_b, out_b = ma.argument_size_in_bytes, ma.output_size_in_bytes
  alias_b, temp_b = ma.alias_size_in_bytes, ma.temp_size_in_bytes
  peak = getattr(ma, "peak_memory_in_bytes", 0) or (arg_b + out_b - alias_b + temp_b)
  host_temp = getattr(ma, "host_temp_size_in_bytes", 0)
  return {"kind": kind, "trainable_params": int(n_params), "devices": int(mesh.devices.size),
          "mesh": {k: int(v) for k, v in mesh.shape.items()},
          "arguments_gib": arg_b / GIB, "outputs_gib": out_b / GIB, "aliased_gib": alias_b / GIB,
          "temporaries_gib": temp_b / GIB, "host_temporaries_gib": host_temp / GIB, "peak_gib": peak / GIB,
          "flops_per_device": float(cost.get("flops", 0.0)) if cost else 0.0, "compile_s": time.time() - t0}


def step_time_at_mfu(flops_per_device: float, chip: str, mfu: float = 0.4) -> float | None:
  """Seconds per step if every device ran ``flops_per_device`` at ``mfu`` of its bf16 peak."""
  peak = PEAK_BF16_FLOPS.get(chip)
  return flops_per_device / (peak * mfu) if peak and flops_per_device else None


def chip_of(target: str) -> str:
  return target.split(":")[0] if target != "cpu" else "cpu"
