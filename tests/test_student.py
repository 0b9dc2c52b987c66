"""The few-step student (issue 22): its objective (diffusion/student.py), the trainer with
``train.objective="student"`` on tiny configs (patchify UNet and the VAE + resampler path of the paper's configs),
and the student checkpoint through the session with its own sampler settings, cached == uncached."""

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def _schedule():
  from vid2world_jax.diffusion import schedules
  return schedules.make_schedule(parameterization="v", zero_terminal_snr=True)


def test_student_window_is_the_samplers_window():
  """History at t_small, the target at one of the student's timesteps, zeros and mask 0 after it; with
  t_small = 0 the history is the clean latents."""
  from vid2world_jax.diffusion import student
  sch = _schedule()
  x0 = jax.random.normal(jax.random.key(0), (16, 6, 4, 4, 2))
  taus = student.student_timesteps(2, 1000)
  np.testing.assert_array_equal(taus, [999, 499])
  for t_small in (0, 100):
    win, target = student.student_window(sch, x0, jax.random.key(1), taus, t_small)
    p = np.asarray(win.target_index)
    assert p.min() >= 1 and p.max() <= 5 and len(set(p.tolist())) > 1
    assert set(np.asarray(win.tau).tolist()) <= {999, 499}
    for b in range(16):
      t_b, lat, m = np.asarray(win.t[b]), np.asarray(win.latents[b]), np.asarray(win.action_mask[b])
      assert (t_b[:p[b]] == t_small).all() and (t_b[p[b]:] == int(win.tau[b])).all()
      assert (m[:p[b] + 1] == 1).all() and (m[p[b] + 1:] == 0).all()
      assert (lat[p[b] + 1:] == 0).all()
      np.testing.assert_array_equal(np.asarray(target[b]), np.asarray(x0[b, p[b]]))
      if t_small == 0:
        np.testing.assert_array_equal(lat[:p[b]], np.asarray(x0[b, :p[b]]))
      else:
        assert not np.allclose(lat[:p[b]], np.asarray(x0[b, :p[b]]))
      if int(win.tau[b]) == 999:   # zero terminal SNR: the first step starts from pure noise
        assert np.abs(np.corrcoef(lat[p[b]].ravel(), np.asarray(x0[b, p[b]]).ravel())[0, 1]) < 0.5


def test_student_loss_is_zero_for_an_oracle_and_positive_otherwise():
  from vid2world_jax.diffusion import parameterization as P
  from vid2world_jax.diffusion import student
  sch = _schedule()
  x0 = jax.random.normal(jax.random.key(0), (4, 5, 4, 4, 2))
  taus, key = student.student_timesteps(1, 1000), jax.random.key(3)
  win, target = student.student_window(sch, x0, key, taus, 100)

  def oracle(lat, t, mask):   # the output whose x0 readout at the target is the recorded frame
    at = lambda x: jnp.take_along_axis(x, win.target_index[:, None, None, None, None], 1)[:, 0]
    out = P.x0_to_model_output(sch, at(lat), target, win.tau)
    sel = (jnp.arange(lat.shape[1])[None] == win.target_index[:, None])[..., None, None, None]
    return jnp.where(sel, out[:, None], 0.0)

  loss, aux = student.student_loss(oracle, sch, x0, key, taus, 100)
  assert float(loss) < 1e-10 and aux["frame_loss"].shape == (4,)
  loss0, _ = student.student_loss(lambda lat, t, m: jnp.zeros_like(lat), sch, x0, key, taus, 100)
  np.testing.assert_allclose(float(loss0), float(jnp.mean(target ** 2)), rtol=1e-5)   # v = 0 at T -> x0_hat = 0


def _student_config(arg=None, ddim_steps=2):
  from configs import test_tiny
  c = test_tiny.get_config(arg)
  c.train.objective = "student"
  c.train.action_dropout_prob = 0.0
  c.sampler.ddim_steps = ddim_steps
  c.sampler.guidance = "none"
  c.sampler.history_noise = "100"
  c.data.batch_size = 8            # divisible by the 8 fake test devices (the :vae variant has 4)
  c.total_steps = 3
  c.train.ckpt_every = 3
  return c


@pytest.mark.parametrize("arg", [None, "vae"])
def test_student_objective_trains_on_tiny_configs(arg, tmp_path):
  """The trainer runs the student's objective on the patchify UNet and on the VAE + resampler path of the paper's
  configs (configs/rt1.py), and the checkpoint loads with its own sampler: 2 steps, conditional pass only, and
  (patchify) its sampler's 3-frame window, trained on 3-frame sub-clips of the 8-frame clips."""
  from vid2world_jax import inference
  from vid2world_jax.training import loop
  cfg = _student_config(arg)
  if arg is None:   # a sampler window shorter than the clips: the student trains on sub-clips of that length
    cfg.sampler.window = 3
  res = loop.train_and_evaluate(cfg, str(tmp_path), init_params=None)
  losses = [res["losses"][k] for k in sorted(res["losses"])]
  assert losses and all(np.isfinite(losses))
  if arg is None:
    sess = inference.InferenceSession.load(str(tmp_path))
    assert sess.sampler.ddim_steps == 2 and sess.sampler.guidance_scale is None and sess.window == 3
    assert inference.default_guidance(sess.config) == 1.0


def test_student_objective_learns_a_fixed_clip(tmp_path):
  """Refutable: on the synthetic moving squares the student's loss falls well below its start."""
  from vid2world_jax.training import loop
  cfg = _student_config(ddim_steps=1)
  cfg.total_steps = 40
  cfg.train.ckpt_every = 40
  cfg.train.log_every = 1
  cfg.optim.lr = 3e-3
  res = loop.train_and_evaluate(cfg, str(tmp_path))
  losses = [res["losses"][k] for k in sorted(res["losses"])]
  assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses


def test_student_cached_rollout_equals_uncached():
  """The student's sampler (1 step, no guidance pass) on the cached fast path gives the uncached frames."""
  from flax import nnx
  from configs import test_tiny
  from vid2world_jax import inference, world_model
  cfg = test_tiny.get_config()
  cfg.sampler.ddim_steps = 1
  cfg.sampler.guidance = "none"
  wm, _ = world_model.build(world_model.model_config(cfg), rngs=nnx.Rngs(params=0, dropout=1))
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(wm, nnx.Param)))
  rng = np.random.default_rng(0)
  ctx = rng.integers(0, 256, size=(2, 2, 16, 16, 3)).astype(np.uint8)
  acts = np.eye(2, dtype=np.float32)[rng.integers(0, 2, size=(2, 7))]
  out = {}
  for cached in (False, True):
    sess = inference.InferenceSession.from_params(cfg, params, cached=cached)
    assert sess.sampler.ddim_steps == 1 and sess.sampler.guidance_scale is None
    out[cached] = sess.rollout(ctx, acts, guidance_scale=1.0, seed=5)
  assert out[True].shape == (2, 7, 16, 16, 3)          # one new frame per action (context actions separate)
  np.testing.assert_allclose(out[True].astype(int), out[False].astype(int), atol=1)


def test_crop_clips_cuts_one_window_per_clip():
  """Every named array of a clip is cut at the same random start; other entries pass through; anchored crops
  start at frame 0; a window equal to the clip is the clip; a window of 1 or longer than the clip is refused."""
  from vid2world_jax.diffusion import student
  b, t = 32, 8
  frames = jnp.broadcast_to(jnp.arange(t, dtype=jnp.float32)[None, :, None, None, None], (b, t, 2, 2, 3))
  frames = frames + 100.0 * jnp.arange(b, dtype=jnp.float32)[:, None, None, None, None]
  actions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.float32)[None, :, None], (b, t, 3))
  batch = {"frames": frames, "actions": actions, "other": jnp.ones((b, 5))}
  out = student.crop_clips(jax.random.key(0), batch, 4)
  assert out["frames"].shape == (b, 4, 2, 2, 3) and out["actions"].shape == (b, 4, 3)
  starts = np.asarray(out["actions"][:, 0, 0]).astype(int)
  assert starts.min() >= 0 and starts.max() <= t - 4 and len(set(starts.tolist())) > 1
  for i in range(b):   # consecutive frames of clip i, starting where its actions start
    np.testing.assert_array_equal(np.asarray(out["frames"][i, :, 0, 0, 0]), 100.0 * i + starts[i] + np.arange(4))
  assert out["other"] is batch["other"]
  anchored = student.crop_clips(jax.random.key(0), batch, 4, anchored=True)
  np.testing.assert_array_equal(np.asarray(anchored["actions"][:, :, 0]), np.tile(np.arange(4.0), (b, 1)))
  same = student.crop_clips(jax.random.key(0), batch, t)
  np.testing.assert_array_equal(np.asarray(same["frames"]), np.asarray(frames))
  for bad in (1, t + 1):
    with pytest.raises(ValueError, match="window"):
      student.crop_clips(jax.random.key(0), batch, bad)


def test_student_window_longer_than_the_clips_is_refused():
  """config.sampler.window longer than the training clips: one line before anything is built."""
  from vid2world_jax.training import config as train_config
  bad = _student_config(None)
  bad.sampler.window = int(bad.data.clip_length) + 1
  with pytest.raises(ValueError, match="window"):
    train_config.validate_config(bad, 1, 1)
