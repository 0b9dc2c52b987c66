"""Weight transfer of temporal convs from the bidirectional to the causal UNet (spec §2.2, paper App. A.2).

A pretrained symmetric temporal conv (kernel 3, padding 1 on both sides) with taps ``w_{-1}, w_0, w_{+1}``
(acting on x_{t-1}, x_t, x_{t+1}) becomes a causal conv (kernel 3, padding 2 on the left) with taps
``k_{-2}, k_{-1}, k_0`` (acting on x_{t-2}, x_{t-1}, x_t). Array layout along the taps axis:

* symmetric kernel: index 0 -> x_{t-1}, 1 -> x_t, 2 -> x_{t+1};
* causal kernel:    index 0 -> x_{t-2}, 1 -> x_{t-1}, 2 -> x_t.

Modes (biases are never changed):

| mode                            | k_{-2} | k_{-1}          | k_0             |
|---------------------------------|--------|-----------------|-----------------|
| ``shift``                       | w_{-1} | w_0             | w_{+1}          |
| ``mask`` (alias ``masked``)     | 0      | w_{-1}          | w_0             |
| ``mixed`` (alias ``extrapolative``) | 0  | w_{-1} - w_{+1} | w_0 + 2 w_{+1}  |

``mixed`` substitutes the unseen x_{t+1} by the linear extrapolation 2 x_t - x_{t-1}; it is the m=1, p=2 case
of the paper's general least-squares extrapolation (``ols_causal_kernel``).

Kernels: our Flax temporal conv kernel is ``[3, 1, 1, Cin, Cout]`` (taps axis 0, ``transfer_flax_kernel``);
torch Conv3d weights are ``[Cout, Cin, 3, 1, 1]`` (taps axis 2, ``transfer_torch_kernel``). Works on numpy
arrays (returns numpy, used by the checkpoint converter) and on jax arrays (returns jax arrays).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from vid2world_jax.models import torch_names

MODES = ("shift", "mask", "mixed")
MODE_ALIASES = {"shift": "shift", "mask": "mask", "masked": "mask", "truncate": "mask",
                "mixed": "mixed", "extrapolative": "mixed"}


def canonical_mode(mode: str) -> str:
  """``"masked" -> "mask"``, ``"extrapolative" -> "mixed"``; ValueError for unknown names."""
  if mode not in MODE_ALIASES:
    raise ValueError(f"unknown weight-transfer mode {mode!r}; expected one of {sorted(MODE_ALIASES)}")
  return MODE_ALIASES[mode]


def _xp(a: Any):
  return np if isinstance(a, np.ndarray) else jnp


def transfer_kernel(kernel: Any, mode: str, axis: int) -> Any:
  """Symmetric -> causal kernel along ``axis`` (the temporal taps axis, size 3). Other axes untouched.

  Returns a new array of the same shape/dtype. Kernels whose temporal size is 1 are returned unchanged
  (a 1-tap conv is already causal).
  """
  mode = canonical_mode(mode)
  xp = _xp(kernel)
  kernel = kernel if xp is jnp else np.asarray(kernel)
  axis = axis % kernel.ndim
  n = kernel.shape[axis]
  if n == 1:
    return kernel
  if n != 3:
    raise ValueError(f"temporal kernel size must be 3 (or 1), got {n} on axis {axis} of shape {kernel.shape}")
  w_m1, w_0, w_p1 = (xp.take(kernel, i, axis=axis) for i in range(3))
  zero = xp.zeros_like(w_0)
  if mode == "shift":
    taps = (w_m1, w_0, w_p1)
  elif mode == "mask":
    taps = (zero, w_m1, w_0)
  else:  # mixed / extrapolative
    taps = (zero, w_m1 - w_p1, w_0 + 2 * w_p1)
  return xp.stack(taps, axis=axis).astype(kernel.dtype)


transfer_temporal_kernel = transfer_kernel  # name used by conversion.dynamicrafter.apply_temporal_conv_transfer


def transfer_flax_kernel(kernel: Any, mode: str) -> Any:
  """Flax conv kernel ``[3, (kh, kw,) Cin, Cout]`` (taps axis 0)."""
  return transfer_kernel(kernel, mode, axis=0)


def transfer_torch_kernel(weight: Any, mode: str) -> Any:
  """Torch Conv3d weight ``[Cout, Cin, 3, kh, kw]`` (taps axis 2)."""
  if weight.ndim < 3:
    raise ValueError(f"torch conv weight must be [Cout, Cin, kt, ...], got shape {weight.shape}")
  return transfer_kernel(weight, mode, axis=2)


def ols_coefficients(m: int, p: int) -> np.ndarray:
  """``gamma[k-1, j]`` for k = 1..m, j = 0..p-1 (float64 ``[m, p]``): least-squares linear extrapolation
  ``z_{t+k} ~ sum_j gamma[k-1, j] z_{t-j}`` from the last p points (paper App. A.2; rows sum to 1).

  ``gamma_{k,j} = 1/p + (k + (p-1)/2) ((p-1)/2 - j) / S``, ``S = sum_j ((p-1)/2 - j)^2`` (t cancels out).
  ``p = 1`` degenerates to constant extrapolation (gamma = 1).
  """
  if m < 0 or p < 1:
    raise ValueError(f"need m >= 0 and p >= 1, got m={m}, p={p}")
  c = (p - 1) / 2.0
  j = np.arange(p, dtype=np.float64)
  S = float(np.sum((c - j) ** 2))
  k = np.arange(1, m + 1, dtype=np.float64)[:, None]
  if S == 0.0:
    return np.ones((m, p), np.float64)
  return 1.0 / p + (k + c) * (c - j)[None, :] / S


def ols_causal_kernel(kernel: Any, p: int, axis: int = 0) -> Any:
  """General extrapolative transfer: symmetric kernel of size 2m+1 (index i+m <-> tap w_i, i = -m..m, acting on
  x_{t+i}) -> causal kernel of size 2m+1 (index j+2m <-> tap w'_j, j = -2m..0, acting on x_{t+j}):

  ``w'_j = 1[j >= -m] w_j + 1[-p+1 <= j <= 0] sum_{i=1}^{m} gamma_{i,-j} w_i`` (bias unchanged).
  Requires ``1 <= p <= 2m + 1`` so that the p past frames fit in the causal window. For m = 1, p = 2 this is
  ``transfer_kernel(kernel, "mixed", axis)``.
  """
  xp = _xp(kernel)
  kernel = kernel if xp is jnp else np.asarray(kernel)
  axis = axis % kernel.ndim
  n = kernel.shape[axis]
  if n % 2 != 1:
    raise ValueError(f"symmetric kernel size must be odd, got {n}")
  m = (n - 1) // 2
  if not 1 <= p <= 2 * m + 1:
    raise ValueError(f"p must be in [1, {2 * m + 1}] for kernel size {n}, got {p}")
  gamma = ols_coefficients(m, p)  # [m, p]
  w = [xp.take(kernel, i + m, axis=axis) for i in range(-m, m + 1)]  # w[i + m] = w_i
  out = []
  for j in range(-2 * m, 1):
    tap = w[j + m] if j >= -m else xp.zeros_like(w[0])
    if -p + 1 <= j <= 0:
      for i in range(1, m + 1):
        tap = tap + float(gamma[i - 1, -j]) * w[i + m]
    out.append(tap)
  return xp.stack(out, axis=axis).astype(kernel.dtype)


# Converter transforms: torch Conv3d weight [O, I, 3, 1, 1] -> causal Flax kernel [3, 1, 1, I, O].
def _torch_to_flax_causal(mode: str):
  def fn(w: np.ndarray) -> np.ndarray:
    return torch_names.TRANSFORMS["conv"](transfer_torch_kernel(np.asarray(w), mode))
  return fn


CONVERTER_TRANSFORMS = {f"conv_causal_{m}": _torch_to_flax_causal(m) for m in MODES}


def register_converter_transforms() -> None:
  """Registers ``conv_causal_{shift,mask,mixed}`` in ``models.torch_names.TRANSFORMS`` (the converter's)."""
  for name, fn in CONVERTER_TRANSFORMS.items():
    if torch_names.TRANSFORMS.get(name) is not fn:
      torch_names.register_transform(name, fn)
