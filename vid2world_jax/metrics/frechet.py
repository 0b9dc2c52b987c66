"""Fréchet distance between two Gaussians fitted to feature sets (FID / FVD), in float64 numpy/scipy.

``d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``. The matrix square root uses ``scipy.linalg.sqrtm``
in float64; when the product is (near-)singular and the root is not finite, a small multiple of the identity is
added to both covariances (the usual remedy); a complex root whose imaginary part is not negligible raises.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """``[N, D]`` features -> (mean ``[D]``, unbiased covariance ``[D, D]``), float64."""
  f = np.asarray(features, dtype=np.float64)
  if f.ndim != 2:
    raise ValueError(f"features must be [N, D], got shape {f.shape}")
  if f.shape[0] < 2:
    raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
  if not np.all(np.isfinite(f)):
    raise ValueError("features contain NaN/inf")
  return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6, imag_tol: float = 1e-3) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64)."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
    raise ValueError(f"inconsistent shapes: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(s1 @ s2)
  if not np.all(np.isfinite(covmean)):
    offset = np.eye(s1.shape[0]) * eps
    covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=imag_tol):
      raise ValueError(f"sqrtm has a significant imaginary part: {np.max(np.abs(covmean.imag)):.3g}")
    covmean = covmean.real
  d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
  return max(d, 0.0) if d > -1e-6 * max(1.0, abs(np.trace(s1) + np.trace(s2))) else d


def frechet_distance_from_features(feats1, feats2, **kw) -> float:
  """Fréchet distance between the Gaussians fitted to ``[N1, D]`` and ``[N2, D]`` feature sets."""
  mu1, s1 = feature_stats(feats1)
  mu2, s2 = feature_stats(feats2)
  return frechet_distance(mu1, s1, mu2, s2, **kw)
