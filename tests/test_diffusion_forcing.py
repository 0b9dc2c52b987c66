"""Diffusion-Forcing objective and action alignment / dropout [train]."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vid2world_jax.diffusion import parameterization as P
from vid2world_jax.diffusion.actions import align_actions, sample_action_mask
from vid2world_jax.diffusion.diffusion_forcing import (NUM_LOSS_BUCKETS, diffusion_forcing_loss,
                                                       sample_frame_timesteps)
from vid2world_jax.diffusion.schedules import schedule_for_variant

SHAPE = (2, 4, 4, 4, 3)  # B, T, H, W, C


def test_train_timesteps_iid_uniform_per_frame():
  """Per-(batch, frame) iid uniform over {0..999}: chi-square over 10 buckets, frame correlation, coverage."""
  B, T = 4096, 8
  t = np.asarray(sample_frame_timesteps(jax.random.PRNGKey(0), B, T, 1000))
  assert t.shape == (B, T) and t.dtype == np.int32
  assert t.min() >= 0 and t.max() <= 999
  assert t.min() < 5 and t.max() > 994  # covers the range
  counts = np.bincount(t.ravel() // 100, minlength=10)
  exp = t.size / 10
  chi2 = float(((counts - exp) ** 2 / exp).sum())
  assert chi2 < 30.0, chi2  # 9 dof: P(chi2 > 30) ~ 4e-4
  c = np.corrcoef(t.T.astype(np.float64))
  off = np.abs(c[~np.eye(T, dtype=bool)]).max()
  assert off < 0.07, off  # sd of a null correlation is 1/sqrt(4096) = 0.016
  same = np.mean(np.all(t == t[:, :1], axis=1))
  assert same == 0.0  # frames never share one level (which a per-clip sampler would give)
  mean_diff = np.abs(t[:, 1:] - t[:, :-1]).mean()
  assert 300 < mean_diff < 367, mean_diff  # E|U1 - U2| = 333 for independent uniforms
  print(f"chi2={chi2:.2f} max|corr|={off:.4f} mean|dt|={mean_diff:.1f}")


def _oracle(schedule, x0):
  """Perfect model: knows the clean data, returns the exact target for whatever (x_t, t) it gets."""
  def fn(x_t, t):
    x0s = P.rescale_x0(schedule, x0, t) if schedule.scale_arr is not None else x0
    return P.x0_to_model_output(schedule, x_t, x0s, t)
  return fn


@pytest.mark.parametrize("variant", ["256", "512"])
def test_train_df_loss_oracle_is_zero(variant):
  s = schedule_for_variant(variant)
  x0 = jax.random.normal(jax.random.PRNGKey(1), SHAPE)
  rng = jax.random.PRNGKey(2)
  loss, aux = jax.jit(lambda x, r: diffusion_forcing_loss(_oracle(s, x), s, x, r))(x0, rng)
  print(f"{variant}: oracle loss {float(loss):.3e}")
  assert float(loss) < 1e-10
  assert aux["frame_loss"].shape == SHAPE[:2] and aux["t"].shape == SHAPE[:2]
  assert aux["t"].dtype == jnp.int32
  # t differs across frames of one clip (per-frame levels)
  assert len(np.unique(np.asarray(aux["t"]))) > 2


@pytest.mark.parametrize("variant", ["256", "512"])
def test_train_df_loss_wrong_predictor_positive(variant):
  """A zero predictor's loss equals the mean squared target (computed independently) and is > 0."""
  s = schedule_for_variant(variant)
  x0 = jax.random.normal(jax.random.PRNGKey(3), SHAPE)
  rng = jax.random.PRNGKey(4)
  t = jnp.array([[0, 300, 600, 999], [5, 50, 500, 950]], jnp.int32)
  noise = jax.random.normal(jax.random.PRNGKey(5), SHAPE)
  loss, aux = diffusion_forcing_loss(lambda xt, tt: jnp.zeros_like(xt), s, x0, rng, t=t, noise=noise)
  ab = np.asarray(s.alphas_cumprod, np.float64)[np.asarray(t)][..., None, None, None]
  x0n = np.asarray(x0, np.float64)
  if s.scale_arr is not None:
    x0n = x0n * np.asarray(s.scale_arr, np.float64)[np.asarray(t)][..., None, None, None]
  nz = np.asarray(noise, np.float64)
  target = nz if s.parameterization == "eps" else np.sqrt(ab) * nz - np.sqrt(1 - ab) * x0n
  ref = (target**2).mean()
  assert float(loss) > 0.1
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(aux["frame_loss"]), (target**2).mean(axis=(2, 3, 4)), rtol=1e-5)
  # a slightly wrong predictor is worse than the oracle but finite
  o = _oracle(s, x0)
  loss2, _ = diffusion_forcing_loss(lambda xt, tt: o(xt, tt) + 0.1, s, x0, rng, t=t, noise=noise)
  np.testing.assert_allclose(float(loss2), 0.01, rtol=1e-3)


def test_train_df_loss_frame_weights_zero_out_frames():
  s = schedule_for_variant("512")
  x0 = jax.random.normal(jax.random.PRNGKey(6), SHAPE)
  rng = jax.random.PRNGKey(7)
  w = jnp.array([[1, 1, 0, 0], [1, 0, 1, 0]], jnp.float32)
  o = _oracle(s, x0)
  mask5 = w[:, :, None, None, None]

  def bad_on_masked(xt, tt):  # perfect on kept frames, garbage on excluded frames
    return o(xt, tt) + (1 - mask5) * 100.0
  loss, aux = diffusion_forcing_loss(bad_on_masked, s, x0, rng, frame_weights=w)
  assert float(loss) < 1e-10
  assert float(jnp.max(aux["frame_loss"])) > 1e3  # the excluded frames were really wrong
  # weighted mean = sum(w l)/sum(w) for a generic predictor
  loss3, aux3 = diffusion_forcing_loss(lambda xt, tt: jnp.zeros_like(xt), s, x0, rng, frame_weights=w)
  fl = np.asarray(aux3["frame_loss"])
  np.testing.assert_allclose(float(loss3), (fl * np.asarray(w)).sum() / 4.0, rtol=1e-6)
  # buckets: counts sum to the kept frames, sums average back to the loss
  assert aux3["bucket_loss_sum"].shape == (NUM_LOSS_BUCKETS,)
  assert float(aux3["bucket_count"].sum()) == 4.0
  np.testing.assert_allclose(float(aux3["bucket_loss_sum"].sum() / aux3["bucket_count"].sum()), float(loss3),
                             rtol=1e-6)
  tb = np.asarray(aux3["t"]) // 100
  for k in range(NUM_LOSS_BUCKETS):
    sel = (tb == k) & (np.asarray(w) > 0)
    np.testing.assert_allclose(float(aux3["bucket_count"][k]), sel.sum())
    np.testing.assert_allclose(float(aux3["bucket_loss_sum"][k]), fl[sel].sum(), rtol=1e-6, atol=1e-12)
  with pytest.raises(ValueError):
    diffusion_forcing_loss(o, s, x0, rng, frame_weights=jnp.ones((2, 3)))
  with pytest.raises(ValueError):
    diffusion_forcing_loss(o, s, x0[0], rng)


def test_train_align_actions_shift():
  a = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3) + 1.0
  out = np.asarray(align_actions(a))
  assert out.shape == (2, 4, 3)
  np.testing.assert_array_equal(out[:, 0], 0.0)
  np.testing.assert_array_equal(out[:, 1:], np.asarray(a)[:, :-1])
  # the last action of the clip is unused
  a2 = a.at[:, -1].set(-7.0)
  np.testing.assert_array_equal(np.asarray(align_actions(a2)), out)
  with pytest.raises(ValueError):
    align_actions(a[0])


def test_train_action_mask_dropout():
  m = np.asarray(sample_action_mask(jax.random.PRNGKey(8), 2048, 16, 0.2))
  assert m.shape == (2048, 16) and m.dtype == np.float32
  assert set(np.unique(m)) <= {0.0, 1.0}
  keep = m.mean()
  assert abs(keep - 0.8) < 0.01, keep  # sd = sqrt(.16/32768) = 0.0022
  c = np.corrcoef(m.T)
  assert np.abs(c[~np.eye(16, dtype=bool)]).max() < 0.08  # independent per frame
  assert 0 < m.mean(axis=1).min() and m.mean(axis=1).max() <= 1  # not one decision per clip
  assert np.all(np.asarray(sample_action_mask(jax.random.PRNGKey(9), 3, 5, 0.0)) == 1.0)
  for bad in (-0.1, 1.0, 1.5):
    with pytest.raises(ValueError):
      sample_action_mask(jax.random.PRNGKey(0), 2, 2, bad)
