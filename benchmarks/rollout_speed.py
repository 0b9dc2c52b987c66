"""Rollout speed: compile time and steady-state time per generated frame of rollout.rollout (nested lax.scan).

  python benchmarks/rollout_speed.py [--arch=unet|toy] [--ddim_steps=10] [--horizon=8] [--batch=2]

Model: configs/test_tiny.py (random weights; tiny UNet, 16x16 frames -> 8x8x12 latents, window 4), causal action
guidance on (2 passes batched), eta 1. Also times the Python-loop reference for comparison. The last printed line
is one JSON object of figures.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("arch", "unet", "unet | toy")
flags.DEFINE_integer("ddim_steps", 10, "DDIM steps per frame")
flags.DEFINE_integer("horizon", 8, "generated frames (> window 4: the window slides)")
flags.DEFINE_integer("batch", 2, "rollouts in the batch")
flags.DEFINE_bool("reference", True, "also time the Python-loop reference")
FLAGS = flags.FLAGS


def main(_):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from configs import test_tiny
  from vid2world_jax.inference import sampler as rl
  from vid2world_jax.inference import rollout_model
  from vid2world_jax.inference import reference
  from vid2world_jax import world_model
  cfg = test_tiny.get_config("toy" if FLAGS.arch == "toy" else None)
  wm, fs = world_model.build(cfg.model, rngs=nnx.Rngs(0))
  g, s = nnx.split(wm)
  fg, fss = nnx.split(fs)
  model = rollout_model.world_model_rollout_model(cfg.model, g, fg)
  w = int(cfg.model.unet.temporal_length)
  sampler = rl.SamplerConfig(ddim_steps=FLAGS.ddim_steps, guidance_scale=2.5, window=w)
  b, hz, a = FLAGS.batch, FLAGS.horizon, int(cfg.model.unet.action_dim)
  rng = np.random.default_rng(0)
  ctx = jnp.asarray(rng.normal(size=(b, 1, 8, 8, 12)).astype(np.float32))
  acts = jnp.asarray(rng.uniform(-1, 1, size=(b, hz, a)).astype(np.float32))
  keys = rl.rollout_keys(0, b)
  params = (s, fss)
  t0 = time.time()
  jax.block_until_ready(rl.rollout(model, sampler, params, ctx, acts, keys, horizon=hz))
  first = time.time() - t0
  t0 = time.time()
  out = jax.block_until_ready(rl.rollout(model, sampler, params, ctx, acts, keys, horizon=hz))
  steady = time.time() - t0
  print(f"device: {jax.devices()[0].platform}, arch {FLAGS.arch}, batch {b}, horizon {hz}, window {w}, "
        f"{FLAGS.ddim_steps} DDIM steps, guidance on")
  print(f"first call (compile + run): {first:.2f} s; steady state: {steady:.3f} s "
        f"= {1000 * steady / hz:.1f} ms per generated frame ({1000 * steady / hz / FLAGS.ddim_steps:.2f} ms per "
        f"batched network call)")
  res = {"arch": FLAGS.arch, "batch": b, "horizon": hz, "window": w, "ddim_steps": FLAGS.ddim_steps,
         "compile_plus_first_s": round(first, 3), "steady_s": round(steady, 4),
         "ms_per_frame": round(1000 * steady / hz, 2)}
  if FLAGS.reference:
    t0 = time.time()
    ref = reference.rollout_reference(model, sampler, params, ctx, acts, keys, horizon=hz)
    t_ref = time.time() - t0
    err = float(jnp.abs(ref - out).max())
    print(f"python-loop reference: {t_ref:.2f} s (incl. its compiles), max |scan - reference| = {err:.2e}")
    res.update(reference_s=round(t_ref, 3), max_abs_diff_vs_reference=err)
  print(json.dumps(res))


if __name__ == "__main__":
  app.run(main)
