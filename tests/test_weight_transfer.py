"""Symmetric -> causal temporal-conv weight transfer (spec §2.2, §9.4) [transfer]."""

import jax.numpy as jnp
import numpy as np
import pytest

from vid2world_jax.models.weight_transfer import (CONVERTER_TRANSFORMS, canonical_mode, ols_causal_kernel,
                                                  ols_coefficients, register_converter_transforms,
                                                  transfer_temporal_kernel,
                                                  transfer_flax_kernel, transfer_kernel, transfer_torch_kernel)

# A small kernel written out literally, Flax layout [3, 1, 1, Cin=1, Cout=2]:
W_M1 = [[0.5, -1.0]]    # tap on x_{t-1}
W_0 = [[2.0, 0.25]]     # tap on x_t
W_P1 = [[-0.75, 3.0]]   # tap on x_{t+1}
K = np.array([W_M1, W_0, W_P1], np.float32).reshape(3, 1, 1, 1, 2)

EXPECTED = {  # causal taps on (x_{t-2}, x_{t-1}, x_t), computed by hand
    "shift": [[[0.5, -1.0]], [[2.0, 0.25]], [[-0.75, 3.0]]],
    "mask": [[[0.0, 0.0]], [[0.5, -1.0]], [[2.0, 0.25]]],
    # k_{-1} = w_{-1} - w_{+1} = (0.5+0.75, -1-3); k_0 = w_0 + 2 w_{+1} = (2-1.5, 0.25+6)
    "mixed": [[[0.0, 0.0]], [[1.25, -4.0]], [[0.5, 6.25]]],
}


@pytest.mark.parametrize("mode,alias", [("shift", "shift"), ("mask", "masked"), ("mixed", "extrapolative")])
def test_transfer_modes_hand_computed(mode, alias):
  exp = np.array(EXPECTED[mode], np.float32).reshape(3, 1, 1, 1, 2)
  for m in (mode, alias):
    got = transfer_flax_kernel(K, m)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == K.shape
    np.testing.assert_array_equal(got, exp)
    got_j = transfer_flax_kernel(jnp.asarray(K), m)  # jax arrays in, jax arrays out
    assert not isinstance(got_j, np.ndarray)
    np.testing.assert_array_equal(np.asarray(got_j), exp)
  # torch layout [Cout, Cin, 3, 1, 1] (taps axis 2) gives the same kernel
  torch_w = K.transpose(4, 3, 0, 1, 2)
  got_t = transfer_torch_kernel(torch_w, alias)
  np.testing.assert_array_equal(got_t.transpose(2, 3, 4, 1, 0), exp)
  assert canonical_mode(alias) == mode
  np.testing.assert_array_equal(transfer_temporal_kernel(K, alias, axis=0), exp)  # converter's entry point


def test_transfer_validation_and_kernel1():
  with pytest.raises(ValueError):
    transfer_flax_kernel(K, "future")
  with pytest.raises(ValueError):
    transfer_kernel(np.zeros((5, 1, 1, 2, 2)), "mixed", axis=0)
  k1 = np.ones((1, 1, 1, 2, 2), np.float32)
  np.testing.assert_array_equal(transfer_flax_kernel(k1, "mixed"), k1)  # 1-tap conv: unchanged


# ---- tiny numpy reference temporal convs: x [T, Cin] float64, kernel [3, Cin, Cout], bias [Cout]

def sym_conv(x, k, b):
  """Symmetric conv, zero padding 1 on both sides: y_t = k0 x_{t-1} + k1 x_t + k2 x_{t+1} + b."""
  xp = np.concatenate([np.zeros_like(x[:1]), x, np.zeros_like(x[:1])])
  return np.stack([sum(xp[t + i] @ k[i] for i in range(3)) + b for t in range(len(x))])


def causal_conv(x, k, b):
  """Causal conv, zero padding 2 on the left: y_t = k0 x_{t-2} + k1 x_{t-1} + k2 x_t + b."""
  xp = np.concatenate([np.zeros_like(x[:2]), x])
  return np.stack([sum(xp[t + i] @ k[i] for i in range(3)) + b for t in range(len(x))])


def _rand(seed, T=7, cin=3, cout=4):
  r = np.random.default_rng(seed)
  return r.normal(size=(3, cin, cout)), r.normal(size=(cout,)), r.normal(size=(cin,)), r.normal(size=(cin,))


def test_transfer_mixed_exact_on_affine_inputs():
  """x_t = a + b t: causal(mixed) == symmetric conv of the affine signal extended past both ends, for all
  t >= 1 (also == zero-padded symmetric conv for 1 <= t <= T-2). Boundaries: at t = 0 the causal conv gives
  (w0 + 2 w+1) x_0 = zero-padded sym + w+1 (2 x_0 - x_1); at t = T-1 zero-padded sym lacks w+1 x_T."""
  T = 7
  k, bias, a, slope = _rand(0, T)
  x = a[None] + slope[None] * np.arange(T)[:, None]
  x_ext = a[None] + slope[None] * np.arange(-1, T + 1)[:, None]  # frames -1 .. T
  sym_ext = sym_conv(x_ext, k, bias)[1:-1]  # interior outputs = symmetric conv of the infinite signal
  sym0 = sym_conv(x, k, bias)
  km = transfer_kernel(k, "mixed", axis=0)
  y = causal_conv(x, km, bias)
  e1 = np.abs(y[1:] - sym_ext[1:]).max()
  e2 = np.abs(y[1:T - 1] - sym0[1:T - 1]).max()
  e3 = np.abs(y[0] - (sym0[0] + (2 * x[0] - x[1]) @ k[2])).max()
  e4 = np.abs(y[0] - x[0] @ (k[1] + 2 * k[2]) - bias).max()
  e5 = np.abs(y[T - 1] - (sym0[T - 1] + x_ext[T + 1] @ k[2])).max()
  print(f"mixed/affine: t>=1 vs extended {e1:.2e}, interior vs zero-pad {e2:.2e}, t=0 {e3:.2e}/{e4:.2e}, "
        f"t=T-1 {e5:.2e}")
  assert max(e1, e2, e3, e4, e5) < 1e-12
  assert np.abs(y[0] - sym_ext[0]).max() > 1e-3  # t = 0 genuinely differs (no past frame to extrapolate from)
  # not exact on a non-affine (quadratic) signal: the test can fail
  xq = x + 0.3 * (np.arange(T) ** 2)[:, None]
  xq_ext = x_ext + 0.3 * (np.arange(-1, T + 1) ** 2)[:, None]
  assert np.abs(causal_conv(xq, km, bias)[1:] - sym_conv(xq_ext, k, bias)[1:-1][1:]).max() > 1e-2


def test_transfer_shift_is_delayed_symmetric():
  """shift: causal output at t == symmetric (zero-padded) output at t-1; at t = 0 it is w+1 x_0 + b, the
  symmetric conv's output at frame -1 of the zero-extended sequence."""
  k, bias, _, _ = _rand(1)
  x = np.random.default_rng(11).normal(size=(7, 3))
  y = causal_conv(x, transfer_kernel(k, "shift", axis=0), bias)
  s = sym_conv(x, k, bias)
  e = np.abs(y[1:] - s[:-1]).max()
  xz = np.concatenate([np.zeros((1, 3)), x])
  e0 = np.abs(y[0] - sym_conv(xz, k, bias)[0]).max()
  print(f"shift: max err {e:.2e}, t=0 {e0:.2e}")
  assert e < 1e-12 and e0 < 1e-12
  assert np.abs(y - s).max() > 1e-2


def test_transfer_mask_drops_future_tap():
  """mask: causal output == symmetric conv with the future tap zeroed, at every t (incl. boundaries)."""
  k, bias, _, _ = _rand(2)
  x = np.random.default_rng(12).normal(size=(7, 3))
  y = causal_conv(x, transfer_kernel(k, "mask", axis=0), bias)
  k_nofuture = k.copy()
  k_nofuture[2] = 0
  e = np.abs(y - sym_conv(x, k_nofuture, bias)).max()
  print(f"mask: max err {e:.2e}")
  assert e < 1e-12
  assert np.abs(y - sym_conv(x, k, bias)).max() > 1e-2
  # causality: changing future frames leaves earlier outputs unchanged (all modes)
  for mode in ("shift", "mask", "mixed"):
    km = transfer_kernel(k, mode, axis=0)
    x2 = x.copy()
    x2[4:] += 5.0
    np.testing.assert_array_equal(causal_conv(x, km, bias)[:4], causal_conv(x2, km, bias)[:4])


def test_transfer_ols_general_form():
  """OLS extrapolation (App. A.2): m=1, p=2 reproduces `mixed`; gamma rows sum to 1; m=2, p=3 is exact on
  affine inputs once the p past frames exist (t >= 2)."""
  g = ols_coefficients(1, 2)
  np.testing.assert_allclose(g, [[2.0, -1.0]], atol=1e-15)  # z_{t+1} = 2 z_t - z_{t-1}
  np.testing.assert_allclose(ols_coefficients(3, 4).sum(axis=1), 1.0, atol=1e-12)
  np.testing.assert_allclose(ols_coefficients(2, 1), 1.0)  # constant extrapolation
  k, _, _, _ = _rand(3)
  np.testing.assert_allclose(ols_causal_kernel(k, 2), transfer_kernel(k, "mixed", axis=0), atol=1e-12)
  exp_mixed = np.array(EXPECTED["mixed"], np.float32).reshape(K.shape)
  np.testing.assert_allclose(ols_causal_kernel(K, 2), exp_mixed, atol=1e-6)
  np.testing.assert_allclose(np.asarray(ols_causal_kernel(jnp.asarray(K), 2)), exp_mixed, atol=1e-6)
  # kernel 5 (m = 2), p = 3: exact on affine signals for t >= 2
  r = np.random.default_rng(4)
  k5, b5 = r.normal(size=(5, 3, 2)), r.normal(size=(2,))
  kc = ols_causal_kernel(k5, 3)
  assert np.all(kc[:2] == 0)  # taps on x_{t-4}, x_{t-3} stay 0 (p = 3 uses t-2..t only)
  T = 9
  a, s = r.normal(size=3), r.normal(size=3)
  x_ext = a[None] + s[None] * np.arange(-2, T + 2)[:, None]
  x = x_ext[2:-2]
  sym = np.stack([sum(x_ext[t + i] @ k5[i] for i in range(5)) + b5 for t in range(T)])
  xp = np.concatenate([np.zeros((4, 3)), x])
  cau = np.stack([sum(xp[t + i] @ kc[i] for i in range(5)) + b5 for t in range(T)])
  e = np.abs(cau[2:] - sym[2:]).max()
  print(f"OLS m=2 p=3 affine max err {e:.2e}")
  assert e < 1e-11
  with pytest.raises(ValueError):
    ols_causal_kernel(k5, 6)


def test_transfer_converter_transforms():
  """Registered converter transforms: torch [O, I, 3, 1, 1] -> causal Flax [3, 1, 1, I, O]."""
  from vid2world_jax.models import torch_names
  register_converter_transforms()
  register_converter_transforms()  # idempotent
  torch_w = np.random.default_rng(5).normal(size=(4, 3, 3, 1, 1)).astype(np.float32)
  flax_w = torch_w.transpose(2, 3, 4, 1, 0)
  for mode in ("shift", "mask", "mixed"):
    got = torch_names.TRANSFORMS[f"conv_causal_{mode}"](torch_w)
    assert got.shape == (3, 1, 1, 3, 4)
    np.testing.assert_array_equal(got, transfer_flax_kernel(flax_w, mode))
    assert torch_names.TRANSFORMS[f"conv_causal_{mode}"] is CONVERTER_TRANSFORMS[f"conv_causal_{mode}"]
