"""Ahead-of-time memory / FLOP plan of the train step for a target (TPU topology or fake CPU devices).

Nothing is allocated: the step is lowered from ``ShapeDtypeStruct`` arguments with shardings and compiled by the
target's own compiler (libtpu for TPU topologies from ``jax.experimental.topologies``: the TPU compiler's buffer
assignment, not an estimate). Two step kinds:

* ``"latents"``: the train step from precomputed encoder outputs (``data.source="latents"``, as when training
  from encoded shards): batch = ``{"latent_moments" [B,T,h,w,8], "clip_image_tokens" [B,257,1280], "actions"}``;
  the trainable UNet + resampler + action encoder, AdamW and grad accumulation are the real ones; no VAE / CLIP
  encoder in the program.
* ``"full"``: ``training.setup.Setup``'s step (frozen VAE + CLIP-image encoder inside the step, frames as input).

``compile_plan`` returns a dict of per-device bytes and FLOPs; ``benchmarks/memory_plan.py`` is the CLI.
"""

from __future__ import annotations

import math
import time

import jax
import ml_collections

GIB = 2.0 ** 30
# Dense bf16 peak FLOP/s per chip (vendor figures) for the "step time at 40% MFU" column.
PEAK_BF16_FLOPS = {"v5e": 197e12, "v4": 275e12, "v5p": 459e12, "h100": 989e12}
HBM_GIB = {"v5e": 16, "v4": 32, "v5p": 95, "h100": 80}


def target_devices(target: str, n_cpu: int = 0):
  """Devices of ``target``: "cpu" (the process's CPU devices) or a TPU topology such as "v5p:2x2x1"."""
  if target == "cpu":
    devs = jax.devices("cpu")
    return devs[:n_cpu] if n_cpu else devs
  from jax.experimental import topologies
  # v4 runs in megacore mode (one device per chip, both TensorCores, 32 GiB), as on real v4 slices; without it
  # the topology exposes each 16 GiB TensorCore as a device.
  extra = {"chip_config_name": "megacore"} if chip_of(target) == "v4" else {}
  return topologies.get_topology_desc(platform="tpu", topology_name=target, **extra).devices


def latent_step(cfg, mesh):
  """``(jitted step, abstract args, trainable params)`` of the step from precomputed latents: ``training.setup.Setup``
  with ``data.source="latents"`` (batch = VAE posterior moments + CLIP image tokens + actions; no encoders)."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.data.source = "latents"
  cfg.data.augment = False          # latents are encoded once: no pixel augmentation in the step
  return full_step(cfg, mesh)


def full_step(cfg, mesh):
  from vid2world_jax.training.setup import Setup
  setup = Setup(cfg, mesh)
  return setup.step, setup.abstract_args(), setup.num_params


def compile_plan(cfg, mesh, kind: str = "latents", hlo_path: str = "") -> dict:
  """Compile the step for ``mesh``'s devices and return per-device memory (GiB) and FLOPs (``hlo_path``: also
  write the compiled per-device HLO there, to find what fills the memory)."""
  t0 = time.time()
  build = {"latents": latent_step, "full": full_step}[kind]
  step, args, n_params = build(cfg, mesh)
  with jax.set_mesh(mesh):                      # activation constraints / splash shard_map see the mesh
    compiled = step.lower(*args).compile()
  if hlo_path:
    with open(hlo_path, "w") as f:
      f.write(compiled.as_text())
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


# ---------------------------------------------------------------------------------------------------------------
# Depth extrapolation: a full-depth step may not compile on a small host (the TPU compiler needed > 24 GiB of host
# RAM for the full 512 step), so a depth-reduced model (fewer UNet levels, full width and resolution) is compiled
# and the full model's extra per-device memory is added from exact abstract shapes. Validated in
# docs/memory_plan.md on a pair of sizes that both compile.

def per_device_bytes(tree) -> int:
  """Bytes one device holds of a tree of ``ShapeDtypeStruct`` with shardings."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
    total += math.prod(shape) * x.dtype.itemsize
  return total


def residual_bytes(cfg, micro_batch: int, device=None) -> int:
  """Activation bytes the backward pass keeps from the forward (JAX's saved residuals of the loss under the
  config's remat policies; the parameters and their compute-dtype copy excluded: ``depth_delta`` counts those per
  parameter, sharded) for ``micro_batch`` clips, traced, not compiled. ``device``: a target device (its platform
  picks the attention kernels, as in the compiled step)."""
  import jax.numpy as jnp
  from jax._src.ad_checkpoint import saved_residuals
  from vid2world_jax import sharding
  from vid2world_jax.training import steps
  from vid2world_jax.training.setup import Setup

  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.data.source = "latents"
  cfg.data.batch_size = micro_batch
  cfg.optim.grad_accum_steps = 1
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1}, jax.devices("cpu")[:1])
  setup = Setup(cfg, mesh)
  state, frozen, rest, batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                            setup.abstract_args())
  loss_fn = steps.make_loss_fn(setup.graphdef, setup.frozen_graphdef, cfg, setup.schedule)
  keys = jax.eval_shape(steps.step_rngs, state["rng"], jnp.zeros((), jnp.int32))

  def loss(params, frozen, rest, batch, keys):
    return loss_fn(params, frozen, rest, batch, keys)[0]

  target = jax.sharding.AbstractMesh((1, 1), ("data", "fsdp"), abstract_device=_abstract_device(device))
  with jax.sharding.use_abstract_mesh(target):
    kept = saved_residuals(loss, state["params"], frozen, rest, batch, keys)
  def weights(why):   # a parameter, or optim.cast_floats' compute copy of one
    return "from the argument" in why or ("optim.py" in why and "convert_element_type" in why)

  return sum(a.size * a.dtype.itemsize for a, why in kept if not weights(why))


def _abstract_device(device):
  from jax._src import mesh as mesh_lib
  if device is None:
    return None
  return mesh_lib.AbstractDevice(device.device_kind, getattr(device, "num_cores", None), device.platform)


def depth_delta(small_cfg, full_cfg, mesh, micro_batch: int) -> dict:
  """Per-device bytes the full model adds to the depth-reduced one on ``mesh`` (each a delta, full - reduced):

  * ``arguments``: train state (fp32 parameters + optimizer state) at the step's shardings, exact;
  * ``param_temporaries``: per fp32 parameter byte on the device, its fp32 gradient, the fp32 accumulator (when
    accumulating) and the compute-dtype weight copy the backward keeps (sharded like the parameters): what the
    compiler must hold besides the state (an estimate: the gradient and accumulator layouts are the compiler's);
  * ``residuals``: the activations the backward keeps from the forward (block inputs under remat), exact at the
    JAX level for the per-device micro-batch.
  """
  from vid2world_jax.training.setup import Setup

  def args_and_params(cfg):
    state = Setup(cfg, mesh).abstract_args()[0]
    return per_device_bytes(state), per_device_bytes(state["params"])

  a_small, p_small = args_and_params(small_cfg)
  a_full, p_full = args_and_params(full_cfg)
  copy = jax.numpy.dtype(full_cfg.precision).itemsize / 4.0
  per_param = 1.0 + (int(full_cfg.optim.grad_accum_steps) > 1) + (copy if copy < 1 else 0.0)
  dev = mesh.devices.flat[0]
  r_small, r_full = residual_bytes(small_cfg, micro_batch, dev), residual_bytes(full_cfg, micro_batch, dev)
  return {"arguments_gib": (a_full - a_small) / GIB, "param_temporaries_gib": per_param * (p_full - p_small) / GIB,
          "residuals_gib": (r_full - r_small) / GIB}
