r"""Side by side with the original: the original Vid2World PyTorch autoregressive rollout and this project's rollout
(teacher and student) on the same tiny UNet, the same weights, context and number of frames, batch 1.

  python benchmarks/original_rollout.py --original_root=/path/to/worldfoundry_checkout \
      [--ddim_steps=10] [--frames=7] [--hw=16] [--repeats=3]

``--original_root`` (default ``$V2W_ORIGINAL_ROOT``): a directory containing the ``worldfoundry/`` package of the
public repository weed33834/WorldFoundry, which vendors thuml/Vid2World's ``lvdm`` code; the original modules are
imported from there exactly as ``tools/vid2world_reference.py`` imports them (its ``_import_original``), nothing of
them is copied here. Without it (or without torch) one line says so and only this project's side is timed (random
weights of the same config); the JSON line is printed either way.

What runs on each side
----------------------
* Model: ``tools/vid2world_reference.TINY``, the original ``openaimodel3d_vid2world.UNetModel`` (causal settings as
  released, MLP action encoder, ``temporal_length`` 8), parameters drawn by that tool's ``_redraw``. Its state dict
  goes through this project's converter (``conversion.core.convert`` with the UNet's torch name table) into the
  JAX UNet, so both sides run the same weights. ``same_weights_max_rel_err`` in the JSON: one network pass of the
  original and of the converted faithful JAX UNet (``temporal_norm="joint"``, as released) on the same inputs.
* Original (PyTorch, CPU, float32): ORIGINAL code = ``DDIMSampler`` of ``lvdm/models/samplers/ddim_vid2world.py``
  (``sample(..., ar=True, ar_noise_schedule=1, cond_frame=1)``: the released autoregressive path with causal action
  guidance, 2 network calls per DDIM step: all actions / the newest frame's action masked, CFG rescale), the
  original ``DiffusionWrapper`` (``conditioning_key="hybrid"``: concat latent, context, action alignment) and the
  original UNet; the schedule, ``q_sample``, ``predict_*`` and ``apply_model`` are the original ``DDPM`` /
  ``LatentDiffusion`` methods. DRIVER (here) = ``_OriginalLDM``, the few attributes of ``LatentDiffusion`` the
  sampler reads (schedule buffers registered by the original ``DDPM.register_schedule`` with the released RT-1
  settings: v-prediction, zero-terminal-SNR linear betas, dynamic rescale 0.7), built without its VAE / CLIP
  (the sampler only calls the network), and one override: the original ``DDIMSampler.register_buffer`` moves every
  buffer to ``"cuda"``; here they stay on the CPU. Plus the ``timestep_embedding`` fix of ``_import_original``
  (Vid2World's float32 ``[B, T]`` version). The sampler's optional ``use_kv_cache`` path is off (its default).
* This project (JAX, CPU, float32): ``inference.sampler.rollout`` on ``world_model_rollout_model`` (the path the
  CLI, the gym envs and play run), one ``jax.jit`` per setting, the converted weights with
  ``temporal_norm="cumulative"`` (this project's causal setting, ``configs/base.causalize``; the released joint
  GroupNorm pools over the window and is not causal, so the frame cache cannot run it; same cost per pass):
  - teacher, uncached: ``--ddim_steps`` DDIM steps, causal action guidance (both passes batched in one call),
    the whole window every step;
  - teacher, cached: the same with the frame cache (history once per frame, then the new frame only per step);
  - student, cached: ``SamplerConfig(ddim_steps=1, guidance_scale=None)``: 1 step, conditional pass only (the
    few-step student's sampler; the weights are the teacher's here: same network, same cost per pass).
* Same on both: 1 context latent frame, ``--frames`` generated frames (1 + frames <= 8, the window: it grows and
  never slides, as in the original, which has no sliding window), ``--hw`` x ``--hw`` latents with 4 channels,
  93 context tokens (77 + 16), 13-dim actions, eta 1, ``uniform_trailing`` timesteps, guidance scale 2.5, rescale
  0.7, history noise at the second-to-last DDIM timestep.

Timing: one warm-up call (the JAX compile), then ``--repeats`` calls; the fastest counts. frames/s = generated
frames / seconds per rollout. Readable lines first; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

CONTEXT_TOKENS = 77 + 16   # text tokens + one frame's image tokens: shared by every frame on both sides
GUIDANCE, RESCALE, ETA, SPACING = 2.5, 0.7, 1.0, "uniform_trailing"


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--original_root", default=os.environ.get("V2W_ORIGINAL_ROOT", ""),
                 help="directory containing WorldFoundry's worldfoundry/ (default: $V2W_ORIGINAL_ROOT)")
  p.add_argument("--ddim_steps", type=int, default=10, help="teacher DDIM steps per generated frame (>= 2)")
  p.add_argument("--frames", type=int, default=7, help="generated frames (1 context frame + frames <= 8)")
  p.add_argument("--hw", type=int, default=16, help="latent height = width")
  p.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (fastest counts)")
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  if a.ddim_steps < 2:
    p.error("--ddim_steps must be >= 2 (the original ar sampler noises the history at the second-to-last step)")
  if a.repeats < 1:
    p.error("--repeats must be >= 1")
  return a


def _reference_tool():
  """``tools/vid2world_reference.py`` (TINY, ``_import_original``, ``_redraw``)."""
  tools = os.path.join(REPO, "tools")
  if tools not in sys.path:
    sys.path.insert(0, tools)
  import vid2world_reference  # pylint: disable=import-outside-toplevel
  return vid2world_reference


def _timed(fn, repeats: int) -> dict:
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return {"first_call_s": round(first, 4), "times_s": [round(t, 4) for t in times], "best_s": min(times)}


# =============================================================================================================
# Inputs shared by both sides (numpy, channels first as the original takes them).

def make_inputs(a, tiny: dict) -> dict:
  r = np.random.default_rng(a.seed + 1)
  total = 1 + a.frames
  c = tiny["out_channels"]
  return {
      "z": r.standard_normal((1, c, 1, a.hw, a.hw)).astype(np.float32),                  # context latent
      "context": r.standard_normal((1, CONTEXT_TOKENS, tiny["context_dim"])).astype(np.float32),
      "actions": r.uniform(-1, 1, (1, total, tiny["action_dim"])).astype(np.float32),  # [:, f] taken at f
  }


# =============================================================================================================
# The original (PyTorch).

def load_original(root: str, a):
  """``(rollout(inputs, steps), one_pass(x, t, context, actions, mask), weights, torch version)``: one original
  rollout, one original network pass, and the UNet state dict (numpy, with the checkpoint prefix). Raises
  ImportError / SystemExit when the original cannot be imported."""
  import importlib

  import torch
  ref = _reference_tool()
  ref._import_original(root)  # pylint: disable=protected-access
  ddpm = importlib.import_module(ref.LVDM + ".models.ddpm3d_vid2world")
  ddim = importlib.import_module(ref.LVDM + ".models.samplers.ddim_vid2world")

  class _OriginalLDM(torch.nn.Module):
    """DRIVER: what the original DDIMSampler reads of LatentDiffusion; every method is the original's."""
    register_schedule = ddpm.DDPM.register_schedule
    q_sample = ddpm.DDPM.q_sample
    predict_eps_from_z_and_v = ddpm.DDPM.predict_eps_from_z_and_v
    predict_start_from_z_and_v = ddpm.DDPM.predict_start_from_z_and_v
    apply_model = ddpm.LatentDiffusion.apply_model
    device = torch.device("cpu")

    def __init__(self):
      super().__init__()
      # released RT-1 settings (config_rt1_test_ar.yaml), as LatentDiffusion.__init__ applies them
      self.rescale_betas_zero_snr, self.parameterization, self.v_posterior = True, "v", 0.0
      self.register_schedule(beta_schedule="linear", timesteps=1000, linear_start=0.00085, linear_end=0.012)
      self.use_dynamic_rescale = True
      scale = np.concatenate([np.linspace(1.0, 0.7, 400), np.full(self.num_timesteps, 0.7)])
      self.register_buffer("scale_arr", torch.tensor(scale, dtype=torch.float32))
      self.model = ddpm.DiffusionWrapper(
          {"target": ref.LVDM + ".modules.networks.openaimodel3d_vid2world.UNetModel", "params": ref.TINY},
          "hybrid")

  class _CpuDDIMSampler(ddim.DDIMSampler):
    def register_buffer(self, name, attr):  # DRIVER: the original moves every buffer to "cuda"
      setattr(self, name, attr)

  torch.manual_seed(a.seed)
  ldm = _OriginalLDM().eval()
  ref._redraw(ldm.model.diffusion_model, torch.Generator().manual_seed(a.seed))  # pylint: disable=protected-access
  weights = {"model.diffusion_model." + k: v.detach().numpy().copy()
             for k, v in ldm.model.diffusion_model.state_dict().items()}
  sampler = _CpuDDIMSampler(ldm)

  def rollout(inputs, steps):
    total = 1 + a.frames
    z = torch.from_numpy(inputs["z"])
    cond = {"c_crossattn": [torch.from_numpy(inputs["context"])],
            "c_concat": [z.repeat(1, 1, total, 1, 1)],            # the conditioning frame over the clip
            "c_action": [torch.from_numpy(inputs["actions"])],
            "c_action_mask": [torch.ones(1, total)]}
    with torch.no_grad():
      samples, _ = sampler.sample(S=steps, batch_size=1, shape=(z.shape[1], total, a.hw, a.hw), conditioning=cond,
                                  verbose=False, eta=ETA, unconditional_guidance_scale=GUIDANCE,
                                  unconditional_conditioning=None, guidance_rescale=RESCALE,
                                  timestep_spacing=SPACING, ar=True, ar_noise_schedule=1, cond_frame=1, z=z)
    return samples

  def one_pass(x, t, context, actions, mask):
    with torch.no_grad():
      out = ldm.model.diffusion_model(torch.from_numpy(x), torch.from_numpy(t),
                                      context=[torch.from_numpy(context), torch.from_numpy(actions)],
                                      action_mask=torch.from_numpy(mask))
    return out.numpy()

  return rollout, one_pass, weights, torch.__version__


# =============================================================================================================
# This project (JAX).

def build_project(a, tiny: dict, weights: dict | None, context: np.ndarray):
  """``(world-model config, graphdef, frozen graphdef, params, faithful_unet_or_None)``."""
  import jax.numpy as jnp
  from flax import nnx
  from configs import test_tiny
  from vid2world_jax import world_model
  from vid2world_jax.conversion import core
  from vid2world_jax.models import unet as U

  def convert_into(module):
    params, report = core.convert(weights, U.torch_name_table(module), core.param_shapes(nnx.state(module, nnx.Param)),
                                  aliases=U.TORCH_ALIASES, ignore=U.TORCH_IGNORE)
    if not (report.ok and report.mapped == report.total_flax):
      raise SystemExit("error: converting the original UNet failed: " + report.summary())
    core.load_into(module, params)

  cfg = test_tiny.get_config()
  ucfg = U.config_from_torch_params(tiny)          # the released settings (temporal_norm "joint")
  faithful = None
  if weights is not None:
    faithful = U.build(ucfg, rngs=nnx.Rngs(0))
    faithful.eval()
    convert_into(faithful)
  ucfg = ucfg.copy_and_resolve_references()
  ucfg.temporal_norm = "cumulative"                 # causal (configs/base.causalize): the frame cache can run it
  cfg.model.unet = ucfg
  cfg.model.variant = "tiny"
  cfg.model.first_stage = "vae"                     # 4 latent channels; rollouts run on latents (no VAE built)
  cfg.model.context = "learned_null"                # a fixed context tensor: the same tokens as the original gets
  cfg.model.context_len = CONTEXT_TOKENS
  cfg.model.fps = int(tiny["default_fs"])           # the original passes fs=None -> default_fs
  mcfg = world_model.model_config(cfg)
  wm, fs = world_model.build(mcfg, rngs=nnx.Rngs(params=a.seed, dropout=1), encoders=False)
  if weights is not None:
    convert_into(wm.unet)
  wm.null_context.set_value(jnp.asarray(context[0]))
  g, s = nnx.split(wm)
  fg, fss = nnx.split(fs)
  return mcfg, g, fg, (s, fss), faithful


def project_rollouts(a, mcfg, g, fg, params, inputs) -> dict:
  import jax
  import jax.numpy as jnp
  from vid2world_jax.inference import rollout_model
  from vid2world_jax.inference import sampler as rl
  win = int(mcfg.unet.temporal_length)
  ctx = jnp.asarray(np.moveaxis(inputs["z"], 1, -1))          # [1, 1, h, w, c]
  acts = jnp.asarray(inputs["actions"])
  keys = rl.rollout_keys(a.seed, 1)
  teacher = rl.SamplerConfig(ddim_steps=a.ddim_steps, eta=ETA, spacing=SPACING, guidance_scale=GUIDANCE,
                             guidance_rescale=RESCALE, window=win)
  student = rl.SamplerConfig(ddim_steps=1, eta=ETA, spacing=SPACING, guidance_scale=None, window=win)
  runs = {"teacher_uncached": (False, teacher), "teacher_cached": (True, teacher), "student_cached": (True, student)}
  out = {}
  for name, (cached, scfg) in runs.items():
    model = rollout_model.world_model_rollout_model(mcfg, g, fg, cached=cached)
    fn = lambda: jax.block_until_ready(rl.rollout(model, scfg, params, ctx, acts, keys, horizon=a.frames))
    res = _timed(fn, a.repeats)
    z = np.asarray(fn())
    res.update(ddim_steps=scfg.ddim_steps, passes_per_step=1 if scfg.guidance_scale is None else 2, cached=cached,
               finite=bool(np.isfinite(z).all()))
    out[name] = res
    print(f"  {name}: first call (compile + run) {res['first_call_s']:.2f} s, best {res['best_s']:.4f} s",
          flush=True)
  return out


def same_weights_check(one_pass, faithful, inputs, hw) -> float:
  """Max relative error between one original network pass and the converted faithful JAX UNet's."""
  import jax.numpy as jnp
  r = np.random.default_rng(7)
  x = r.standard_normal((1, 8, 2, hw, hw)).astype(np.float32)
  t = np.array([[39, 999]], np.int64)
  acts = inputs["actions"][:, :2]
  mask = np.ones((1, 2), np.float32)
  want = one_pass(x, t, inputs["context"], acts, mask)                                            # [B, C, T, H, W]
  got = faithful(jnp.asarray(np.moveaxis(x, 1, -1)), jnp.asarray(t, jnp.int32), jnp.asarray(inputs["context"]),
                 fs=jnp.full((1,), 3, jnp.int32), actions=jnp.asarray(acts), action_mask=jnp.asarray(mask))
  got = np.moveaxis(np.asarray(got), -1, 1)
  return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def pick_torch_threads(one_pass, inputs, a) -> dict:
  """torch's intra-op threads for the original: the faster of 1 and ``os.cpu_count()`` on one full-window network
  pass (best of 3). On a loaded machine torch's OpenMP threads spin against other processes (measured here at load
  ~5 on 2 cores: one pass 8x to 60x slower with 2 threads than with 1), so the choice is measured, not assumed."""
  import torch
  r = np.random.default_rng(3)
  total = 1 + a.frames
  x = r.standard_normal((1, 8, total, a.hw, a.hw)).astype(np.float32)
  t = np.full((1, total), 500, np.int64)
  mask = np.ones((1, total), np.float32)
  pass_s = {}
  for n in sorted({1, os.cpu_count() or 1}):
    torch.set_num_threads(n)
    one_pass(x, t, inputs["context"], inputs["actions"], mask)
    times = []
    for _ in range(3):
      t0 = time.perf_counter()
      one_pass(x, t, inputs["context"], inputs["actions"], mask)
      times.append(time.perf_counter() - t0)
    pass_s[n] = min(times)
  chosen = min(pass_s, key=pass_s.get)
  torch.set_num_threads(chosen)
  return {"chosen": chosen, "pass_s": pass_s}


# =============================================================================================================

def main(argv=None) -> int:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TQDM_DISABLE", "1")   # the original sampler's per-frame progress bar
  a = parse_args(argv)
  tiny = dict(_reference_tool().TINY)
  if 1 + a.frames > tiny["temporal_length"]:
    raise SystemExit(f"error: 1 context + {a.frames} frames exceed the window {tiny['temporal_length']}")
  load_before = os.getloadavg()
  inputs = make_inputs(a, tiny)
  original, why = None, None
  weights = one_pass = None
  torch_version = None
  if not a.original_root:
    why = "no --original_root / $V2W_ORIGINAL_ROOT (a checkout containing WorldFoundry's worldfoundry/)"
  else:
    try:
      orig_rollout, one_pass, weights, torch_version = load_original(a.original_root, a)
    except (ImportError, SystemExit, OSError) as e:
      why = f"cannot import it from {a.original_root!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
  if why:
    print(f"original: not timed, {why}; timing this project's side only (random weights, same config)")
  print(f"setup: tiny Vid2World UNet (tools/vid2world_reference.TINY), {a.hw}x{a.hw}x{tiny['out_channels']} "
        f"latents, 1 context frame + {a.frames} generated (window {tiny['temporal_length']}), batch 1, teacher "
        f"{a.ddim_steps} DDIM steps with guidance {GUIDANCE}, student 1 step; {os.cpu_count()} CPU cores, load "
        f"average {load_before[0]:.2f} before", flush=True)

  import jax
  mcfg, g, fg, params, faithful = build_project(a, tiny, weights, inputs["context"])
  err = None
  if weights is not None:
    err = same_weights_check(one_pass, faithful, inputs, a.hw)
    print(f"same weights: one network pass, original vs converted JAX UNet: max rel err {err:.2e}", flush=True)
    threads = pick_torch_threads(one_pass, inputs, a)
    print(f"original (PyTorch, {threads['chosen']} thread(s): the faster on one network pass of "
          + ", ".join(f"{n} thread(s) {1000 * t:.1f} ms" for n, t in threads["pass_s"].items()) + "):", flush=True)
    original = _timed(lambda: orig_rollout(inputs, a.ddim_steps), a.repeats)
    sample = orig_rollout(inputs, a.ddim_steps).numpy()
    original.update(ddim_steps=a.ddim_steps, passes_per_step=2, cached=False, finite=bool(np.isfinite(sample).all()),
                    torch=torch_version, torch_threads=threads["chosen"],
                    torch_threads_pass_s={str(k): round(v, 5) for k, v in threads["pass_s"].items()})
    print(f"  first call {original['first_call_s']:.2f} s, best {original['best_s']:.4f} s", flush=True)
  print(f"this project (JAX {jax.__version__}, {jax.devices()[0].platform}):", flush=True)
  project = project_rollouts(a, mcfg, g, fg, params, inputs)
  load_after = os.getloadavg()

  rows = ([("original Vid2World (PyTorch)", "original", original)] if original else []) + [
      ("project teacher, uncached", "teacher_uncached", project["teacher_uncached"]),
      ("project teacher, cached", "teacher_cached", project["teacher_cached"]),
      ("project student, cached", "student_cached", project["student_cached"])]
  for _, _, r in rows:
    r["frames_per_s"] = a.frames / r["best_s"]
    r["best_s"] = round(r["best_s"], 4)
  print()
  head = f"{'rollout':34s} {'steps':>5s} {'passes':>6s} {'s/rollout':>10s} {'frames/s':>9s} {'x original':>10s}"
  print(head)
  print("-" * len(head))
  for label, _, r in rows:
    rel = f"{r['frames_per_s'] / original['frames_per_s']:.2f}" if original else "-"
    print(f"{label:34s} {r['ddim_steps']:5d} {r['passes_per_step']:6d} {r['best_s']:10.4f} "
          f"{r['frames_per_s']:9.2f} {rel:>10s}")
  fps = {key: r["frames_per_s"] for _, key, r in rows}
  ratios = {"teacher_cached_over_uncached": fps["teacher_cached"] / fps["teacher_uncached"],
            "student_over_teacher_cached": fps["student_cached"] / fps["teacher_cached"],
            "student_over_teacher_uncached": fps["student_cached"] / fps["teacher_uncached"]}
  if original:
    ratios.update({f"{k}_over_original": fps[k] / fps["original"]
                   for k in ("teacher_uncached", "teacher_cached", "student_cached")})
  print("ratios (frames/s): " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
  print(f"machine: {os.cpu_count()} CPU cores, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        "(1 min; shared machine)")
  print(json.dumps({
      "benchmark": "original_rollout", "original_timed": original is not None, "original_unavailable": why,
      "original": original, "project": project, "ratios": {k: round(v, 4) for k, v in ratios.items()},
      "frames_per_s": {k: round(v, 4) for k, v in fps.items()}, "same_weights_max_rel_err": err,
      "config": {"unet": "tools/vid2world_reference.TINY", "latent_hw": a.hw, "latent_channels": tiny["out_channels"],
                 "context_frames": 1, "generated_frames": a.frames, "window": tiny["temporal_length"], "batch": 1,
                 "ddim_steps": a.ddim_steps, "student_ddim_steps": 1, "guidance_scale": GUIDANCE,
                 "guidance_rescale": RESCALE, "eta": ETA, "repeats": a.repeats, "dtype": "float32"},
      "machine": {"cpu_count": os.cpu_count(), "loadavg_1min_before": round(load_before[0], 2),
                  "loadavg_1min_after": round(load_after[0], 2), "jax": jax.__version__,
                  "platform": jax.devices()[0].platform}}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
