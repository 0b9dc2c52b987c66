"""Autoregressive rollout: scan == Python-loop reference, sliding window, causality, per-rollout RNG, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _rollout_helpers as h
from vid2world_jax import rollout as rl
from vid2world_jax.diffusion import ddim


@pytest.fixture(scope="module")
def toy():
  return h.build_world_model("toy", window=4)


def test_rollout_timestep_plan_second_last():
  taus, prevs, t_small = rl.timestep_plan(rl.SamplerConfig(ddim_steps=50), 1000)
  assert taus[0] == 999 and taus[-1] == 19 and t_small == 39
  assert prevs[-1] == ddim.FINAL_STEP and prevs[0] == 979
  assert rl.timestep_plan(rl.SamplerConfig(ddim_steps=3, history_noise=0), 1000)[2] == 0


@pytest.mark.parametrize("k,horizon,scale", [(1, 3, 2.5), (2, 6, None)])
def test_rollout_scan_matches_python_loop_reference(toy, k, horizon, scale):
  model, params, _ = toy
  cfg = rl.SamplerConfig(ddim_steps=3, eta=1.0, guidance_scale=scale, guidance_rescale=0.7, window=4)
  ctx, acts = h.random_inputs(batch=2, k=k, horizon=horizon)
  keys = rl.rollout_keys(0, 2)
  out = rl.rollout(model, cfg, params, ctx, acts, keys, horizon=horizon)
  ref = rl.rollout_reference(model, cfg, params, ctx, acts, keys, horizon=horizon)
  assert out.shape == (2, k + horizon, 4, 4, 12)
  np.testing.assert_array_equal(np.asarray(out[:, :k]), np.asarray(ctx))
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4)
  assert np.all(np.isfinite(np.asarray(out)))
  # generated frames differ from each other (the model really ran)
  assert float(jnp.abs(out[:, -1] - out[:, -2]).max()) > 1e-3


def test_rollout_longer_than_window_is_causal(toy):
  """Horizon 7 > window 4 slides the window; the first frames equal a shorter rollout's (never change)."""
  model, params, _ = toy
  cfg = rl.SamplerConfig(ddim_steps=3, guidance_scale=2.5, window=4)
  ctx, acts = h.random_inputs(batch=2, k=1, horizon=7)
  keys = rl.rollout_keys(3, 2)
  long = rl.rollout(model, cfg, params, ctx, acts, keys, horizon=7)
  short = rl.rollout(model, cfg, params, ctx, acts[:, :3], keys, horizon=3)
  assert long.shape[1] == 8
  np.testing.assert_allclose(np.asarray(long[:, :4]), np.asarray(short), rtol=1e-5, atol=1e-5)
  # changing a late action changes only later frames
  acts2 = acts.at[:, 5].set(acts[:, 5] + 3.0)   # action taken at frame 5 -> affects frames >= 6
  long2 = rl.rollout(model, cfg, params, ctx, acts2, keys, horizon=7)
  np.testing.assert_allclose(np.asarray(long2[:, :6]), np.asarray(long[:, :6]), rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(long2[:, 6] - long[:, 6]).max()) > 1e-4
  ref = rl.rollout_reference(model, cfg, params, ctx, acts, keys, horizon=7)
  np.testing.assert_allclose(np.asarray(long), np.asarray(ref), rtol=1e-4, atol=1e-4)


def test_rollout_batched_equals_individual_rollouts(toy):
  model, params, _ = toy
  cfg = rl.SamplerConfig(ddim_steps=3, guidance_scale=2.5, window=4)
  ctx, acts = h.random_inputs(batch=2, k=1, horizon=3)
  keys = rl.rollout_keys(5, 2)
  both = rl.rollout(model, cfg, params, ctx, acts, keys, horizon=3)
  one = rl.rollout(model, cfg, params, ctx[1:], acts[1:], keys[1:], horizon=3)
  np.testing.assert_allclose(np.asarray(both[1:]), np.asarray(one), rtol=1e-5, atol=1e-5)
  other = rl.rollout(model, cfg, params, ctx, acts, rl.rollout_keys(6, 2), horizon=3)
  assert float(jnp.abs(other[:, -1] - both[:, -1]).max()) > 1e-3  # per-rollout RNG matters (eta = 1)


def test_rollout_context_longer_than_window(toy):
  model, params, _ = toy
  cfg = rl.SamplerConfig(ddim_steps=2, guidance_scale=None, window=4)
  ctx, acts = h.random_inputs(batch=1, k=5, horizon=2)
  keys = rl.rollout_keys(1, 1)
  out = rl.rollout(model, cfg, params, ctx, acts, keys, horizon=2)
  ref = rl.rollout_reference(model, cfg, params, ctx, acts, keys, horizon=2)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4)


def test_rollout_clear_errors(toy):
  model, params, _ = toy
  cfg = rl.SamplerConfig(ddim_steps=2, window=4)
  ctx, acts = h.random_inputs(batch=2, k=2, horizon=3)
  keys = rl.rollout_keys(0, 2)
  with pytest.raises(ValueError, match="need 4 actions"):
    rl.rollout(model, cfg, params, ctx, acts[:, :3], keys, horizon=3)
  with pytest.raises(ValueError, match="context latents"):
    rl.rollout(model, cfg, params, ctx[0], acts, keys, horizon=3)
  with pytest.raises(ValueError, match="one PRNG key per rollout"):
    rl.rollout(model, cfg, params, ctx, acts, keys[:1], horizon=3)
  with pytest.raises(ValueError, match="window"):
    rl.SamplerConfig(window=1)


def test_rollout_refuses_noncausal_unet_config():
  c = h.tiny_model_config("unet")
  c.model.unet.temporal_norm = "joint"
  with pytest.raises(ValueError, match="strictly causal"):
    rl.check_causal_unet(c.model.unet)
  c.model.unet.temporal_norm = "per_frame"
  rl.check_causal_unet(c.model.unet)  # no error
