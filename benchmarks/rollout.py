"""Cached vs uncached autoregressive rollout: per-frame latency at history lengths 1..window-1, side by side.

  python benchmarks/rollout.py [--window=16] [--ddim_steps=10] [--channels=64] [--latent_hw=8] [--reps=3]

One generated frame = ``rollout.generate_frame`` (the body of the rollout scan: ``ddim_steps`` guided network calls,
both guidance branches batched), jitted once per path (``FrameStepper``: ``init_window`` + ``generate_frame``, what
``inference.InferenceSession.start``/``step`` run, on latents). History length h = frames
already in the window (the new frame is frame h+1). Uncached: every DDIM step runs the UNet on the whole
``window``-frame buffer. Cached (``world_model_rollout_model(..., cached=True)``): one UNet pass on the history
buffer fills the cache, then every DDIM step runs the UNet on the new frame only.

Model: a small causal UNet (configs/base.tiny_unet_config: 2 levels, temporal conv + temporal attention at both
levels + init_attn, per-frame temporal norm, actions), random weights, patchify latents ``[latent_hw, latent_hw,
12]``, guidance 2.5 with rescale 0.7, eta 1. Timing: after one warm-up (compile) call per path, ``--reps`` rounds
over all (history length, path) pairs; reported is the fastest call of each pair (the least disturbed by other
processes on a shared machine), as wall-clock time and as process CPU time (all threads). Also checks that both paths produce the same frame (max abs diff). The LAST printed line is one JSON object.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("window", 16, "temporal window (UNet temporal_length)")
flags.DEFINE_integer("ddim_steps", 10, "DDIM steps per generated frame")
flags.DEFINE_integer("channels", 64, "UNet model_channels (multiple of 32)")
flags.DEFINE_integer("latent_hw", 8, "latent height = width (frames are 2x that, patchify p=2)")
flags.DEFINE_integer("batch", 1, "rollouts in the batch")
flags.DEFINE_integer("reps", 3, "timed rounds over all (path, history length) pairs; the fastest call is reported")
flags.DEFINE_integer("min_history", 1, "smallest history length measured")
FLAGS = flags.FLAGS


class FrameStepper:
  """One generated frame at a time on latents: ``start`` (context -> window state), ``step`` (push an action,
  generate a frame), as ``inference.InferenceSession.start``/``step`` run them."""

  def __init__(self, model, sampler):
    import jax
    from vid2world_jax.inference import sampler as rl
    self._init = jax.jit(lambda c, a, k: rl.init_window(model, sampler, c, a, k))
    self._step = jax.jit(lambda p, st, a: rl.generate_frame(model, sampler, p, rl.push_action(st, a)))

  def start(self, context, context_actions, keys):
    from vid2world_jax.inference import sampler as rl
    with rl.noise_mode():
      return self._init(context, context_actions, keys)

  def step(self, params, state, action):
    from vid2world_jax.inference import sampler as rl
    with rl.noise_mode():
      return self._step(params, state, action)


def main(_):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from configs import base
  from vid2world_jax.inference import sampler as rl
  from vid2world_jax.inference import rollout_model
  from vid2world_jax import world_model

  w, a_dim, b = FLAGS.window, 7, FLAGS.batch
  c = base.get_base_config()
  c.model.arch = "unet"
  c.model.first_stage = "patchify"
  c.model.patch_size = 2
  c.model.context_len = 4
  c.model.unet = base.tiny_unet_config(channels=FLAGS.channels, in_channels=24, out_channels=12, frames=w,
                                       action_dim=a_dim, context_dim=64, attention_resolutions=(1, 2),
                                       channel_mult=(1, 2), num_head_channels=32)
  wm, fs = world_model.build(c.model, rngs=nnx.Rngs(0))
  g, s = nnx.split(wm)
  fg, fss = nnx.split(fs)
  params = (s, fss)
  sampler = rl.SamplerConfig(ddim_steps=FLAGS.ddim_steps, eta=1.0, guidance_scale=2.5, guidance_rescale=0.7,
                             window=w)
  gens = {"uncached": FrameStepper(rollout_model.world_model_rollout_model(c.model, g, fg), sampler),
          "cached": FrameStepper(rollout_model.world_model_rollout_model(c.model, g, fg, cached=True), sampler)}
  hw = FLAGS.latent_hw
  rng = np.random.default_rng(0)
  frames = jnp.asarray(rng.normal(size=(b, w - 1, hw, hw, 12)).astype(np.float32))
  acts = jnp.asarray(rng.uniform(-1, 1, size=(b, w, a_dim)).astype(np.float32))
  keys = rl.rollout_keys(0, b)
  print(f"device: {jax.devices()[0].platform} ({os.cpu_count()} visible cores), window {w}, {FLAGS.ddim_steps} "
        f"DDIM steps, guidance on (2 branches batched), batch {b}, UNet model_channels {FLAGS.channels}, latents "
        f"{hw}x{hw}x12")

  hists = list(range(FLAGS.min_history, w))
  states = {(name, hlen): gen.start(frames[:, :hlen], acts[:, :hlen - 1], keys)
            for name, gen in gens.items() for hlen in hists}
  compile_s, outs = {}, {}
  for name, gen in gens.items():
    t0 = time.perf_counter()
    jax.block_until_ready(gen.step(params, states[name, hists[0]], acts[:, hists[0] - 1]))
    compile_s[name] = time.perf_counter() - t0
  times = {key: [] for key in states}
  cpu = {key: [] for key in states}
  for rep in range(FLAGS.reps):   # rounds over all (history, path) pairs: load changes spread over all of them
    for hlen in hists:
      for name, gen in gens.items():
        t0, c0 = time.perf_counter(), time.process_time()
        x, _ = gen.step(params, states[name, hlen], acts[:, hlen - 1])
        jax.block_until_ready(x)
        times[name, hlen].append(time.perf_counter() - t0)
        cpu[name, hlen].append(time.process_time() - c0)
        outs[name, hlen] = np.asarray(x)
  ms = {name: {hlen: 1000 * min(times[name, hlen]) for hlen in hists} for name in gens}
  cpu_ms = {name: {hlen: 1000 * min(cpu[name, hlen]) for hlen in hists} for name in gens}
  max_diff = 0.0
  for hlen in hists:
    diff = float(np.abs(outs["cached", hlen] - outs["uncached", hlen]).max())
    max_diff = max(max_diff, diff)
    print(f"history {hlen:2d} (frame {hlen + 1:2d}): uncached {ms['uncached'][hlen]:8.1f} ms/frame, cached "
          f"{ms['cached'][hlen]:7.1f} ms/frame, speedup {ms['uncached'][hlen] / ms['cached'][hlen]:5.2f}x, "
          f"max |cached - uncached| {diff:.1e}  | CPU time: uncached {cpu_ms['uncached'][hlen]:8.1f} ms, cached "
          f"{cpu_ms['cached'][hlen]:7.1f} ms", flush=True)

  last, first = hists[-1], hists[0]
  speedup = ms["uncached"][last] / ms["cached"][last]
  flat = ms["cached"][last] / ms["cached"][first]
  flat_uncached = ms["uncached"][last] / ms["uncached"][first]
  cpu_speedup = cpu_ms["uncached"][last] / cpu_ms["cached"][last]
  cpu_flat = cpu_ms["cached"][last] / cpu_ms["cached"][first]
  print(f"first call (compile + run): uncached {compile_s['uncached']:.1f} s, cached {compile_s['cached']:.1f} s")
  print(f"frame {last + 1} (window full): cached {speedup:.2f}x faster than uncached; cached frame {last + 1} / "
        f"frame {first + 1} latency = {flat:.2f} (uncached {flat_uncached:.2f}); max |cached - uncached| over all "
        f"frames {max_diff:.1e}")
  print(f"process CPU time (all threads; less sensitive to other processes): speedup {cpu_speedup:.2f}x, cached "
        f"frame {last + 1} / frame {first + 1} = {cpu_flat:.2f}")
  res = {"device": jax.devices()[0].platform, "window": w, "ddim_steps": FLAGS.ddim_steps, "batch": b,
         "model_channels": FLAGS.channels, "latent_hw": hw,
         "ms_per_frame_cached": {str(k): round(v, 2) for k, v in ms["cached"].items()},
         "ms_per_frame_uncached": {str(k): round(v, 2) for k, v in ms["uncached"].items()},
         f"speedup_at_{last + 1}": round(speedup, 3),
         f"flatness_{last + 1}_vs_{first + 1}": round(flat, 3),
         f"flatness_uncached_{last + 1}_vs_{first + 1}": round(flat_uncached, 3),
         "cpu_ms_per_frame_cached": {str(k): round(v, 2) for k, v in cpu_ms["cached"].items()},
         "cpu_ms_per_frame_uncached": {str(k): round(v, 2) for k, v in cpu_ms["uncached"].items()},
         f"cpu_speedup_at_{last + 1}": round(cpu_speedup, 3), f"cpu_flatness_{last + 1}_vs_{first + 1}": round(cpu_flat, 3),
         "timing": f"fastest of {FLAGS.reps} calls", "compile_plus_first_s": {k: round(v, 2) for k, v in compile_s.items()},
         "max_abs_diff_cached_vs_uncached": max_diff}
  print(json.dumps(res))


if __name__ == "__main__":
  app.run(main)
