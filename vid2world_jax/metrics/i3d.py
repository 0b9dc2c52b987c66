"""I3D (Inception-v1 inflated, Kinetics-400) used for FVD, Flax NNX, channels-last ``[B, T, H, W, C]``.

Architecture and parameter names follow the widely used PyTorch port of DeepMind's Kinetics I3D (``InceptionI3d``
with ``Unit3D`` = Conv3d(no bias) + BatchNorm3d(eps 1e-5) + ReLU, TF-style dynamic "same" zero
padding; state-dict keys such as ``Mixed_4b.b1b.conv3d.weight``, ``logits.conv3d.bias``), which is the network
behind StyleGAN-V's / TATS' FVD. FVD features are the 400 pre-softmax logits averaged over time.

Preprocessing (:func:`preprocess`, as StyleGAN-V / cd-fvd): frames resized to 224x224 (bilinear,
align_corners=False, no antialias) and scaled from ``[0, 255]`` to ``[-1, 1]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vid2world_jax.models.torch_names import Entry, auto_entries
from vid2world_jax.metrics import nn
from vid2world_jax.metrics.protocol import resize_bilinear

TORCH_IGNORE = ["*num_batches_tracked"]  # BatchNorm training counters

# (name, in_channels, [b0, b1a, b1b, b2a, b2b, b3b]) of the inception modules, in order.
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.num_classes = 400              # Kinetics-400 logits = FVD feature size
  c.in_channels = 3
  c.avg_pool_kernel = (2, 7, 7)    # final AvgPool3d (T, H, W); (2, 7, 7) for 224x224 inputs
  c.input_size = 224               # preprocessing resolution
  return c


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
  pad = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
  return pad // 2, pad - pad // 2


def _pad_same(x, kernel, stride):
  pads = [(0, 0)] + [_same_pad(x.shape[1 + i], kernel[i], stride[i]) for i in range(3)] + [(0, 0)]
  return jnp.pad(x, pads)  # zeros, as torch F.pad


class Unit3D(nnx.Module):
  def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), *, bn=True, relu=True, bias=False, rngs):
    self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
    self.conv3d = nnx.Conv(cin, cout, kernel_size=self.kernel, strides=self.stride, padding="VALID",
                           use_bias=bias, rngs=rngs)
    self.bn = nn.FrozenBatchNorm(cout, eps=1e-5) if bn else None

  def __call__(self, x):
    x = self.conv3d(_pad_same(x, self.kernel, self.stride))
    if self.bn is not None:
      x = self.bn(x)
    return jax.nn.relu(x) if self.relu else x


class MaxPool3dSame(nnx.Module):
  def __init__(self, kernel, stride):
    self.kernel, self.stride = tuple(kernel), tuple(stride)

  def __call__(self, x):
    return nn.max_pool(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nnx.Module):
  def __init__(self, cin, c, *, rngs):
    self.b0 = Unit3D(cin, c[0], rngs=rngs)
    self.b1a = Unit3D(cin, c[1], rngs=rngs)
    self.b1b = Unit3D(c[1], c[2], (3, 3, 3), rngs=rngs)
    self.b2a = Unit3D(cin, c[3], rngs=rngs)
    self.b2b = Unit3D(c[3], c[4], (3, 3, 3), rngs=rngs)
    self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
    self.b3b = Unit3D(cin, c[5], rngs=rngs)

  def __call__(self, x):
    return jnp.concatenate([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], -1)


class InceptionI3d(nnx.Module):
  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.avg_pool_kernel = tuple(cfg.avg_pool_kernel)
    self.Conv3d_1a_7x7 = Unit3D(cfg.in_channels, 64, (7, 7, 7), (2, 2, 2), rngs=rngs)
    self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
    self.Conv3d_2b_1x1 = Unit3D(64, 64, rngs=rngs)
    self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), rngs=rngs)
    self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
    self.Mixed_3b = InceptionModule(*MIXED["Mixed_3b"], rngs=rngs)
    self.Mixed_3c = InceptionModule(*MIXED["Mixed_3c"], rngs=rngs)
    self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
      setattr(self, name, InceptionModule(*MIXED[name], rngs=rngs))
    self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
    self.Mixed_5b = InceptionModule(*MIXED["Mixed_5b"], rngs=rngs)
    self.Mixed_5c = InceptionModule(*MIXED["Mixed_5c"], rngs=rngs)
    self.logits = Unit3D(1024, cfg.num_classes, bn=False, relu=False, bias=True, rngs=rngs)

  ORDER = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3", "Mixed_3b",
           "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
           "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, T, H, W, 3]`` in ``[-1, 1]`` -> ``[B, num_classes]`` logits averaged over time."""
    if x.ndim != 5:
      raise ValueError(f"I3D wants [B, T, H, W, C] videos, got shape {x.shape}")
    k = self.avg_pool_kernel
    final = final_feature_shape(x.shape[1:4])
    if any(final[i] < k[i] for i in range(3)):
      raise ValueError(f"I3D: final feature map {final} of a {tuple(x.shape[1:4])} clip is smaller than the "
                       f"average-pool kernel {k}; use longer/larger inputs (224x224, >= 9 frames for the real network)")
    x = x.astype(jnp.float32)
    for name in self.ORDER:
      x = getattr(self, name)(x)
    x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *k, 1), (1,) * 5, "VALID") / float(np.prod(k))
    x = self.logits(x)
    if x.shape[2:4] != (1, 1):
      raise ValueError(f"I3D: spatial size after pooling is {x.shape[2:4]}, want (1, 1); check the input size")
    return x[:, :, 0, 0, :].mean(axis=1)


def final_feature_shape(thw) -> tuple[int, int, int]:
  """(T, H, W) of the Mixed_5c output for a (T, H, W) input ("same" padding: each stride-s stage gives ceil(n/s))."""
  out = list(thw)
  for stride in ((2, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)):  # Conv3d_1a, pools 2a, 3a, 4a, 5a
    out = [-(-n // s) for n, s in zip(out, stride)]
  return tuple(out)


def preprocess(videos_uint8, size: int = 224) -> jax.Array:
  """uint8 ``[B, T, H, W, 3]`` -> float ``[B, T, size, size, 3]`` in ``[-1, 1]`` (torch-exact bilinear resize)."""
  v = jnp.asarray(videos_uint8, jnp.float32)
  b, t, h, w, c = v.shape
  v = resize_bilinear(v.reshape(b * t, h, w, c), (size, size)).reshape(b, t, size, size, c)
  return 2.0 * v / 255.0 - 1.0


def build(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> InceptionI3d:
  return InceptionI3d(cfg, rngs=rngs)


def torch_name_table(model: InceptionI3d) -> list[Entry]:
  return auto_entries(model, "") + nn.batchnorm_entries(model)


# Keys of the torch module's end_points dict copies (none in the plain state dict).
TORCH_ALIASES: dict[str, str] = {}
