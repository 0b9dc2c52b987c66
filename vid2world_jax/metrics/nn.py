"""Small inference-only layers shared by the metric networks (channels-last, torch-exact semantics)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vid2world_jax.models.torch_names import Entry


class ReLU(nnx.Module):
  def __call__(self, x):
    return jax.nn.relu(x)


class MaxPool(nnx.Module):
  """``nn.MaxPool2d/3d(kernel, stride)`` without padding, floor mode, over the spatial axes of ``[N, *S, C]``."""

  def __init__(self, kernel, stride):
    self.kernel, self.stride = tuple(kernel), tuple(stride)

  def __call__(self, x):
    return max_pool(x, self.kernel, self.stride)


def max_pool(x, kernel, stride, padding=None):
  pad = [(0, 0)] + list(padding or [(0, 0)] * len(kernel)) + [(0, 0)]
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *kernel, 1), (1, *stride, 1), pad)


def avg_pool_exclude_pad(x, kernel, stride, pad):
  """``F.avg_pool2d(..., count_include_pad=False)`` on ``[N, H, W, C]`` with symmetric padding ``pad``."""
  window, strides = (1, *kernel, 1), (1, *stride, 1)
  padding = [(0, 0)] + [(p, p) for p in pad] + [(0, 0)]
  s = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
  ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
  n = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, padding)
  return s / n


class FrozenBatchNorm(nnx.Module):
  """``nn.BatchNorm*d`` in eval mode: ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``.

  Running statistics are ``nnx.Param`` here (the networks are inference-only) so the converter loads them.
  """

  def __init__(self, num_features: int, eps: float):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
    self.mean = nnx.Param(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.Param(jnp.ones((num_features,), jnp.float32))

  def __call__(self, x):
    inv = jax.lax.rsqrt(self.var[...] + self.eps) * self.scale[...]
    return (x - self.mean[...]) * inv + self.bias[...]


def batchnorm_entries(model: nnx.Module, prefix: str = "") -> list[Entry]:
  """Entries for every FrozenBatchNorm (weight/bias/running_mean/running_var)."""
  out = []
  for path, m in nnx.iter_graph(model):
    if isinstance(m, FrozenBatchNorm):
      base = prefix + ".".join(str(p) for p in path)
      for tk, fk in (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var")):
        out.append(Entry(f"{base}.{tk}", tuple(path) + (fk,)))
  return out


def conv(cin, cout, k, stride=1, pad=0, bias=True, *, rngs):
  """``nn.Conv{2,3}d`` (len(k) spatial dims) with explicit symmetric padding."""
  k = tuple(k)
  stride = (stride,) * len(k) if isinstance(stride, int) else tuple(stride)
  pad = (pad,) * len(k) if isinstance(pad, int) else tuple(pad)
  return nnx.Conv(cin, cout, kernel_size=k, strides=stride, padding=[(p, p) for p in pad], use_bias=bias,
                  rngs=rngs)
