r"""Where the DynamiCrafter UNet forward spends its time: the JAX model's profile beside the original PyTorch
model's, grouped by op kind (benchmarks/op_kinds.py), in one run.

  python benchmarks/profile_unet.py --torch-src DC            # 256 config, B1 T16 32x32, fp32, both sides
  python benchmarks/profile_unet.py --frames 4 --side jax     # JAX alone, fewer frames (quicker)

JAX: ``jax.profiler.trace`` around ``--repeats`` warm forwards of the jitted model; the CPU runtime records one
event per executed HLO instruction, which ``op_kinds.hlo_kinds`` names from the compiled module's text.
PyTorch (``--torch-src``: an exported DynamiCrafter tree, ../shared/reference/timing.md; run first, in a child
process, alone): ``torch.profiler`` around the same number of warm forwards, self CPU time per ``aten::`` op.
Both with ``--threads`` threads (default: all cores). Printed: per kind, seconds per forward and share of each
side, the JAX / PyTorch ratio per kind, the top ops of each side, and the forward's wall time of each; op time
can exceed wall time when two ops run at once on different threads. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import host_info  # noqa: E402  (benchmarks/host_info.py)
import op_kinds  # noqa: E402  (benchmarks/op_kinds.py)

TORCH_KWARGS_256 = dict(   # configs/inference_256_v1.0.yaml's unet_config (models.unet.real_config("256"))
    in_channels=8, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1], num_res_blocks=2,
    channel_mult=[1, 2, 4, 4], dropout=0.1, num_head_channels=64, transformer_depth=1, context_dim=1024,
    use_linear=True, use_checkpoint=False, temporal_conv=True, temporal_attention=True, temporal_selfatt_only=True,
    use_relative_position=False, use_causal_attention=False, temporal_length=16, addition_attention=True,
    image_cross_attention=True, image_cross_attention_scale_learnable=True, default_fs=3, fs_condition=True)


def unet_kwargs(model_channels: int = 320, frames: int = 16) -> dict:
  """The 256 UNet's constructor kwargs (PyTorch names), optionally narrower (``model_channels``; every width
  scales with it) or with another temporal length."""
  kw = dict(TORCH_KWARGS_256)
  kw.update(model_channels=int(model_channels), temporal_length=int(frames))
  return kw


def inputs_np(kw: dict, batch: int, frames: int, latent: int, seed: int = 0) -> dict:
  """Random inputs in the original's layout (x [B, C, T, H, W]) as numpy, the same for both sides."""
  import numpy as np
  rng = np.random.default_rng(seed)
  return {"x": rng.standard_normal((batch, kw["in_channels"], frames, latent, latent), dtype=np.float32),
          "t": np.full((batch,), 500, np.int64),
          "context": rng.standard_normal((batch, 77 + 16 * frames, kw["context_dim"]), dtype=np.float32),
          "fs": np.full((batch,), kw["default_fs"], np.int64)}


# ----------------------------------------------------------------------------------------------------------------
# PyTorch side (child process).

def build_torch_unet(src: str, kw: dict):
  """The original ``UNetModel`` of an exported DynamiCrafter tree ``src`` (random init, seed 0)."""
  import importlib.util
  import torch
  shared = os.environ.get("V2W_SHARED", os.path.join(os.path.dirname(os.path.dirname(
      os.path.dirname(os.path.abspath(__file__)))), "shared"))
  spec = importlib.util.spec_from_file_location("torch_reference", os.path.join(shared, "reference",
                                                                                "torch_reference.py"))
  ref = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ref)
  ref.setup_src(src)   # DynamiCrafter's lvdm importable, its unused imports shimmed
  from lvdm.modules.networks.openaimodel3d import UNetModel  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  return UNetModel(**kw)


def torch_child(args) -> None:
  import torch
  torch.set_num_threads(args.threads)
  kw = unet_kwargs(args.model_channels, args.frames)
  net = build_torch_unet(args.torch_src, kw).eval()
  inp = {k: torch.from_numpy(v) for k, v in inputs_np(kw, args.batch, args.frames, args.latent).items()}
  run = lambda: net(inp["x"], inp["t"], context=inp["context"], fs=inp["fs"])
  walls = []
  with torch.no_grad():
    run()   # warm-up
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      run()
      walls.append(time.perf_counter() - t0)
    ops = torch_trace(run, args.repeats)
  with open(args.torch_child_out, "w") as f:
    json.dump({"torch": torch.__version__, "threads": args.threads, "wall_s": walls, "ops": ops}, f)


def run_torch_child(args, script: str, extra: list[str]) -> dict:
  """Runs ``script --torch-child-out OUT`` (this file or another benchmark built on it) under ``--torch-python``
  with the shared shape flags and ``extra``; its JSON, or ``{"unavailable": reason}`` (printed in one line)."""
  if not os.path.exists(os.path.join(args.torch_src or "-", "lvdm")):
    why = f"--torch-src {args.torch_src!r} is not a DynamiCrafter tree"
    print(f"PyTorch side unavailable: {why}")
    return {"unavailable": why}
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "torch.json")
    cmd = [args.torch_python, os.path.abspath(script), "--torch-child-out", out, "--torch-src", args.torch_src,
           "--model-channels", str(args.model_channels), "--batch", str(args.batch), "--frames", str(args.frames),
           "--latent", str(args.latent), "--repeats", str(args.repeats), "--threads", str(args.threads)] + extra
    print(f"PyTorch side: child process ({args.threads} threads) ...", flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(out):
      tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
      print(f"PyTorch side failed: exit code {p.returncode}: {tail[:300]}")
      return {"unavailable": tail[:300]}
    with open(out) as f:
      return json.load(f)


def torch_side(args) -> dict:
  return run_torch_child(args, __file__, [])


def build_jax_unet(kw: dict, attention_impl: str = "auto"):
  """The JAX UNet of the PyTorch kwargs ``kw`` (fp32, the benchmark's random weights), in eval mode;
  ``attention_impl``: models.attention.ATTENTION_IMPLS ("auto" = XLA's dot_product_attention on CPU)."""
  from flax import nnx
  import unet_forward   # benchmarks/unet_forward.py: fast_random_state
  from vid2world_jax.models import unet
  cfg = unet.config_from_torch_params(kw)
  cfg.dtype = "float32"
  cfg.attention_impl = attention_impl
  graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: unet.build(cfg, rngs=nnx.Rngs(0))))
  model = nnx.merge(graphdef, unet_forward.fast_random_state(abstract_state, 0))
  model.eval()
  return model


def jax_inputs(inp: dict):
  """``inputs_np`` as JAX arrays in the project's layout: ``(x [B, T, H, W, C], t, context, fs)``."""
  import jax.numpy as jnp
  import numpy as np
  return (jnp.asarray(np.moveaxis(inp["x"], 1, -1)), jnp.asarray(inp["t"], jnp.int32), jnp.asarray(inp["context"]),
          jnp.asarray(inp["fs"], jnp.int32))


# ----------------------------------------------------------------------------------------------------------------
# JAX side.

def jax_trace(hlo_text: str, run, repeats: int) -> dict:
  """Op time per HLO instruction of ``repeats`` calls of ``run`` (a no-argument callable that blocks until its
  compiled program finished) under ``jax.profiler.trace``: ``{"ops": name -> seconds per call, "kinds",
  "sources"}`` with kinds and model sites read from the compiled module's text ``hlo_text``."""
  import jax
  kinds = op_kinds.hlo_kinds(hlo_text)
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(repeats):
        run()
    path = sorted(glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  ops = collections.defaultdict(float)
  for e in events:
    if e.get("ph") == "X" and e.get("name") in kinds:
      ops[e["name"]] += e.get("dur", 0) / 1e6 / repeats
  return {"ops": dict(ops), "kinds": {n: kinds[n][0] for n in ops}, "sources": {n: kinds[n][1] for n in ops}}


def torch_trace(run, repeats: int) -> dict:
  """Self CPU time per ``aten::`` op of ``repeats`` calls of ``run`` under ``torch.profiler``, seconds per call."""
  from torch.profiler import ProfilerActivity, profile
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(repeats):
      run()
  return {e.key: e.self_cpu_time_total / 1e6 / repeats for e in prof.key_averages()}


def jax_side(args) -> dict:
  import jax
  from flax import nnx

  kw = unet_kwargs(args.model_channels, args.frames)
  graphdef, state = nnx.split(build_jax_unet(kw, args.attention_impl))
  x, t, ctx, fs = jax_inputs(inputs_np(kw, args.batch, args.frames, args.latent))

  @jax.jit
  def forward(state, x, t, ctx, fs):
    return nnx.merge(graphdef, state)(x, t, ctx, fs)

  compiled = forward.lower(state, x, t, ctx, fs).compile()
  run = lambda: jax.block_until_ready(compiled(state, x, t, ctx, fs))
  run()   # warm-up
  walls = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    run()
    walls.append(time.perf_counter() - t0)
  return {"jax": jax.__version__, "wall_s": walls, **jax_trace(compiled.as_text(), run, args.repeats)}


# ----------------------------------------------------------------------------------------------------------------

def print_tables(sides: dict, res: dict, top: int, what: str) -> None:
  """Prints each side's top ops and the per-kind table of ``sides`` (``{"jax"|"torch": {"wall_s", "ops", ...}}``,
  one ``what`` per call: "forward" or "train step") and adds the per-kind seconds and ratios to ``res``."""
  tables = {}
  for name, r in sides.items():
    if "ops" not in r:
      res[f"{name}_unavailable"] = r.get("unavailable")
      continue
    kind = (lambda n, r=r: r["kinds"][n]) if name == "jax" else op_kinds.torch_kind
    tables[name] = op_kinds.sum_by(r["ops"].items(), kind)
    top_ops = sorted(r["ops"].items(), key=lambda kv: -kv[1])[:top]
    print(f"{name}: {what} wall {min(r['wall_s']):.2f} s (fastest of {len(r['wall_s'])}); op time "
          f"{sum(r['ops'].values()):.2f} s per {what}; top ops:")
    for n, s in top_ops:
      extra = f"  [{r['kinds'][n]}; {r['sources'][n]}]" if name == "jax" else \
          f"  [{op_kinds.torch_kind(n)}]"
      print(f"  {s:8.3f} s  {n}{extra}")
    res[f"{name}_wall_s"] = [round(v, 3) for v in r["wall_s"]]
    res[f"{name}_kinds_s"] = {k: round(v, 4) for k, v in tables[name].items()}
    if name == "jax":
      by_src = op_kinds.sum_by(r["ops"].items(), lambda n: r["sources"][n] or "(none)")
      res["jax_by_source_s"] = {k: round(v, 4) for k, v in sorted(by_src.items(), key=lambda kv: -kv[1])}
  if "jax" in tables:   # ops the CPU runtime runs without a trace event (e.g. Eigen convolutions): wall - traced
    untraced = min(sides["jax"]["wall_s"]) - sum(tables["jax"].values())
    if untraced > 0.02 * min(sides["jax"]["wall_s"]):
      tables["jax"]["not traced"] = untraced
      res["jax_kinds_s"]["not traced"] = round(untraced, 4)
      print(f"jax: {untraced:.2f} s of the {what}'s wall time has no op event (ops the CPU runtime runs untraced, "
            "e.g. Eigen convolutions): row 'not traced'")
  tj, tt = tables.get("jax", {}), tables.get("torch", {})
  totj, tott = sum(tj.values()) or 1.0, sum(tt.values()) or 1.0
  print(f"{'kind':18s} {'PyTorch s':>10s} {'share':>6s} {'JAX s':>9s} {'share':>6s} {'JAX/PT':>7s}")
  for k in op_kinds.KINDS + ("not traced",):
    a, b = tt.get(k, 0.0), tj.get(k, 0.0)
    if a or b:
      ratio = f"{b / a:7.2f}" if a > 0 else "     --"
      print(f"{k:18s} {a:10.3f} {a / tott:6.1%} {b:9.3f} {b / totj:6.1%} {ratio}")
  if tj and tt:
    wj, wt = min(sides["jax"]["wall_s"]), min(sides["torch"]["wall_s"])
    print(f"{'total (op time)':18s} {tott:10.3f} {'':6s} {totj:9.3f} {'':6s} {totj / tott:7.2f}")
    print(f"{what} wall, fastest: PyTorch {wt:.2f} s, JAX {wj:.2f} s -> JAX / PyTorch = {wj / wt:.2f}")
    res.update(jax_over_torch_wall=round(wj / wt, 3), jax_over_torch_op_time=round(totj / tott, 3))


def add_shared_args(ap, model_channels: int, repeats: int, unit: str) -> None:
  """The flags both side-by-side benchmarks take (shape, sides, threads, the PyTorch tree and child)."""
  ap.add_argument("--side", default="both", choices=["both", "jax", "torch"], help="which model(s) to run")
  ap.add_argument("--model-channels", type=int, default=model_channels, help="UNet width (320 = the 256 config)")
  ap.add_argument("--batch", type=int, default=1, help=f"clips per {unit}")
  ap.add_argument("--frames", type=int, default=16, help="frames per clip (and the UNet's temporal length)")
  ap.add_argument("--latent", type=int, default=32, help="latent height = width")
  ap.add_argument("--attention-impl", default="auto", help="JAX attention kernel (models.attention.ATTENTION_IMPLS)")
  ap.add_argument("--repeats", type=int, default=repeats, help=f"timed {unit}s (then as many profiled ones)")
  ap.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads (JAX uses every core "
                  "the process may run on: pin both with taskset for fewer)")
  ap.add_argument("--torch-src", default=os.environ.get("V2W_DC_SRC", ""), help="exported DynamiCrafter tree")
  ap.add_argument("--torch-python", default=sys.executable, help="python with torch, einops, omegaconf")
  ap.add_argument("--torch-child-out", default="", help=argparse.SUPPRESS)


def result_header(args) -> dict:
  """The JSON line's settings (shape, threads, load, XLA_FLAGS, glibc tunables, attention kernel, CPU); prints the
  CPU and the two environment settings (both sides run under them: the PyTorch child inherits the environment)."""
  res = {"model_channels": args.model_channels, "batch": args.batch, "frames": args.frames, "latent": args.latent,
         "threads": args.threads, "load_avg_start": round(os.getloadavg()[0], 2), **host_info.environment(),
         "attention_impl": args.attention_impl}
  host_info.print_environment(res)
  return res


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_shared_args(ap, model_channels=320, repeats=2, unit="forward")
  ap.add_argument("--top", type=int, default=8, help="top ops of each side to print")
  args = ap.parse_args()
  if args.torch_child_out:
    torch_child(args)
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  print(f"UNet 256 architecture, model_channels {args.model_channels}, B{args.batch} T{args.frames} "
        f"{args.latent}x{args.latent}, fp32, {args.threads} threads, load average {os.getloadavg()[0]:.2f}")
  res = result_header(args)
  sides = {}
  if args.side in ("both", "torch"):
    sides["torch"] = torch_side(args)
  if args.side in ("both", "jax"):
    sides["jax"] = jax_side(args)
  print_tables(sides, res, args.top, "forward")
  res["load_avg_end"] = round(os.getloadavg()[0], 2)
  print(json.dumps(res))


if __name__ == "__main__":
  from vid2world_jax import host_memory  # noqa: E402
  host_memory.reexec_with_huge_pages()   # as the project's command lines do (docs/profile.md)
  main()
