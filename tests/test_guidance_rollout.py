"""Causal action guidance inside the rollout: lambda = 1 / 0 limits, one batched forward pass, masked rescale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _rollout_helpers as h
from vid2world_jax.inference import sampler as rl
from vid2world_jax.inference import rollout_model
from vid2world_jax.diffusion import guidance as guidance_lib


def _window_inputs(new_index=2, w=4, b=2, seed=0):
  r = np.random.default_rng(seed)
  lat = jnp.asarray(r.normal(size=(b, w) + h.LATENT).astype(np.float32))
  lat = lat.at[:, new_index + 1:].set(0.0)  # zero padding after the newest frame
  t = jnp.asarray(np.where(np.arange(w) < new_index, 39, 500)[None].repeat(b, 0).astype(np.int32))
  acts = jnp.asarray(r.normal(size=(b, w, 3)).astype(np.float32))
  mask = jnp.asarray((np.arange(w) <= new_index)[None].repeat(b, 0).astype(np.float32))
  params = h.standin_params()
  cond = h.standin_cond(params, lat[:, 0])
  return params, rollout_model.WindowInputs(lat, t, cond, acts, mask, jnp.asarray(new_index, jnp.int32))


def _plain(params, inputs, mask):
  return h.standin_denoise(params, inputs.latents, inputs.t, inputs.cond, inputs.actions, mask)


@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_guidance_lambda_one_reproduces_conditional_prediction(rescale):
  params, inputs = _window_inputs()
  den = rollout_model.FnDenoiser(h.standin_denoise)
  got, _ = jax.jit(lambda p, i: rl.guided_prediction(den, p, (), i, 1.0, rescale))(params, inputs)
  want = _plain(params, inputs, inputs.action_mask)
  np.testing.assert_allclose(np.asarray(got[:, :3]), np.asarray(want[:, :3]), rtol=1e-5, atol=1e-6)


def test_guidance_lambda_zero_reproduces_last_action_dropped_prediction():
  params, inputs = _window_inputs(new_index=2)
  den = rollout_model.FnDenoiser(h.standin_denoise)
  got, _ = jax.jit(lambda p, i: rl.guided_prediction(den, p, (), i, 0.0, 0.0))(params, inputs)
  dropped = inputs.action_mask.at[:, 2].set(0.0)
  want = _plain(params, inputs, dropped)
  np.testing.assert_allclose(np.asarray(got[:, :3]), np.asarray(want[:, :3]), rtol=1e-5, atol=1e-6)
  # ... and it differs from the conditional prediction only from the newest frame on (causal model)
  cond = _plain(params, inputs, inputs.action_mask)
  np.testing.assert_allclose(np.asarray(got[:, :2]), np.asarray(cond[:, :2]), rtol=1e-6, atol=1e-6)
  assert float(jnp.abs(got[:, 2] - cond[:, 2]).max()) > 1e-3


def test_guidance_both_branches_in_one_batched_forward_pass():
  params, inputs = _window_inputs(new_index=1)
  calls = []

  def spy(p, lat, t, cond, acts, mask):
    calls.append((lat.shape[0], np.asarray(mask)))
    return h.standin_denoise(p, lat, t, cond, acts, mask)

  out, _ = rl.guided_prediction(rollout_model.FnDenoiser(spy), params, (), inputs, 2.5, 0.7)
  assert len(calls) == 1 and calls[0][0] == 4  # one call, 2B rows
  mask = calls[0][1]
  np.testing.assert_array_equal(mask[:2], np.asarray(inputs.action_mask))           # conditional rows
  np.testing.assert_array_equal(mask[2:, 1], [0.0, 0.0])                           # newest action dropped
  np.testing.assert_array_equal(mask[2:, 0], [1.0, 1.0])                           # earlier actions kept
  assert out.shape == inputs.latents.shape


def test_guidance_combine_matches_diffusion_guidance_and_ignores_padding():
  r = np.random.default_rng(1)
  c = jnp.asarray(r.normal(size=(2, 4) + h.LATENT).astype(np.float32))
  u = jnp.asarray(r.normal(size=(2, 4) + h.LATENT).astype(np.float32))
  full = guidance_lib.causal_action_guidance(c, u, 2.5, 0.7, jnp.ones((4,), bool))   # masked std, all valid
  np.testing.assert_allclose(np.asarray(full), np.asarray(guidance_lib.causal_action_guidance(c, u, 2.5, 0.7)),
                             rtol=1e-5, atol=1e-6)
  traced = jax.jit(lambda s: guidance_lib.causal_action_guidance(c, u, s, 0.7))(jnp.float32(2.5))  # traced scale
  np.testing.assert_allclose(np.asarray(traced), np.asarray(full), rtol=1e-5, atol=1e-6)
  valid = jnp.arange(4) <= 1
  padded = guidance_lib.causal_action_guidance(c, u, 2.5, 0.7, valid)
  exact = guidance_lib.causal_action_guidance(c[:, :2], u[:, :2], 2.5, 0.7)
  np.testing.assert_allclose(np.asarray(padded[:, :2]), np.asarray(exact), rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(padded[:, :2] - full[:, :2]).max()) > 1e-4  # the padding would have changed it


def test_guidance_rollout_lambda_one_equals_conditional_rollout():
  model, params = h.standin_model(), h.standin_params()
  ctx, acts = h.random_inputs(batch=2, k=1, horizon=5, seed=4)
  keys = rl.rollout_keys(4, 2)
  base = dict(ddim_steps=2, eta=1.0, window=4, guidance_rescale=0.7)
  guided = rl.rollout(model, rl.SamplerConfig(guidance_scale=1.0, **base), params, ctx, acts, keys, horizon=5)
  plain = rl.rollout(model, rl.SamplerConfig(guidance_scale=None, **base), params, ctx, acts, keys, horizon=5)
  np.testing.assert_allclose(np.asarray(guided), np.asarray(plain), rtol=1e-4, atol=1e-5)
  strong = rl.rollout(model, rl.SamplerConfig(guidance_scale=3.0, **base), params, ctx, acts, keys, horizon=5)
  assert float(jnp.abs(strong[:, -1] - plain[:, -1]).max()) > 1e-3  # guidance does change the frames
