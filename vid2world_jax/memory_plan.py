"""Ahead-of-time memory / FLOP plan of the train step for a target (TPU topology or fake CPU devices).

Nothing is allocated: the step is lowered from ``ShapeDtypeStruct`` arguments with shardings and compiled by the
target's own compiler (libtpu for TPU topologies from ``jax.experimental.topologies``: the TPU compiler's buffer
assignment, not an estimate). Two step kinds:

* ``"latents"``: the train step from precomputed encoder outputs (``data.source="latents"``, as when training
  from encoded shards): batch = ``{"latent_moments" [B,T,h,w,8], "clip_image_tokens" [B,257,1280], "actions"}``;
  the trainable UNet + resampler + action encoder, AdamW and grad accumulation are the real ones; no VAE / CLIP
  encoder in the program.
* ``"full"``: ``train.Setup``'s step (frozen VAE + CLIP-image encoder inside the step, frames as input).

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
  return topologies.get_topology_desc(platform="tpu", topology_name=target).devices


def latent_step(cfg, mesh):
  """``(jitted step, abstract args, trainable params)`` of the step from precomputed latents: ``train.Setup``
  with ``data.source="latents"`` (batch = VAE posterior moments + CLIP image tokens + actions; no encoders)."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.data.source = "latents"
  cfg.data.augment = False          # latents are encoded once: no pixel augmentation in the step
  return full_step(cfg, mesh)


def full_step(cfg, mesh):
  from vid2world_jax import train
  setup = train.Setup(cfg, mesh)
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
