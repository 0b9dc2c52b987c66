r"""Jitted forward time of the full-size DynamiCrafter UNet (random weights), side by side with the original PyTorch
model in the same run.

  python benchmarks/unet_forward.py                          # 256 config, B=1, 16 frames, 32x32 latents, fp32
  python benchmarks/unet_forward.py --torch-src DC           # + the PyTorch UNet timed first, in the same run
  python benchmarks/unet_forward.py --dtype bfloat16         # accelerators: bf16 compute (params stay fp32)

Side by side (``--torch-src``, or $V2W_DC_SRC): ``../shared/reference/torch_reference.py --timing`` (the original
DynamiCrafter UNet from an exported DynamiCrafter tree DC, see ../shared/reference/timing.md; needs torch, einops
and omegaconf in ``--torch-python``) runs in a child process BEFORE the JAX model is built (one at a time: they
would share the cores), with the same threads and shapes; the ratio JAX / PyTorch of the fastest forward of each
(and of the medians) is printed and put in the JSON (< 1: JAX faster). Absolute times drift between days and
machines: compare only figures from the same run. When the reference is not available the run says why in one
line and reports JAX alone.

Inputs are the shapes DynamiCrafter uses at 256x256 (as in /work/shared/reference/timing.md): x [B, T, 32, 32, 8]
(channels-last), one timestep (500) per clip, context [B, 77 + 16 T, 1024], fs [B] = the variant's default.
The model is in eval mode (dropout off). Reports construction time (abstract build under nnx.eval_shape, then
random values: --init fast = numpy, --init model = the modules' initializers jitted), compile time (lower and
compile separately), forward time (median of --repeats runs after --warmup runs; wall and process CPU seconds,
the latter less sensitive to other jobs on a shared machine), parameter count and memory: XLA's buffer assignment
of the compiled forward (compiled.memory_analysis(): arguments = parameters + inputs, temporaries = activations)
and the process peak RSS (ru_maxrss, CPU) or the device's peak_bytes_in_use (accelerators).
The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import host_info  # noqa: E402  (benchmarks/host_info.py: the CPU, printed and recorded)

GIB = 2.0 ** 30


def rss_gib() -> float:
  """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def fast_random_state(abstract_state, seed: int):
  """Concrete state for an abstract one: kernels/embeddings ~ N(0, 1/fan_in) (fan_in = all but the last axis),
  norm ``scale`` = 1, everything else (biases, ``alpha`` gates, RNG counters) = 0; RNG keys from ``seed``.
  numpy generation (a few seconds for 1.4 B values) instead of ~1400 jitted initializers."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  rng = np.random.default_rng(seed)

  def make(path, x):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    while names and names[-1] == "value":  # Variable leaves end in `.value`
      names.pop()
    name = names[-1] if names else ""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.split(jax.random.key(seed), x.shape) if x.shape else jax.random.key(seed)
    if name in ("kernel", "embedding") and x.ndim >= 2:
      fan_in = int(np.prod(x.shape[:-1]))
      v = rng.standard_normal(x.shape, dtype=np.float32)
      v *= np.float32(fan_in ** -0.5)
      return jnp.asarray(v, x.dtype)
    if name == "scale":
      return jnp.ones(x.shape, x.dtype)
    return jnp.zeros(x.shape, x.dtype)

  return jax.tree_util.tree_map_with_path(make, abstract_state)


def cpu_s() -> float:
  """User + system CPU seconds of this process (all threads): less sensitive to other jobs than wall time."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def torch_reference_timing(args) -> dict:
  """Times the original PyTorch UNet (torch_reference.py --timing) in a child process: ``{"forward_s": [...],
  "torch", "threads", "build_s"}`` (warm forwards; the first, cold one is left out as on the JAX side), or
  ``{"unavailable": reason}``."""
  import subprocess
  import tempfile
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  shared = os.environ.get("V2W_SHARED", os.path.join(os.path.dirname(repo), "shared"))
  script = args.torch_script or os.path.join(shared, "reference", "torch_reference.py")
  why = None
  if (args.variant, args.batch, args.frames, args.latent) != ("256", 1, 16, 32):
    why = "the PyTorch reference times the 256 config at B1 T16 32x32 only"
  elif not os.path.exists(script):
    why = f"no {script}"
  elif not os.path.exists(os.path.join(args.torch_src, "configs", "inference_256_v1.0.yaml")):
    why = f"{args.torch_src} is not a DynamiCrafter tree (no configs/inference_256_v1.0.yaml)"
  if why:
    print(f"PyTorch reference unavailable: {why}")
    return {"unavailable": why}
  threads = args.torch_threads or os.cpu_count()
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "timing.json")
    cmd = [args.torch_python, script, "--src", args.torch_src, "--variant", "none", "--timing", "--threads",
           str(threads), "--repeats", str(args.repeats), "--timing-json", out]
    print(f"PyTorch reference: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    # The child prints "forward i: ..." after each forward: its CPU seconds (all threads, /proc) at those lines
    # give CPU-s per warm forward, which other jobs on a shared machine disturb far less than wall time.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks = []
    for line in p.stdout:
      if line.startswith("forward "):
        marks.append(_proc_cpu_s(p.pid))
    stderr = p.stderr.read()
    p.wait()
    wall = time.perf_counter() - t0
    if p.returncode != 0 or not os.path.exists(out):
      tail = [l for l in stderr.strip().splitlines() if l.strip()][-1:] or ["no output"]
      print(f"PyTorch reference unavailable: exit code {p.returncode}: {tail[0][:300]}")
      return {"unavailable": f"exit code {p.returncode}: {tail[0][:300]}"}
    with open(out) as f:
      r = json.load(f)
  fw = [float(v) for v in r["forward_s_rest"]] or [float(r["forward_s_first"])]
  cpu = None
  if len(marks) == len(fw) + 1 and None not in marks:
    cpu = [round(b - a, 2) for a, b in zip(marks, marks[1:])]
  print(f"PyTorch forwards: first (cold) {r['forward_s_first']:.2f} s, then " + ", ".join(f"{v:.2f}" for v in fw)
        + " s wall" + (", " + ", ".join(f"{v:.1f}" for v in cpu) + " CPU-s" if cpu else "")
        + f" (build {r['build_s']:.1f} s; {wall:.0f} s in all); load average {os.getloadavg()[0]:.2f}")
  return {"forward_s": fw, "forward_cpu_s": cpu, "forward_first_s": float(r["forward_s_first"]),
          "torch": r.get("torch"), "threads": r.get("threads"), "build_s": round(float(r["build_s"]), 2)}


def _proc_cpu_s(pid: int):
  """User + system CPU seconds of a running process (all its threads), from /proc; None elsewhere."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--variant", default="256", choices=["256", "512", "1024"], help="models.unet.real_config")
  ap.add_argument("--batch", type=int, default=1, help="clips per forward")
  ap.add_argument("--frames", type=int, default=16, help="frames per clip (T)")
  ap.add_argument("--latent", type=int, default=32, help="latent height = width (256 config: 32)")
  ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                  help="compute dtype (params stay float32); default float32 on CPU, bfloat16 on accelerators")
  ap.add_argument("--warmup", type=int, default=1, help="untimed forwards after compilation")
  ap.add_argument("--repeats", type=int, default=3, help="timed forwards (the median is reported)")
  ap.add_argument("--seed", type=int, default=0, help="parameter / input RNG seed")
  ap.add_argument("--init", default="fast", choices=["fast", "model"],
                  help="fast: numpy N(0, 1/fan_in) kernels, unit norm scales, zero biases; model: the modules' "
                       "own initializers, jitted (minutes of XLA compile on a small CPU)")
  ap.add_argument("--reference-seconds", type=float, default=None,
                  help="PyTorch forward time measured beside this run (same machine, same shapes): prints the ratio")
  ap.add_argument("--reference-note", default="",
                  help="where the reference time comes from (copied into the JSON)")
  ap.add_argument("--torch-src", default=os.environ.get("V2W_DC_SRC", ""),
                  help="exported DynamiCrafter tree: time the original PyTorch UNet first, in this run")
  ap.add_argument("--torch-python", default=sys.executable, help="python with torch, einops, omegaconf")
  ap.add_argument("--torch-script", default="", help="torch_reference.py (default: <shared>/reference/)")
  ap.add_argument("--torch-threads", type=int, default=0, help="torch threads (0 = os.cpu_count())")
  args = ap.parse_args()
  if min(args.batch, args.frames, args.latent, args.repeats) < 1 or args.warmup < 0:
    raise SystemExit("--batch/--frames/--latent/--repeats must be >= 1 and --warmup >= 0")

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  torch_res = None
  if args.torch_src:   # first, alone: the PyTorch model and the JAX model would share the cores
    torch_res = torch_reference_timing(args)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from vid2world_jax.models import unet

  dev = jax.devices()[0]
  dtype = args.dtype or ("float32" if dev.platform == "cpu" else "bfloat16")
  cfg = unet.real_config(args.variant)
  cfg.dtype = dtype
  b, t, hw = args.batch, args.frames, args.latent
  if t != cfg.temporal_length:
    print(f"note: {t} frames but the config's temporal_length is {cfg.temporal_length}")
  n_cpu = os.cpu_count()
  load = os.getloadavg()
  print(f"device: {dev.platform} ({dev.device_kind}), jax {jax.__version__}, {n_cpu} CPUs, "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)")
  env = host_info.environment()
  host_info.print_environment(env, " (the PyTorch child inherits both)")
  print(f"UNet {args.variant} config, batch {b}, {t} frames, {hw}x{hw} latents, compute {dtype}, params float32")

  # ---- construction: abstract (shapes only), then random values
  t0 = time.perf_counter()
  abstract = nnx.eval_shape(lambda: unet.build(cfg, rngs=nnx.Rngs(args.seed)))
  t_abstract = time.perf_counter() - t0
  graphdef, abstract_state = nnx.split(abstract)
  n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))))
  print(f"abstract build (nnx.eval_shape): {t_abstract:.1f} s; {n_params:,} parameters "
        f"({n_params * 4 / 1e9:.2f} GB float32)")

  t0 = time.perf_counter()
  if args.init == "model":  # the modules' own initializers in one jitted program (slow XLA compile on CPU)
    state = jax.block_until_ready(jax.jit(lambda: nnx.state(unet.build(cfg, rngs=nnx.Rngs(args.seed))))())
  else:
    state = fast_random_state(abstract_state, args.seed)
  t_init = time.perf_counter() - t0
  model = nnx.merge(graphdef, state)
  model.eval()  # dropout off (inference); eval() only flips flags, no parameter changes
  graphdef, state = nnx.split(model)
  del model
  rss_after_init = rss_gib()
  print(f"random init ({args.init}): {t_init:.1f} s; peak RSS so far {rss_after_init:.2f} GiB")

  # ---- inputs
  rng = np.random.default_rng(args.seed)
  x = jnp.asarray(rng.standard_normal((b, t, hw, hw, cfg.in_channels), dtype=np.float32))
  timesteps = jnp.full((b,), 500, jnp.int32)
  ctx_len = unet.TEXT_TOKENS + unet.IMAGE_TOKENS_PER_FRAME * t
  context = jnp.asarray(rng.standard_normal((b, ctx_len, cfg.context_dim), dtype=np.float32))
  fs = jnp.full((b,), cfg.default_fs, jnp.int32)

  @jax.jit
  def forward(state, x, timesteps, context, fs):
    return nnx.merge(graphdef, state)(x, timesteps, context, fs)

  t0 = time.perf_counter()
  lowered = forward.lower(state, x, timesteps, context, fs)
  t_lower = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = lowered.compile()
  t_compile = time.perf_counter() - t0
  print(f"trace + lower: {t_lower:.1f} s; XLA compile: {t_compile:.1f} s")
  ma = compiled.memory_analysis()
  mem = {}
  if ma is not None:
    mem = {"arguments_gib": ma.argument_size_in_bytes / GIB, "outputs_gib": ma.output_size_in_bytes / GIB,
           "temporaries_gib": ma.temp_size_in_bytes / GIB,
           "generated_code_gib": ma.generated_code_size_in_bytes / GIB}
    mem["peak_estimate_gib"] = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
                                + ma.temp_size_in_bytes) / GIB
    print(f"compiled memory analysis: arguments {mem['arguments_gib']:.2f} GiB (params + inputs), temporaries "
          f"{mem['temporaries_gib']:.2f} GiB, outputs {mem['outputs_gib'] * 1024:.1f} MiB, "
          f"peak estimate {mem['peak_estimate_gib']:.2f} GiB")

  # ---- timing
  for _ in range(args.warmup):
    out = jax.block_until_ready(compiled(state, x, timesteps, context, fs))
  times, cpu_times = [], []
  for i in range(args.repeats):
    c0 = cpu_s()
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(state, x, timesteps, context, fs))
    times.append(time.perf_counter() - t0)
    cpu_times.append(cpu_s() - c0)
    print(f"forward {i + 1}/{args.repeats}: {times[-1]:.2f} s wall, {cpu_times[-1]:.1f} CPU-s (all threads); "
          f"load average {os.getloadavg()[0]:.2f}")
  med = statistics.median(times)
  med_cpu = statistics.median(cpu_times)
  finite = bool(jnp.isfinite(out).all())
  if out.shape != (b, t, hw, hw, cfg.out_channels) or not finite:
    raise SystemExit(f"bad output: shape {out.shape}, finite {finite}")
  peak = {"peak_rss_gib": rss_gib()}
  try:
    stats = dev.memory_stats() or {}
  except Exception:  # noqa: BLE001 - CPU devices may not implement memory_stats
    stats = {}
  if "peak_bytes_in_use" in stats:
    peak["device_peak_gib"] = stats["peak_bytes_in_use"] / GIB
  print(f"forward median {med:.2f} s wall, {med_cpu:.1f} CPU-s (wall min {min(times):.2f}, max {max(times):.2f}) "
        f"over {args.repeats} runs; "
        f"output {tuple(out.shape)} finite; peak RSS {peak['peak_rss_gib']:.2f} GiB"
        + (f"; device peak {peak['device_peak_gib']:.2f} GiB" if "device_peak_gib" in peak else ""))
  res = {**env, "variant": args.variant, "device": dev.platform, "device_kind": dev.device_kind, "dtype": dtype,
         "batch": b, "frames": t, "latent": hw, "params": n_params, "cpus": n_cpu,
         "load_avg_start": [round(v, 2) for v in load], "load_avg_end": [round(v, 2) for v in os.getloadavg()],
         "abstract_build_s": round(t_abstract, 2), "init": args.init, "init_s": round(t_init, 2),
         "lower_s": round(t_lower, 2),
         "compile_s": round(t_compile, 2), "forward_s": [round(v, 3) for v in times],
         "forward_median_s": round(med, 3), "forward_cpu_s": [round(v, 2) for v in cpu_times],
         "forward_cpu_median_s": round(med_cpu, 2), "rss_after_init_gib": round(rss_after_init, 3),
         **{k: round(v, 3) for k, v in peak.items()}, **{k: round(v, 3) for k, v in mem.items()}}
  if torch_res is not None and "forward_s" in torch_res:
    tt = torch_res["forward_s"]
    t_min, t_med = min(tt), statistics.median(tt)
    ratio_min, ratio_med = min(times) / t_min, med / t_med
    print(f"PyTorch (same run, {torch_res.get('torch')}, {torch_res.get('threads')} threads): fastest {t_min:.2f} s, "
          f"median {t_med:.2f} s; JAX fastest {min(times):.2f} s, median {med:.2f} s -> JAX / PyTorch = "
          f"{ratio_min:.2f} (fastest), {ratio_med:.2f} (median) ({'JAX faster' if ratio_min < 1 else 'JAX slower'})")
    tc = torch_res.get("forward_cpu_s")
    if tc:
      cpu_ratio = med_cpu / statistics.median(tc)
      print(f"CPU seconds per forward (all threads; less disturbed by other jobs): PyTorch median "
            f"{statistics.median(tc):.1f}, JAX median {med_cpu:.1f} -> JAX / PyTorch = {cpu_ratio:.2f}")
      res.update(torch_forward_cpu_s=tc, jax_over_torch_cpu=round(cpu_ratio, 3))
    res.update(torch_forward_s=[round(v, 3) for v in tt], torch_min_s=round(t_min, 3),
               torch_median_s=round(t_med, 3), torch_build_s=torch_res.get("build_s"),
               torch_version=torch_res.get("torch"), torch_threads=torch_res.get("threads"),
               jax_min_s=round(min(times), 3), jax_over_torch=round(ratio_min, 3),
               jax_over_torch_median=round(ratio_med, 3))
  elif torch_res is not None:
    res["torch_unavailable"] = torch_res["unavailable"]
  if args.reference_seconds:
    ratio = args.reference_seconds / med
    print(f"PyTorch reference {args.reference_seconds:.1f} s per forward -> JAX is {ratio:.2f}x "
          f"{'faster' if ratio >= 1 else 'slower'} (reference / JAX median)"
          + (f" [{args.reference_note}]" if args.reference_note else ""))
    res.update(reference_s=args.reference_seconds, speedup_vs_reference=round(ratio, 3))
    if args.reference_note:
      res["reference_note"] = args.reference_note
  print(json.dumps(res))


if __name__ == "__main__":
  from vid2world_jax import host_memory  # noqa: E402
  host_memory.reexec_with_huge_pages()   # as the project's command lines do (docs/profile.md)
  main()
