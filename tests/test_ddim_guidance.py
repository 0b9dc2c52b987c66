"""DDIM sampling [rollout] and causal action guidance [guidance]."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vid2world_jax.diffusion import parameterization as P
from vid2world_jax.diffusion.ddim import (FINAL_STEP, ddim_prev_timesteps, ddim_sigma, ddim_step,
                                          ddim_timesteps)
from vid2world_jax.diffusion.guidance import (causal_action_guidance, cfg_rescale, guidance_masks,
                                              split_branches, stack_branches)
from vid2world_jax.diffusion.schedules import schedule_for_variant

SHAPE = (2, 3, 4, 4, 2)


def test_rollout_ddim_timesteps_match_spec():
  ts = ddim_timesteps(50)
  np.testing.assert_array_equal(ts, np.arange(999, 0, -20))
  assert ts[0] == 999 and ts[1] == 979 and ts[-2] == 39 and ts[-1] == 19 and len(ts) == 50
  assert ts.dtype == np.int32
  prev = ddim_prev_timesteps(ts)
  np.testing.assert_array_equal(prev[:-1], ts[1:])
  assert prev[-1] == FINAL_STEP
  u = ddim_timesteps(50, spacing="uniform")  # LDM's range(0, 1000, 20) + 1
  np.testing.assert_array_equal(u, np.arange(981, 0, -20))
  np.testing.assert_array_equal(ddim_timesteps(4), [999, 749, 499, 249])
  with pytest.raises(ValueError):
    ddim_timesteps(0)
  with pytest.raises(ValueError):
    ddim_timesteps(10, spacing="quadratic")


def _oracle(schedule, x0):
  """Perfect model: predicts the (dynamically rescaled, as in training) clean x0 in the parameterisation."""
  def fn(x_t, t):
    x0s = P.rescale_x0(schedule, x0, t) if schedule.scale_arr is not None else x0
    return P.x0_to_model_output(schedule, x_t, x0s, t)
  return fn


@pytest.mark.parametrize("variant", ["256", "512"])
def test_rollout_ddim_oracle_recovers_x0(variant):
  """eta = 0 full 50-step loop from pure noise with an oracle: the final x0_hat equals x0 (times the
  dynamic-rescale factor scale_arr[19] for 512) and the final sample equals the closed form
  sqrt(ab[0]) s x0 + sqrt(1 - ab[0]) eps1 (DDIM keeps the implied eps constant; last ab_prev is ab[0])."""
  s = schedule_for_variant(variant)
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x0 = jax.random.normal(k1, SHAPE)
  z = jax.random.normal(k2, SHAPE)
  model = _oracle(s, x0)
  ts = ddim_timesteps(50)
  prev = ddim_prev_timesteps(ts)

  @jax.jit
  def loop(x):
    def body(x, tt):
      t, tp = tt
      tb = jnp.full(SHAPE[:2], t, jnp.int32)  # per-frame [B, T]
      tpb = jnp.full(SHAPE[:2], tp, jnp.int32)
      x, x0h = ddim_step(s, x, model(x, tb), tb, tpb, eta=0.0)
      return x, x0h
    x, x0hs = jax.lax.scan(body, x, (jnp.asarray(ts), jnp.asarray(prev)))
    return x, x0hs[-1]

  x_fin, x0_fin = loop(z)
  ab = np.asarray(s.alphas_cumprod, np.float64)
  sc = np.asarray(s.scale_arr, np.float64) if s.scale_arr is not None else np.ones(1400)
  x0n, zn = np.asarray(x0, np.float64), np.asarray(z, np.float64)
  eps1 = (zn - np.sqrt(ab[999]) * sc[999] * x0n) / np.sqrt(1 - ab[999])
  ref = np.sqrt(ab[0]) * sc[19] * x0n + np.sqrt(1 - ab[0]) * eps1
  e_x0 = np.abs(np.asarray(x0_fin) - sc[19] * x0n).max()
  e_x = np.abs(np.asarray(x_fin) - ref).max()
  e_raw = np.abs(np.asarray(x_fin) - x0n).max()
  print(f"{variant}: |x0_hat - s*x0|={e_x0:.2e} |x - closed form|={e_x:.2e} |x - x0|={e_raw:.3f}")
  assert e_x0 < 1e-4 and e_x < 1e-4
  if variant == "256":
    assert e_raw < 0.2  # sqrt(1 - ab[0]) = 0.029 times |eps|


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_rollout_ddim_final_alpha_one_returns_x0_hat(eta):
  """final_alpha_one: the last step (t_prev = FINAL_STEP) returns x0_hat exactly (no sqrt(1 - ab[0]) eps left,
  no sigma noise); earlier steps are unchanged; an oracle 5-step loop ends at x0 itself (256: no rescale)."""
  s = schedule_for_variant("256")
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
  x0 = jax.random.normal(k1, SHAPE)
  z = jax.random.normal(k2, SHAPE)
  noise = jax.random.normal(k3, SHAPE) if eta else None
  t = jnp.full(SHAPE[:2], 199, jnp.int32)
  out = _oracle(s, x0)(z, t)
  fin = jnp.full(SHAPE[:2], FINAL_STEP, jnp.int32)
  x_one, x0h = ddim_step(s, z, out, t, fin, eta, noise, final_alpha_one=True)
  x_ldm, _ = ddim_step(s, z, out, t, fin, eta, noise)
  np.testing.assert_allclose(np.asarray(x_one), np.asarray(x0h), atol=1e-6)
  np.testing.assert_allclose(np.asarray(x0h), np.asarray(x0), atol=1e-4)
  assert float(jnp.abs(x_ldm - x0).max()) > 1e-2  # the LDM convention keeps noise: the flag changes something
  mid = jnp.full(SHAPE[:2], 99, jnp.int32)
  a, _ = ddim_step(s, z, out, t, mid, eta, noise, final_alpha_one=True)
  b, _ = ddim_step(s, z, out, t, mid, eta, noise)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(ddim_sigma(s, t, fin, eta, 5, final_alpha_one=True).max()) == 0.0
  ts = ddim_timesteps(5)
  x = z
  for tau, tp in zip(ts, ddim_prev_timesteps(ts)):
    tb, tpb = jnp.full(SHAPE[:2], tau, jnp.int32), jnp.full(SHAPE[:2], tp, jnp.int32)
    x, _ = ddim_step(s, x, _oracle(s, x0)(x, tb), tb, tpb, eta, noise, final_alpha_one=True)
  np.testing.assert_allclose(np.asarray(x), np.asarray(x0), atol=1e-3)


def test_rollout_ddim_eta0_deterministic_and_eta1_sigma():
  s = schedule_for_variant("512")
  k = jax.random.split(jax.random.PRNGKey(1), 4)
  x = jax.random.normal(k[0], SHAPE)
  out = jax.random.normal(k[1], SHAPE)
  t = jnp.full((2,), 499, jnp.int32)
  tp = jnp.full((2,), 479, jnp.int32)
  a, _ = ddim_step(s, x, out, t, tp, 0.0, jax.random.normal(k[2], SHAPE))
  b, _ = ddim_step(s, x, out, t, tp, 0.0, jax.random.normal(k[3], SHAPE))
  c, _ = ddim_step(s, x, out, t, tp, 0.0)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
  # eta = 1 against a float64 transcription of spec §6.1
  ab = np.asarray(s.alphas_cumprod, np.float64)
  sc = np.asarray(s.scale_arr, np.float64)
  noise = jax.random.normal(k[2], SHAPE)
  worst = 0.0
  for (tt, tpp) in [(499, 479), (999, 979), (19, FINAL_STEP)]:
    abt, abp = ab[tt], ab[max(tpp, 0)]
    sig = np.sqrt((1 - abp) / (1 - abt) * (1 - abt / abp))
    got_sig = float(ddim_sigma(s, jnp.array([tt]), jnp.array([tpp]), 1.0)[0])
    np.testing.assert_allclose(got_sig, sig, rtol=1e-5)
    xn, vn = np.asarray(x, np.float64), np.asarray(out, np.float64)
    x0h = np.sqrt(abt) * xn - np.sqrt(1 - abt) * vn
    eh = np.sqrt(abt) * vn + np.sqrt(1 - abt) * xn
    ratio = 1.0 if tpp == FINAL_STEP else sc[tpp] / sc[tt]
    x0h = x0h * ratio
    ref = np.sqrt(abp) * x0h + np.sqrt(max(1 - abp - sig**2, 0.0)) * eh + sig * np.asarray(noise, np.float64)
    got, got_x0 = ddim_step(s, x, out, jnp.full((2,), tt), jnp.full((2,), tpp), 1.0, noise)
    worst = max(worst, np.abs(np.asarray(got) - ref).max())
    np.testing.assert_allclose(np.asarray(got), ref, atol=2e-5)
    np.testing.assert_allclose(np.asarray(got_x0), x0h, atol=2e-5)
  print(f"eta=1 max abs err vs float64 formula: {worst:.2e}")
  # final step: ab_prev = ab[0] (not 1) and no rescale ratio
  assert abs(float(ddim_sigma(s, jnp.array([19]), jnp.array([FINAL_STEP]), 1.0)[0])
             - np.sqrt((1 - ab[0]) / (1 - ab[19]) * (1 - ab[19] / ab[0]))) < 1e-6
  with pytest.raises(ValueError):
    ddim_step(s, x, out, t, tp, 1.0, None)


def test_rollout_ddim_per_frame_timesteps_match_separate_calls():
  """[B, T] timesteps with different levels per frame == frame-by-frame calls with [B] timesteps (AR use:
  history frames at t_small, newest frame at tau)."""
  s = schedule_for_variant("512")
  k = jax.random.split(jax.random.PRNGKey(2), 3)
  x = jax.random.normal(k[0], SHAPE)
  out = jax.random.normal(k[1], SHAPE)
  nz = jax.random.normal(k[2], SHAPE)
  t = jnp.array([[39, 39, 999], [39, 39, 599]], jnp.int32)
  tp = jnp.array([[19, 19, 979], [19, 19, 579]], jnp.int32)
  full, _ = ddim_step(s, x, out, t, tp, 1.0, nz)
  for f in range(3):
    one, _ = ddim_step(s, x[:, f], out[:, f], t[:, f], tp[:, f], 1.0, nz[:, f])
    np.testing.assert_allclose(np.asarray(full[:, f]), np.asarray(one), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ guidance


def test_guidance_scale_one_and_zero_exact():
  k1, k2 = jax.random.split(jax.random.PRNGKey(3))
  cond = jax.random.normal(k1, SHAPE)
  unc = jax.random.normal(k2, SHAPE)
  np.testing.assert_array_equal(np.asarray(causal_action_guidance(cond, unc, 1.0)), np.asarray(cond))
  np.testing.assert_array_equal(np.asarray(causal_action_guidance(cond, unc, 0.0)), np.asarray(unc))
  g = np.asarray(causal_action_guidance(cond, unc, 2.5))
  np.testing.assert_allclose(g, np.asarray(unc) + 2.5 * (np.asarray(cond) - np.asarray(unc)), rtol=1e-5, atol=2e-5)
  # paper form (1 + lambda) c - lambda u with lambda = s - 1
  np.testing.assert_allclose(g, 2.5 * np.asarray(cond) - 1.5 * np.asarray(unc), rtol=1e-5, atol=2e-5)
  with pytest.raises(ValueError):
    causal_action_guidance(cond, unc[:1], 2.0)


def test_guidance_rescale_formula_by_hand():
  k1, k2 = jax.random.split(jax.random.PRNGKey(4))
  cond = jax.random.normal(k1, SHAPE) * 2.0 + 0.3
  unc = jax.random.normal(k2, SHAPE)
  got = np.asarray(causal_action_guidance(cond, unc, 2.5, rescale=0.7))
  c, u = np.asarray(cond, np.float64), np.asarray(unc, np.float64)
  gd = u + 2.5 * (c - u)
  ref = np.empty_like(gd)
  for b in range(SHAPE[0]):  # torch .std(): unbiased, over all non-batch dims
    resc = gd[b] * (np.std(c[b], ddof=1) / np.std(gd[b], ddof=1))
    ref[b] = 0.7 * resc + 0.3 * gd[b]
  err = np.abs(got - ref).max()
  print(f"rescale max abs err {err:.2e}")
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  assert np.abs(got - gd).max() > 0.1  # rescale really changed something
  # rescale = 1 matches the conditional std exactly per batch element
  full = np.asarray(cfg_rescale(jnp.asarray(gd, jnp.float32), cond, 1.0))
  np.testing.assert_allclose(full.reshape(2, -1).std(axis=1, ddof=1), c.reshape(2, -1).std(axis=1, ddof=1),
                             rtol=1e-5)
  with pytest.raises(ValueError):
    causal_action_guidance(cond, unc, 2.0, rescale=1.5)


def test_guidance_masks_differ_only_at_newest_frame():
  m = jnp.ones((3, 5), jnp.float32).at[1, 2].set(0.0)
  c, u = guidance_masks(m)
  np.testing.assert_array_equal(np.asarray(c), np.asarray(m))
  diff = np.asarray(c) != np.asarray(u)
  assert diff[:, 4].all() and not diff[:, :4].any()
  assert np.all(np.asarray(u)[:, 4] == 0)
  c2, u2 = guidance_masks(m, 2)  # newest frame of a window ending at index 2
  d2 = np.asarray(c2) != np.asarray(u2)
  assert d2[[0, 2], 2].all() and d2.sum() == 2  # row 1 already had it dropped
  u3 = guidance_masks(m, jnp.int32(3))[1]  # traced index works too
  assert np.asarray(u3)[:, 3].sum() == 0 and np.asarray(u3)[:, 4].sum() == 3
  with pytest.raises(ValueError):
    guidance_masks(m[0])
  with pytest.raises(ValueError):
    guidance_masks(m, 7)


def test_guidance_stack_split_branches_with_toy_model():
  """One batched call on stacked branches == two separate calls; the branches differ only via the mask."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(5))
  x = jax.random.normal(k1, SHAPE)
  act = jax.random.normal(k2, (2, 3, 1, 1, 1))
  cm, um = guidance_masks(jnp.ones((2, 3)))

  def toy(inp):  # action contribution gated by the per-frame mask, plus a cross-frame causal term
    h = inp["x"] + inp["mask"][..., None, None, None] * inp["act"]
    return h + 0.5 * jnp.cumsum(h, axis=1)

  both = toy(stack_branches({"x": x, "act": act, "mask": cm}, {"x": x, "act": act, "mask": um}))
  oc, ou = split_branches(both)
  np.testing.assert_allclose(np.asarray(oc), np.asarray(toy({"x": x, "act": act, "mask": cm})), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ou), np.asarray(toy({"x": x, "act": act, "mask": um})), rtol=1e-6)
  d = np.abs(np.asarray(oc) - np.asarray(ou)).reshape(2, 3, -1).max(axis=-1)
  assert np.all(d[:, :2] == 0) and np.all(d[:, 2] > 0)  # only the newest frame differs
  with pytest.raises(ValueError):
    split_branches(jnp.zeros((3, 2)))
