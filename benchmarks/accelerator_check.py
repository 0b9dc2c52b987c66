r"""Accelerator check: the 512 train step and the sampler on one lent GPU / TPU, in one short run.

  bash benchmarks/accelerator_check.sh                     # full: configs/rt1.py (512, bf16, remat), ~8 min
  bash benchmarks/accelerator_check.sh --mode=tiny         # CPU smoke test (tests/test_accelerator_check.py)

Phases, each in its own process with its own timeout (a phase that hangs, runs out of memory or fails leaves the
others' figures intact, and the partial results it printed before are kept):
  * train:   training.setup.Setup on one device, data.source=latents (the step holds no VAE / CLIP: precomputed latents,
             random batch), micro-batch ``--batch`` clips of 16 frames at 320x512; compile (ahead of time), then
             ``--train_steps`` timed steps: step time (median), peak device memory, FLOPs per step from the
             compiled cost analysis and MFU against the device's peak (logging_utils.PEAK_FLOPS).
  * sampler: autoregressive rollout (vid2world_jax.rollout) from 1 context frame, ``--horizon`` new frames:
             the teacher (``--ddim_steps`` DDIM steps with causal action guidance, both passes batched, + CFG
             rescale), uncached and cached (KV-cached fast path), and the few-step student's sampler (1 DDIM step,
             conditional pass only, cached: ``SamplerConfig(ddim_steps=1, guidance_scale=None)``; same network,
             random weights, so the same cost per pass as a distilled checkpoint): compile+first call, then the
             steady-state seconds per generated frame (rollout + VAE decode, batch 1).
Weights are random (the right configuration, no checkpoint needed). Readable lines first; the LAST line is one JSON
object: ``{"ok", "mode", "device", "train": {...}, "sampler": {...}, "errors": {...}, "wall_s"}``.

Dependencies on the lent machine: jax, flax, optax, orbax, numpy, absl, yaml (no grain: nothing here imports it;
ml_collections travels as a wheel, benchmarks/wheels/, put on PYTHONPATH by the .sh when it is missing). The
orchestrating process never imports jax, so each phase gets the whole device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("train", "sampler")
SAMPLERS = ("uncached", "cached", "student")   # teacher uncached / cached; the student's sampler (cached)
STUDENT_STEPS = 1                              # the few-step student: 1 DDIM step, conditional pass only
DEFAULT_TIMEOUTS = {"full": {"train": 260, "sampler": 240}, "tiny": {"train": 240, "sampler": 360}}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--mode", choices=("full", "tiny"), default="full",
                 help="full: configs/rt1.py 512 model; tiny: configs/test_tiny.py:vae (CPU tests; the train "
                      "phase uses the toy denoiser there)")
  p.add_argument("--phase", choices=PHASES, default=None, help="internal: run one phase in this process")
  p.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases to run")
  p.add_argument("--batch", type=int, default=1, help="train: clips per step (one device, no accumulation)")
  p.add_argument("--train_steps", type=int, default=3, help="train: timed steps after the first")
  p.add_argument("--encoders_in_step", action="store_true",
                 help="train: encode frames with the VAE / CLIP inside the step (default: precomputed latents)")
  p.add_argument("--ddim_steps", type=int, default=None, help="sampler: DDIM steps (full 50, tiny 2)")
  p.add_argument("--horizon", type=int, default=2, help="sampler: generated frames per rollout")
  p.add_argument("--samplers", default="uncached,cached,student",
                 help="sampler: which rollouts to time (uncached / cached: the teacher; student: 1 step, no "
                      "guidance, cached)")
  p.add_argument("--timeouts", default="", help="per-phase seconds, e.g. train=260,sampler=190")
  a = p.parse_args(argv)
  if a.ddim_steps is None:
    a.ddim_steps = 50 if a.mode == "full" else 2
  return a


def emit(obj: dict) -> None:
  """A phase's (partial) result: one JSON line, flushed (kept by the orchestrator if the phase dies later)."""
  print(json.dumps(obj), flush=True)


# =============================================================================================================
# Phases (run in child processes; these import jax).

def _config(mode: str, *, latents: bool):
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  if mode == "full":
    from configs import rt1
    cfg = rt1.get_config("512")
  else:
    from configs import test_tiny
    cfg = test_tiny.get_config("vae")          # tiny VAE + CLIP + resampler, tiny real UNet, 32x32 frames
  cfg.data.source = "latents" if latents else "synthetic"   # the model builder reads only the source name
  cfg.optim.grad_accum_steps = 1
  cfg.mesh.shape.data, cfg.mesh.shape.fsdp = 1, 1
  return cfg


def _device_info() -> dict:
  import jax
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
          "jax": jax.__version__}


def _peak_gib():
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else round(peak / 2 ** 30, 3)


def run_train(a) -> None:
  import jax
  import numpy as np
  from vid2world_jax import logging_utils, sharding
  from vid2world_jax.training.setup import Setup
  out = {"phase": "train", "mode": a.mode, **_device_info()}
  cfg = _config(a.mode, latents=not a.encoders_in_step)
  if a.mode == "tiny":
    cfg.model.arch = "toy"   # the tiny real UNet's gradient compiles for minutes on a busy CPU; the sampler keeps it
  cfg.data.batch_size = a.batch
  out.update(arch=cfg.model.arch, batch=a.batch, frames=int(cfg.data.clip_length), resolution=list(cfg.data.resolution),
             precision=cfg.precision, remat=bool(cfg.remat), latents=not a.encoders_in_step)
  emit(dict(out, stage="start"))
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
  t0 = time.time()
  setup = Setup(cfg, mesh)
  state, rest, frozen = setup.init(eager=True)   # op by op: no constructor compile
  jax.block_until_ready(state)
  out.update(init_s=round(time.time() - t0, 2), params=int(setup.num_params))
  emit(dict(out, stage="init"))
  t0 = time.time()
  compiled = setup.step.lower(*setup.abstract_args()).compile()
  out["compile_s"] = round(time.time() - t0, 2)
  flops = logging_utils.compiled_flops(compiled)
  out["flops_per_step"] = flops
  try:
    ma = compiled.memory_analysis()
    out["compiled_memory_gib"] = {k: round(getattr(ma, k + "_size_in_bytes") / 2 ** 30, 3)
                                  for k in ("argument", "output", "temp", "generated_code")
                                  if hasattr(ma, k + "_size_in_bytes")}
  except Exception as e:  # noqa: BLE001 - not every backend implements it
    out["compiled_memory_gib"] = f"unavailable ({type(e).__name__})"
  emit(dict(out, stage="compiled"))
  r = np.random.default_rng(0)
  host = {k: r.standard_normal(v.shape).astype(np.float32) for k, v in setup.abs_batch.items()}
  batch = jax.device_put(host, setup.batch_sh)
  t0 = time.time()
  state, m = compiled(state, frozen, rest, batch)
  jax.block_until_ready(m["loss"])
  out["first_step_s"] = round(time.time() - t0, 3)
  times = []
  for _ in range(a.train_steps):
    t0 = time.time()
    state, m = compiled(state, frozen, rest, batch)
    jax.block_until_ready(m["loss"])
    times.append(time.time() - t0)
  step_s = float(np.median(times)) if times else None
  peak = logging_utils.peak_flops_per_device()
  out.update(step_times_s=[round(t, 4) for t in times], step_s=None if step_s is None else round(step_s, 4),
             loss=float(m["loss"]), loss_finite=bool(np.isfinite(float(m["loss"]))), peak_memory_gib=_peak_gib(),
             device_peak_flops=peak)
  if flops and step_s:
    out["tflops_per_s"] = round(flops / step_s / 1e12, 2)
    out["mfu"] = round(flops / step_s / peak, 4) if peak else None
    out["clips_per_s"] = round(a.batch / step_s, 3)
  emit(dict(out, stage="done"))


def run_sampler(a) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from vid2world_jax import sharding, world_model
  from vid2world_jax.inference import sampler as rollout
  from vid2world_jax.inference import rollout_model
  from vid2world_jax.training.setup import Setup
  out = {"phase": "sampler", "mode": a.mode, **_device_info()}
  cfg = _config(a.mode, latents=False)           # the sampler needs the VAE (encode / decode) and CLIP
  cfg.data.batch_size = 1
  mcfg = world_model.model_config(cfg)
  h, w = (int(s) for s in cfg.data.resolution)
  win = int(mcfg.unet.temporal_length)
  out.update(resolution=[h, w], ddim_steps=a.ddim_steps, guidance_scale=2.5, guidance_rescale=0.7,
             horizon=a.horizon, window=win, batch=1, precision=cfg.precision)
  emit(dict(out, stage="start"))
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
  t0 = time.time()
  setup = Setup(cfg, mesh)
  state, rest, frozen = setup.init(eager=True)   # op by op: no constructor compile
  params = state["params"]
  del state
  wm = nnx.merge(setup.graphdef, nnx.State(params), rest)
  g, s = nnx.split(wm)
  fg = setup.frozen_graphdef
  out["init_s"] = round(time.time() - t0, 2)
  emit(dict(out, stage="init"))
  r = np.random.default_rng(0)
  ctx = jnp.asarray(r.uniform(-1, 1, (1, 1, h, w, 3)).astype(np.float32))
  acts = jnp.asarray(r.uniform(-1, 1, (1, a.horizon, int(mcfg.unet.action_dim))).astype(np.float32))
  encode = jax.jit(lambda st, x: nnx.merge(fg, st).encode(x, jax.random.key(0)))
  decode = jax.jit(lambda st, z: nnx.merge(fg, st).decode(z))
  lat = jax.block_until_ready(encode(frozen, ctx))
  keys = rollout.rollout_keys(0, 1)
  teacher = rollout.SamplerConfig(ddim_steps=a.ddim_steps, guidance_scale=2.5, guidance_rescale=0.7, window=win)
  student = rollout.SamplerConfig(ddim_steps=STUDENT_STEPS, guidance_scale=None, window=win)
  for name in [x for x in a.samplers.split(",") if x]:
    if name not in SAMPLERS:
      raise SystemExit(f"error: --samplers: unknown {name!r} (choose from {', '.join(SAMPLERS)})")
    model = rollout_model.world_model_rollout_model(mcfg, g, fg, cached=(name != "uncached"))
    scfg = student if name == "student" else teacher
    t0 = time.time()
    z = jax.block_until_ready(rollout.rollout(model, scfg, (s, frozen), lat, acts, keys, horizon=a.horizon))
    first = time.time() - t0
    t0 = time.time()
    z = jax.block_until_ready(rollout.rollout(model, scfg, (s, frozen), lat, acts, keys, horizon=a.horizon))
    steady = time.time() - t0
    jax.block_until_ready(decode(frozen, z[:, 1:]))           # compile the decoder of this shape
    t0 = time.time()
    rgb = jax.block_until_ready(decode(frozen, z[:, 1:]))
    dec = time.time() - t0
    out[name] = {"ddim_steps": scfg.ddim_steps, "guidance": scfg.guidance_scale is not None,
                 "compile_plus_first_s": round(first, 3), "rollout_s": round(steady, 4),
                 "decode_s": round(dec, 4), "s_per_frame": round((steady + dec) / a.horizon, 4),
                 "finite": bool(np.isfinite(np.asarray(rgb, np.float32)).all())}
    out["peak_memory_gib"] = _peak_gib()
    emit(dict(out, stage=name))
  emit(dict(out, stage="done"))


# =============================================================================================================
# Orchestrator (no jax here).

def _timeouts(a) -> dict:
  t = dict(DEFAULT_TIMEOUTS[a.mode])
  for item in [x for x in a.timeouts.split(",") if x]:
    k, v = item.split("=")
    if k not in PHASES:
      raise SystemExit(f"error: --timeouts: unknown phase {k!r} (phases: {', '.join(PHASES)})")
    t[k] = float(v)
  return t


def _last_json(text: str, phase: str) -> dict | None:
  last = None
  for line in text.splitlines():
    line = line.strip()
    if line.startswith("{"):
      try:
        obj = json.loads(line)
      except ValueError:
        continue
      if obj.get("phase") == phase:
        last = obj
  return last


def _run_phase(a, phase: str, timeout: float, argv: list) -> tuple[dict | None, str | None]:
  cmd = [sys.executable, os.path.abspath(__file__), f"--phase={phase}", *argv]
  t0 = time.time()
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    stdout, stderr, rc = p.stdout, p.stderr, p.returncode
    err = None if rc == 0 else f"exit code {rc}: " + (_last_line(stderr) or "no message")
  except subprocess.TimeoutExpired as e:
    stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    err = f"timeout after {timeout:.0f} s"
  res = _last_json(stdout, phase)
  if res is not None:
    res["phase_wall_s"] = round(time.time() - t0, 1)
    if err is None and res.get("stage") != "done":
      err = f"stopped at stage {res.get('stage')!r}"
  elif err is None:
    err = "no result printed"
  if err:
    sys.stderr.write(f"--- {phase} stderr (tail) ---\n{stderr[-3000:]}\n")
  return res, err


def _last_line(text: str) -> str:
  lines = [l for l in text.strip().splitlines() if l.strip()]
  return lines[-1][:500] if lines else ""


def _summary(name: str, r: dict) -> str:
  if name == "train":
    return (f"train: {r.get('device_kind')} batch {r.get('batch')} x {r.get('frames')} frames "
            f"{r.get('resolution')}: step {r.get('step_s')} s, peak {r.get('peak_memory_gib')} GiB, "
            f"{r.get('tflops_per_s')} TFLOP/s, MFU {r.get('mfu')} (compile {r.get('compile_s')} s)")
  parts = [f"{k} {r[k].get('s_per_frame')} s/frame (first call {r[k].get('compile_plus_first_s')} s)"
           for k in ("uncached", "cached") if isinstance(r.get(k), dict)]
  line = (f"sampler: {r.get('resolution')} teacher {r.get('ddim_steps')} DDIM steps, guidance: " + "; ".join(parts))
  if isinstance(r.get("student"), dict):
    st = r["student"]
    line += (f"; student {STUDENT_STEPS} step, no guidance, cached: {st.get('s_per_frame')} s/frame (first call "
             f"{st.get('compile_plus_first_s')} s)")
  return line + f"; peak {r.get('peak_memory_gib')} GiB"


def orchestrate(a, argv: list) -> int:
  t_start = time.time()
  timeouts = _timeouts(a)
  phases = [p for p in a.phases.split(",") if p]
  bad = [p for p in phases if p not in PHASES]
  if bad:
    raise SystemExit(f"error: unknown phases {bad} (phases: {', '.join(PHASES)})")
  result = {"ok": True, "mode": a.mode, "device": None, "errors": {}}
  for phase in phases:
    print(f"{phase}: running (timeout {timeouts[phase]:.0f} s)", flush=True)
    res, err = _run_phase(a, phase, timeouts[phase], argv)
    if res is not None:
      result[phase] = res
      result["device"] = result["device"] or res.get("device_kind")
      print(_summary(phase, res), flush=True)
    if err:
      result["ok"] = False
      result["errors"][phase] = err
      print(f"{phase}: FAILED: {err}", flush=True)
  result["wall_s"] = round(time.time() - t_start, 1)
  print(json.dumps(result), flush=True)
  return 0 if result["ok"] else 1


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  a = parse_args(argv)
  if a.phase is None:
    return orchestrate(a, [x for x in argv if not x.startswith("--phase=")])
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  {"train": run_train, "sampler": run_sampler}[a.phase](a)
  return 0


if __name__ == "__main__":
  sys.exit(main())
