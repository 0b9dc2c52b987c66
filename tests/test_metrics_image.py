"""PSNR/SSIM vs skimage, Fréchet distance on hand-computed cases, protocols, torch-exact resize."""

import numpy as np
import pytest

import jax.numpy as jnp

from vid2world_jax.metrics import frechet, image_metrics, protocol


def _pair(seed, shape=(3, 32, 40, 3)):
  rng = np.random.default_rng(seed)
  a = rng.uniform(0, 1, shape).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.1, shape), 0, 1).astype(np.float32)
  return a, b


def test_psnr_metric_matches_hand_computation():
  a, b = _pair(0)
  want = [10 * np.log10(1.0 / np.mean((x.astype(np.float64) - y) ** 2)) for x, y in zip(a, b)]
  got = np.asarray(image_metrics.psnr(jnp.asarray(a), jnp.asarray(b)))
  assert got.shape == (3,)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ssim_metric_matches_skimage_gaussian_11x11():
  from skimage.metrics import structural_similarity
  a, b = _pair(1)
  got = np.asarray(image_metrics.ssim(jnp.asarray(a), jnp.asarray(b)))
  want = [structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1.0, channel_axis=-1) for x, y in zip(a, b)]
  print("SSIM max abs diff vs skimage", np.max(np.abs(got - want)))
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert np.allclose(np.asarray(image_metrics.ssim(jnp.asarray(a), jnp.asarray(a))), 1.0, atol=1e-5)


def test_ssim_metric_rejects_bad_inputs():
  with pytest.raises(ValueError, match="shape"):
    image_metrics.ssim(jnp.zeros((2, 16, 16, 3)), jnp.zeros((2, 16, 17, 3)))
  with pytest.raises(ValueError, match="window"):
    image_metrics.ssim(jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 8, 3)))


def test_frechet_metric_hand_computed_gaussians():
  # 1-D: (mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = (1 - 3)^2 + 4 + 9 - 12 = 5
  assert frechet.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(5.0, abs=1e-9)
  # diagonal: sum over dims of the 1-D formula
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  d1, d2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 1.0])
  want = np.sum((mu1 - mu2) ** 2 + d1 + d2 - 2 * np.sqrt(d1 * d2))
  got = frechet.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2))
  assert got == pytest.approx(want, abs=1e-9)
  assert frechet.frechet_distance(mu2, np.diag(d2), mu1, np.diag(d1)) == pytest.approx(want, abs=1e-9)


def test_frechet_metric_features_identical_zero_and_symmetric():
  rng = np.random.default_rng(0)
  f1 = rng.normal(size=(64, 8))
  f2 = rng.normal(size=(50, 8)) * 1.5 + 0.3
  assert frechet.frechet_distance_from_features(f1, f1) == pytest.approx(0.0, abs=1e-8)
  d12 = frechet.frechet_distance_from_features(f1, f2)
  assert d12 > 0.5
  assert frechet.frechet_distance_from_features(f2, f1) == pytest.approx(d12, rel=1e-8)
  # rank-deficient covariances (fewer samples than dims) still give a finite value
  d = frechet.frechet_distance_from_features(rng.normal(size=(5, 16)), rng.normal(size=(5, 16)))
  assert np.isfinite(d)
  with pytest.raises(ValueError, match="at least 2"):
    frechet.feature_stats(f1[:1])


def test_protocol_metric_rt1_all_16_frames():
  v = np.random.default_rng(0).integers(0, 256, (2, 16, 20, 24, 3), dtype=np.uint8)
  out = protocol.apply(v, "rt1")
  np.testing.assert_array_equal(out, v)
  with pytest.raises(ValueError, match="16-frame"):
    protocol.apply(v[:, :12], "rt1")


def test_protocol_metric_csgo_crops_padding_and_resizes():
  rng = np.random.default_rng(0)
  content = rng.integers(1, 256, (1, 16, 275, 512, 3), dtype=np.uint8)
  padded = np.zeros((1, 16, 320, 512, 3), np.uint8)
  padded[:, :, 22:297] = content  # the loader's 275x512 -> 320x512 centre crop/pad
  out = protocol.apply(padded, "csgo")
  assert out.shape == (1, 12, 150, 280, 3)
  # the cropped frames contain no padding rows: same as resizing the content directly
  direct = protocol.apply(content, "csgo")
  np.testing.assert_array_equal(out, direct)
  assert out.min() > 0
  # scored frames are the 12 predicted ones (frames 4..15)
  marked = padded.copy()
  marked[:, :4] = 0
  np.testing.assert_array_equal(protocol.apply(marked, "csgo"), out)


def test_protocol_metric_resize_matches_torch_interpolate():
  import torch
  import torch.nn.functional as F
  x = np.random.default_rng(0).uniform(0, 255, (2, 17, 23, 3)).astype(np.float32)
  for size in [(8, 11), (40, 31), (17, 23)]:
    got = np.asarray(protocol.resize_bilinear(jnp.asarray(x), size))
    want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size, mode="bilinear",
                         align_corners=False).permute(0, 2, 3, 1).numpy()
    assert np.max(np.abs(got - want)) < 1e-3
