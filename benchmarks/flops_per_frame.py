r"""FLOPs per generated frame of the rollout, from XLA's cost analysis, and the frame rate they imply at 40% MFU.

  python benchmarks/flops_per_frame.py                    # the paper's 512 model (configs/rt1.py:512), 50 steps
  python benchmarks/flops_per_frame.py --config=tiny      # configs/test_tiny.py:vae (tests)

Nothing is allocated: the world model is built under ``nnx.eval_shape`` and every piece of one generated frame is
``jax.jit(fn).lower(abstract args).cost_analysis()["flops"]`` (XLA's HLO cost analysis, multiply-add = 2 FLOPs)
of the functions the sampler runs (``inference.sampler`` / ``inference.rollout_model``, batch 1, the window full,
i.e. the sliding regime; the buffers have fixed shapes, so growing windows cost the same):

  * ``cond``: ``RolloutModel.cond_fn`` on the window's first frame (VAE decode to pixels, CLIP image encoder,
    resampler); the sampler runs it once per generated frame.
  * ``full_pass``: one guided DDIM step without the cache: ``guided_prediction`` (both guidance branches batched,
    2 rows x the whole window) on ``FnDenoiser``; ``full_pass_cond`` the same with the conditional pass only.
  * ``fill``: the cached path's history pass, once per frame (``CachedDenoiser.init_state``: 1 row x window-1
    frames; with guidance the branches share it, ``init_state_branches``).
  * ``new_pass``: one cached DDIM step (the new frame only, cache reads), 2 rows with guidance, 1 without.

  teacher uncached = cond + S x full_pass          teacher cached = cond + fill + S x new_pass (2 rows)
  student (1 step, no guidance, cached) = cond + fill + new_pass (1 row)

(The DDIM update arithmetic and the noise draws are left out: elementwise on one latent frame, < 1e-6 of these.)
Costs are counted from the HLO before backend-specific rewrites (``Lowered.cost_analysis``); attention is
XLA's plain dot-product attention here (the CPU lowering), so its FLOPs are counted; on an accelerator a fused
flash / splash kernel does the same arithmetic. The frame rate at 40% MFU = 0.4 x peak / (FLOPs per frame),
with the dense bf16 peaks of ``logging_utils.PEAK_FLOPS``: H100 SXM 989 TFLOP/s (NVIDIA H100 datasheet, dense
BF16 tensor core, without sparsity) and TPU v5p 459 TFLOP/s per chip (Google Cloud TPU v5p documentation).
Readable lines first; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MFU = 0.4
DEVICES = {"H100": "NVIDIA H100", "TPU v5p": "TPU v5p"}   # label -> logging_utils.PEAK_FLOPS key
PEAK_SOURCES = {"H100": "NVIDIA H100 SXM datasheet: 989 TFLOP/s dense BF16 tensor core (1979 with sparsity)",
                "TPU v5p": "Google Cloud TPU v5p documentation: 459 TFLOP/s BF16 per chip"}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", choices=("rt1", "tiny"), default="rt1",
                 help="rt1: configs/rt1.py:512 (the paper's 512 model, bf16); tiny: configs/test_tiny.py:vae")
  p.add_argument("--ddim_steps", type=int, default=None, help="teacher DDIM steps (default: rt1 50, tiny 4)")
  p.add_argument("--student_steps", type=int, default=1, help="student DDIM steps (no guidance)")
  return p.parse_args(argv)


def _config(name: str):
  if name == "rt1":
    from configs import rt1
    cfg = rt1.get_config("512")
  else:
    from configs import test_tiny
    cfg = test_tiny.get_config("vae")
  cfg.attention_impl = "xla"   # plain XLA attention on every backend: no custom kernel hides FLOPs from the count
  return cfg


def _flops(fn, *args) -> float:
  import jax
  ca = jax.jit(fn).lower(*args).cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  f = (ca or {}).get("flops")
  if not f:
    raise SystemExit("error: XLA's cost analysis gave no FLOPs for this backend")
  return float(f)


def measure(cfg, ddim_steps: int, student_steps: int) -> dict:
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from vid2world_jax import world_model
  from vid2world_jax.inference import rollout_model
  from vid2world_jax.inference import sampler as rl
  mcfg = world_model.model_config(cfg)
  t0 = time.time()
  abs_wm, abs_fs = nnx.eval_shape(lambda: world_model.build(mcfg, rngs=nnx.Rngs(params=0, dropout=1)))
  g, s = nnx.split(abs_wm)
  fg, fss = nnx.split(abs_fs)
  params = (s, fss)
  build_s = time.time() - t0
  n_unet = sum(int(x.size) for x in jax.tree.leaves(nnx.state(abs_wm.unet, nnx.Param)))
  win = int(mcfg.unet.temporal_length)
  h, w = world_model.latent_hw(mcfg, cfg.data.resolution)
  c = world_model.latent_channels(mcfg)
  a_dim = int(mcfg.unet.action_dim)
  sds = jax.ShapeDtypeStruct
  first = sds((1, h, w, c), jnp.float32)
  plain = rollout_model.world_model_rollout_model(mcfg, g, fg)
  cached = rollout_model.world_model_rollout_model(mcfg, g, fg, cached=True)
  cond = jax.eval_shape(plain.cond_fn, params, first)
  inputs = rollout_model.WindowInputs(
      latents=sds((1, win, h, w, c), jnp.float32), t=sds((1, win), jnp.int32), cond=cond,
      actions=sds((1, win, a_dim), jnp.float32), action_mask=sds((1, win), jnp.float32),
      new_index=sds((), jnp.int32))
  guided = lambda den, scale: (lambda p, st, x: rl.guided_prediction(den, p, st, x, scale, 0.7)[0])
  teacher_state = jax.eval_shape(cached.denoiser.init_state_branches, params, inputs)
  student_state = jax.eval_shape(cached.denoiser.init_state, params, inputs)
  t0 = time.time()
  f = {
      "cond": _flops(plain.cond_fn, params, first),
      "full_pass": _flops(guided(plain.denoiser, 2.5), params, (), inputs),
      "full_pass_cond": _flops(guided(plain.denoiser, None), params, (), inputs),
      "fill": _flops(cached.denoiser.init_state, params, inputs),
      "fill_branches": _flops(cached.denoiser.init_state_branches, params, inputs),
      "new_pass": _flops(guided(cached.denoiser, 2.5), params, teacher_state, inputs),
      "new_pass_cond": _flops(guided(cached.denoiser, None), params, student_state, inputs),
  }
  lower_s = time.time() - t0
  per_frame = {
      "teacher_uncached": f["cond"] + ddim_steps * f["full_pass"],
      "teacher_cached": f["cond"] + f["fill_branches"] + ddim_steps * f["new_pass"],
      "student_cached": f["cond"] + f["fill"] + student_steps * f["new_pass_cond"],
      "student_uncached": f["cond"] + student_steps * f["full_pass_cond"],
  }
  return {"pieces": f, "per_frame": per_frame, "unet_params": n_unet, "window": win, "latent": [h, w, c],
          "resolution": list(cfg.data.resolution), "abstract_build_s": round(build_s, 1),
          "lower_s": round(lower_s, 1)}


def main(argv=None) -> int:
  a = parse_args(argv)
  import jax
  from vid2world_jax import logging_utils
  steps = a.ddim_steps or (50 if a.config == "rt1" else 4)
  cfg = _config(a.config)
  r = measure(cfg, steps, a.student_steps)
  f, pf = r["pieces"], r["per_frame"]
  label = "configs/rt1.py:512" if a.config == "rt1" else "configs/test_tiny.py:vae"
  print(f"model: {label}, UNet {r['unet_params']:,} parameters, {r['resolution'][0]}x{r['resolution'][1]} frames "
        f"-> latents {r['latent']}, window {r['window']}, batch 1 (abstract build {r['abstract_build_s']} s, "
        f"lowering {r['lower_s']} s, jax {jax.__version__})")
  print("pieces (GFLOP): " + ", ".join(f"{k} {v / 1e9:.4g}" for k, v in f.items()))
  peaks = {k: logging_utils.PEAK_FLOPS[v] for k, v in DEVICES.items()}
  rows = [("teacher, uncached", "teacher_uncached", f"{steps} steps x 2 passes, full window"),
          ("teacher, cached", "teacher_cached", f"history once + {steps} steps x 2 passes on the new frame"),
          ("student, cached", "student_cached", f"history once + {a.student_steps} step x 1 pass on the new frame"),
          ("student, uncached", "student_uncached", f"{a.student_steps} step x 1 pass, full window")]
  head = (f"{'sampler':20s} {'TFLOP/frame':>12s} " + " ".join(f"{'fps ' + k + ' @40%':>16s}" for k in peaks)
          + "  what runs per frame")
  print(head)
  print("-" * len(head))
  fps = {}
  for name, key, what in rows:
    fps[key] = {k: MFU * p / pf[key] for k, p in peaks.items()}
    print(f"{name:20s} {pf[key] / 1e12:12.4g} " + " ".join(f"{fps[key][k]:16.4g}" for k in peaks) + f"  {what}")
  ratios = {"uncached_over_cached": pf["teacher_uncached"] / pf["teacher_cached"],
            "teacher_cached_over_student": pf["teacher_cached"] / pf["student_cached"]}
  print(f"ratios: teacher uncached / cached {ratios['uncached_over_cached']:.2f}x FLOPs, teacher cached / student "
        f"{ratios['teacher_cached_over_student']:.2f}x")
  print("peaks (dense bf16): " + "; ".join(f"{k} {p / 1e12:.0f} TFLOP/s ({PEAK_SOURCES[k]})" for k, p in peaks.items()))
  print(json.dumps({"benchmark": "flops_per_frame", "config": label, "ddim_steps": steps,
                    "student_steps": a.student_steps, "batch": 1, "window": r["window"], "latent": r["latent"],
                    "resolution": r["resolution"], "unet_params": r["unet_params"], "pieces_flops": f,
                    "flops_per_frame": pf, "ratios": ratios, "mfu": MFU, "peak_flops": peaks,
                    "fps_at_40pct_mfu": fps, "jax": jax.__version__}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
