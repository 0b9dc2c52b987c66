r"""Memory plan without a pod: compile the full-size train step ahead of time for a given mesh on fake CPU
devices (abstract shapes, nothing allocated) and print per-device memory from the compiled executable.

  python benchmarks/memory_plan.py --config=configs/rt1.py:512 --mesh=data=4,fsdp=2
  python benchmarks/memory_plan.py --variants=256,512 --mesh=data=1,fsdp=8 --override optim.grad_accum_steps=1

The figures come from XLA's CPU compiler (buffer assignment of the partitioned per-device program); TPU/GPU
compilers fuse and lay out differently, so treat them as an estimate of the accelerator's footprint. The last
printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def parse_mesh(text: str) -> dict:
  out = {}
  for part in text.split(","):
    k, v = part.split("=")
    out[k.strip()] = int(v)
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="configs/rt1.py", help="config file[:arg]; ':256'/':512' pick the variant")
  ap.add_argument("--variants", default="256,512", help="variants to plan when --config has no ':arg'")
  ap.add_argument("--mesh", default="data=4,fsdp=2", help="mesh axes, e.g. data=1,fsdp=8 (-1 = the rest)")
  ap.add_argument("--devices", type=int, default=0, help="fake CPU devices (default: product of --mesh)")
  ap.add_argument("--override", action="append", default=[], help="dotted config override key=value")
  args = ap.parse_args()
  mesh_shape = parse_mesh(args.mesh)
  n_dev = args.devices or math.prod(v for v in mesh_shape.values() if v > 0)
  os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_dev}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, repo)

  import importlib.util

  import jax
  from ml_collections import config_dict

  from vid2world_jax import sharding, train

  path, _, arg = args.config.partition(":")
  spec = importlib.util.spec_from_file_location("plan_config", os.path.join(repo, path) if not os.path.isabs(path) else path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  variants = [arg] if arg else args.variants.split(",")
  results = {}
  for variant in variants:
    cfg = mod.get_config(variant)
    cfg.mesh.shape = config_dict.ConfigDict(mesh_shape)
    cfg.init_from = ""
    for ov in args.override:
      key, value = ov.split("=", 1)
      node = cfg
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = type(node[leaf])(json.loads(value)) if not isinstance(node[leaf], str) else value
    resolved = train.validate_config(cfg, jax.device_count(), 1)
    mesh = sharding.make_mesh(resolved)
    t0 = time.time()
    setup = train.Setup(cfg, mesh)
    lowered = setup.step.lower(*setup.abstract_args())
    compiled = lowered.compile()
    ma = compiled.memory_analysis()
    gib = 2.0 ** 30
    arg_b, out_b = ma.argument_size_in_bytes, ma.output_size_in_bytes
    alias_b, temp_b = ma.alias_size_in_bytes, ma.temp_size_in_bytes
    peak = arg_b + out_b - alias_b + temp_b
    total_params = setup.num_params
    r = {"variant": variant, "mesh": dict(mesh.shape), "devices": jax.device_count(),
         "trainable_params": total_params, "global_batch": int(cfg.data.batch_size),
         "grad_accum": int(cfg.optim.grad_accum_steps), "clip_length": int(cfg.data.clip_length),
         "resolution": list(cfg.data.resolution), "precision": cfg.precision, "remat": bool(cfg.remat),
         "per_device_gib": {"arguments": arg_b / gib, "outputs": out_b / gib, "aliased": alias_b / gib,
                            "temporaries": temp_b / gib, "peak_estimate": peak / gib},
         "compile_s": time.time() - t0}
    results[variant] = r
    print(f"[{variant}] mesh {dict(mesh.shape)}: {total_params / 1e9:.3f} B trainable params; per device: "
          f"arguments {arg_b / gib:.2f} GiB (state+batch), temporaries {temp_b / gib:.2f} GiB, "
          f"peak ~{peak / gib:.2f} GiB (compiled in {r['compile_s']:.0f}s)", flush=True)
  print(json.dumps({"memory_plan": results, "backend": "cpu (fake devices)"}))


if __name__ == "__main__":
  main()
