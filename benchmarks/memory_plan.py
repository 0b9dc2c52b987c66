r"""Memory plan from the target's own compiler: compile the train step ahead of time (nothing allocated) for a
TPU topology or fake CPU devices and print per-device peak, arguments, temporaries, FLOPs per step and the step
time 40% MFU would give. The last printed line is one JSON object (``peak_gib`` per device per variant).

  # TPU compiler (needs jax[tpu] / libtpu: a separate venv, see docs/memory_plan.md), latents step:
  PYTHONPATH=. /work/tpuvenv/bin/python benchmarks/memory_plan.py --target=v5p:2x2x1 --config=configs/rt1.py:512
  # CPU compiler on 8 fake devices, the old in-step-encoder step:
  python benchmarks/memory_plan.py --target=cpu --mesh=data=1,fsdp=8 --step=full --config=configs/rt1.py:256

``--micro_batch`` sets grad accumulation so each device runs that many clips per forward/backward; every
``--override key=value`` sets a dotted config field (JSON values), e.g. ``--override model.unet.attention_impl=splash``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys


def parse_mesh(text: str) -> dict:
  out = {}
  for part in text.split(","):
    k, v = part.split("=")
    out[k.strip()] = int(v)
  return out


def load_config(repo: str, spec: str, variant: str):
  path = spec.partition(":")[0]
  full = path if os.path.isabs(path) else os.path.join(repo, path)
  s = importlib.util.spec_from_file_location("plan_config", full)
  mod = importlib.util.module_from_spec(s)
  s.loader.exec_module(mod)
  return mod.get_config(variant)


def apply_override(cfg, text: str):
  key, value = text.split("=", 1)
  node = cfg
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  old = node[leaf]
  if isinstance(old, str):
    node[leaf] = value
  else:
    new = json.loads(value)
    node[leaf] = tuple(tuple(x) if isinstance(x, list) else x for x in new) if isinstance(old, tuple) else type(old)(new)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--target", default="cpu", help="cpu | a TPU topology: v5e:4x4, v4:2x2x2, v5p:2x2x1, ...")
  ap.add_argument("--config", default="configs/rt1.py", help="config file[:variant]")
  ap.add_argument("--variants", default="256,512", help="variants when --config has no ':variant'")
  ap.add_argument("--mesh", default="data=1,fsdp=-1", help="mesh axes over the target's devices (-1 = the rest)")
  ap.add_argument("--devices", type=int, default=8, help="fake CPU devices for --target=cpu")
  ap.add_argument("--step", default="latents", choices=("latents", "full"),
                  help="latents: precomputed VAE latents + CLIP tokens; full: VAE + CLIP inside the step")
  ap.add_argument("--micro_batch", type=int, default=0, help="clips per device per micro-step (0: config's accum)")
  ap.add_argument("--override", action="append", default=[], help="dotted config override key=value")
  ap.add_argument("--reduce", action="append", default=[],
                  help="depth override compiled instead of the full model (e.g. \"model.unet.channel_mult=[1]\"); "
                       "the full model's peak is then extrapolated (memory_plan.depth_delta) and printed beside it")
  ap.add_argument("--hlo_out", default="", help="write the compiled per-device HLO to this path (+ .<variant>)")
  args = ap.parse_args(argv)
  if args.target == "cpu":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")   # the TPU topology needs no local TPU
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, repo)

  from ml_collections import config_dict

  from vid2world_jax import sharding

  from vid2world_jax.training import memory_plan

  devices = memory_plan.target_devices(args.target, args.devices if args.target == "cpu" else 0)
  chip = memory_plan.chip_of(args.target)
  variant_arg = args.config.partition(":")[2]
  results = {}
  for variant in ([variant_arg] if variant_arg else args.variants.split(",")):
    cfg = load_config(repo, args.config, variant)
    cfg.init_from = ""
    mesh_shape = sharding.resolve_mesh_shape(parse_mesh(args.mesh), len(devices))
    cfg.mesh.shape = config_dict.ConfigDict(mesh_shape)
    for ov in args.override:
      apply_override(cfg, ov)
    if args.micro_batch:
      per_step = batch_ways(mesh_shape)
      accum = int(cfg.data.batch_size) // (per_step * args.micro_batch)
      if accum < 1 or accum * per_step * args.micro_batch != int(cfg.data.batch_size):
        raise SystemExit(f"batch {cfg.data.batch_size} is not {per_step} devices x micro-batch "
                         f"{args.micro_batch} x an integer accumulation")
      cfg.optim.grad_accum_steps = accum
    full_cfg = None
    if args.reduce:
      full_cfg = config_dict.ConfigDict(cfg.to_dict())
      for ov in args.reduce:
        apply_override(cfg, ov)
    mesh = sharding.make_mesh(mesh_shape, devices)
    print(f"[{variant}] compiling the {args.step} step for {args.target} ({len(devices)} devices, mesh "
          f"{mesh_shape}, batch {cfg.data.batch_size} / accum {cfg.optim.grad_accum_steps}) ...", flush=True)
    r = memory_plan.compile_plan(cfg, mesh, args.step,
                                 f"{args.hlo_out}.{variant}" if args.hlo_out else "")
    r.update(variant=variant, target=args.target, global_batch=int(cfg.data.batch_size),
             grad_accum=int(cfg.optim.grad_accum_steps),
             micro_batch=int(cfg.data.batch_size) // (int(cfg.optim.grad_accum_steps) * batch_ways(mesh_shape)),
             precision=cfg.precision, attention_impl=cfg.get("attention_impl", "auto"),
             remat=dict(cfg.remat_policy.to_dict()), remat_legacy=bool(cfg.remat), hbm_gib=memory_plan.HBM_GIB.get(chip),
             step_s_at_40pct_mfu=memory_plan.step_time_at_mfu(r["flops_per_device"], chip))
    results[variant] = r
    t40 = r["step_s_at_40pct_mfu"]
    print(f"[{variant}] {r['trainable_params'] / 1e9:.3f} B trainable params; per device: peak {r['peak_gib']:.2f} "
          f"GiB (arguments {r['arguments_gib']:.2f}, temporaries {r['temporaries_gib']:.2f}, outputs "
          f"{r['outputs_gib']:.2f}, aliased {r['aliased_gib']:.2f}); {r['flops_per_device'] / 1e12:.1f} TFLOP/step"
          f"/device" + (f", {t40:.2f} s/step at 40% MFU" if t40 else "")
          + (f"; fits {chip} ({r['hbm_gib']} GiB): {r['peak_gib'] <= r['hbm_gib']}" if r["hbm_gib"] else "")
          + f" (compiled in {r['compile_s']:.0f}s)", flush=True)
    if full_cfg is not None:
      micro = r["micro_batch"]
      delta = memory_plan.depth_delta(cfg, full_cfg, mesh, micro)
      full_peak = r["peak_gib"] + sum(delta.values())
      r.update(reduced_by=list(args.reduce), extrapolated_full={"delta": delta, "peak_gib": full_peak})
      print(f"[{variant}] full depth, extrapolated (compiled reduced peak + exact state/residual deltas + "
            f"param temporaries): peak {full_peak:.2f} GiB = {r['peak_gib']:.2f} + arguments "
            f"{delta['arguments_gib']:.2f} + param temporaries {delta['param_temporaries_gib']:.2f} + residuals "
            f"{delta['residuals_gib']:.2f}" + (f"; fits {chip} ({r['hbm_gib']} GiB): {full_peak <= r['hbm_gib']}"
                                               if r["hbm_gib"] else ""), flush=True)
  print(json.dumps({"memory_plan": results, "peak_gib": {v: r["peak_gib"] for v, r in results.items()},
                    "extrapolated_full_peak_gib": {v: r["extrapolated_full"]["peak_gib"] for v, r in results.items()
                                                   if "extrapolated_full" in r},
                    "target": args.target}))


def batch_ways(mesh_shape: dict) -> int:
  return math.prod(v for k, v in mesh_shape.items() if k in ("data", "fsdp"))


if __name__ == "__main__":
  main()
