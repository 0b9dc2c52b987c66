"""Schedules vs DynamiCrafter's checkpoint buffers [manifest], spec §9.9 values, and eps/v/x0 conversions [train]."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vid2world_jax.diffusion import parameterization as P
from vid2world_jax.diffusion.schedules import (Schedule, TORCH_BUFFER_NAMES, gather, make_schedule,
                                               schedule_for_variant, torch_buffers)


def _manifest(shared_dir, variant):
  path = os.path.join(shared_dir, "reference", "manifests", f"dynamicrafter_{variant}_schedule_buffers.npz")
  if not os.path.isfile(path):
    pytest.fail(f"missing manifest {path}")
  return np.load(path)


@pytest.mark.parametrize("variant", ["256", "512", "1024"])
def test_manifest_schedule_buffers(shared_dir, variant):
  """EVERY buffer of the manifest equals ours (torch names): rel err <= 1e-6 (zeros: abs <= 1e-12)."""
  ref = _manifest(shared_dir, variant)
  ours = torch_buffers(schedule_for_variant(variant))
  assert set(ours) == set(ref.files), set(ours) ^ set(ref.files)
  worst = 0.0
  for k in ref.files:
    r, o = ref[k], ours[k]
    assert o.shape == r.shape and o.dtype == np.float32, (k, o.shape, r.shape, o.dtype)
    assert np.all(np.isfinite(o)), k
    err = np.abs(o.astype(np.float64) - r) / np.maximum(np.abs(r.astype(np.float64)), 1e-30)
    err = np.where(r == 0, np.abs(o), err)
    worst = max(worst, float(err.max()))
    assert err.max() <= 1e-6, (variant, k, float(err.max()))
  print(f"variant {variant}: max rel err over {len(ref.files)} buffers = {worst:.3g}")


def test_manifest_schedule_v_quirk_only_in_torch_buffers():
  """With v the torch buffers store sqrt_recip(m1)_alphas_cumprod as zeros; our Schedule keeps true values."""
  s = schedule_for_variant("512")
  tb = torch_buffers(s)
  assert np.all(tb["sqrt_recip_alphas_cumprod"] == 0) and np.all(tb["sqrt_recipm1_alphas_cumprod"] == 0)
  np.testing.assert_allclose(np.asarray(s.sqrt_recip_alphas_cumprod[:999]),
                             1 / np.sqrt(np.asarray(s.alphas_cumprod[:999], np.float64)), rtol=1e-5)
  tb256 = torch_buffers(schedule_for_variant("256"))
  assert "scale_arr" not in tb256 and np.all(tb256["sqrt_recip_alphas_cumprod"] > 1)
  assert set(TORCH_BUFFER_NAMES) <= set(tb)


def test_manifest_schedule_spec_values_zero_snr():
  """Spec §9.9: zero-SNR gives ab[999] == 0 exactly, ab[0] ~= 0.99915; scale_arr = linspace(1,.7,400)+0.7s."""
  s = schedule_for_variant("512")
  ab = np.asarray(s.alphas_cumprod)
  assert ab[999] == 0.0
  assert abs(ab[0] - 0.99915) < 1e-6
  assert np.all(np.diff(ab) < 0)
  assert float(s.betas[999]) == 1.0
  assert s.parameterization == "v" and s.scale_arr.shape == (1400,)
  np.testing.assert_allclose(np.asarray(s.scale_arr[:400]), np.linspace(1.0, 0.7, 400), rtol=1e-6)
  assert np.all(np.asarray(s.scale_arr[400:]) == np.float32(0.7))
  s256 = schedule_for_variant("256")
  assert s256.parameterization == "eps" and s256.scale_arr is None
  assert 0.004 < float(s256.alphas_cumprod[999]) < 0.005
  assert float(schedule_for_variant("1024").scale_arr[-1]) == np.float32(0.3)


def test_manifest_schedule_validation_and_pytree():
  with pytest.raises(ValueError):
    make_schedule(parameterization="x0")
  with pytest.raises(ValueError):
    schedule_for_variant("128")
  with pytest.raises(ValueError):
    make_schedule(schedule="nope")
  s = schedule_for_variant("512")
  leaves = jax.tree.leaves(s)
  assert len(leaves) == 14  # 13 buffers + scale_arr; parameterization is static
  f = jax.jit(lambda sch, t: gather(sch.sqrt_alphas_cumprod, t, 2))
  out = f(s, jnp.array([0, 999], jnp.int32))
  assert out.shape == (2, 1) and float(out[1, 0]) == 0.0


def _video(key, shape=(2, 3, 4, 5, 2)):
  return jax.random.normal(key, shape, jnp.float32)


@pytest.mark.parametrize("variant", ["256", "512"])
def test_train_parameterization_roundtrip(variant):
  """x0, eps -> (x_t, v) -> x0, eps round trips (v and eps paths), per-frame t [B, T]."""
  s = schedule_for_variant(variant)
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x0, eps = _video(k1), _video(k2)
  t = jnp.array([[0, 500, 998], [10, 250, 900]], jnp.int32)  # avoid the zero-SNR step for eps paths
  xt = P.q_sample(s, x0, t, eps)
  v = P.v_target(s, x0, eps, t)
  e1 = np.abs(np.asarray(P.x0_from_v(s, xt, v, t) - x0)).max()
  e2 = np.abs(np.asarray(P.eps_from_v(s, xt, v, t) - eps)).max()
  e3 = np.abs(np.asarray(P.x0_from_eps(s, xt, eps, t) - x0)).max()
  e4 = np.abs(np.asarray(P.eps_from_x0(s, xt, x0, t) - eps)).max()
  out = P.x0_to_model_output(s, xt, x0, t)
  x0b, epsb = P.model_output_to_x0_eps(s, xt, out, t)
  e5 = max(np.abs(np.asarray(x0b - x0)).max(), np.abs(np.asarray(epsb - eps)).max())
  print(f"{variant}: roundtrip errs x0<-v {e1:.2e} eps<-v {e2:.2e} x0<-eps {e3:.2e} eps<-x0 {e4:.2e} model {e5:.2e}")
  assert max(e1, e2) < 1e-5
  assert max(e4, e5) < 2e-5  # divides by sqrt(1-ab) (0.029 at t=0)
  assert e3 < 1e-3  # divides by sqrt(ab): 4.4e-4 at t=998 of the zero-SNR schedule


def test_train_zero_snr_v_at_terminal_step():
  """At t=999 (zero SNR) x_t == eps and v == -x0 exactly."""
  s = schedule_for_variant("512")
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  x0, eps = _video(k1), _video(k2)
  t = jnp.full((2, 3), 999, jnp.int32)
  np.testing.assert_array_equal(np.asarray(P.q_sample(s, x0, t, eps)), np.asarray(eps))
  np.testing.assert_array_equal(np.asarray(P.v_target(s, x0, eps, t)), -np.asarray(x0))


def test_train_q_sample_per_frame_and_broadcast():
  """[B, T] timesteps act per frame; a [B] timestep equals the [B, T] tensor with equal entries;
  dynamic rescale multiplies frame f by scale_arr[t_f]."""
  s = schedule_for_variant("512")
  k1, k2 = jax.random.split(jax.random.PRNGKey(2))
  x0, eps = _video(k1), _video(k2)
  t = jnp.array([[3, 400, 999], [0, 100, 700]], jnp.int32)
  xt = np.asarray(P.q_sample(s, x0, t, eps, dynamic_rescale=True))
  ab = np.asarray(s.alphas_cumprod, np.float64)
  sc = np.asarray(s.scale_arr, np.float64)
  for b in range(2):
    for f in range(3):
      tt = int(t[b, f])
      ref = np.sqrt(ab[tt]) * sc[tt] * np.asarray(x0[b, f]) + np.sqrt(1 - ab[tt]) * np.asarray(eps[b, f])
      np.testing.assert_allclose(xt[b, f], ref, atol=2e-6)
  tb = jnp.array([250, 600], jnp.int32)
  a = P.q_sample(s, x0, tb, eps)
  b_ = P.q_sample(s, x0, jnp.repeat(tb[:, None], 3, axis=1), eps)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b_))
  with pytest.raises(ValueError):
    P.q_sample(s, x0, jnp.zeros((2, 4), jnp.int32), eps)
  with pytest.raises(ValueError):
    P.rescale_x0(schedule_for_variant("256"), x0, t)
