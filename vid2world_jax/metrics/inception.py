"""The FID InceptionV3 (pytorch-fid's ``fid_inception_v3`` variant of torchvision's Inception3), Flax NNX.

Differences from torchvision's Inception3 (as in the TF FID graph): the pooling branch of Mixed_5b/5c/5d,
Mixed_6b..6e and Mixed_7b averages without counting padded zeros, and Mixed_7c max-pools. BatchNorm runs in eval
mode (running statistics), as the Vid2World paper requires for FID. Attribute names mirror the torch module, so
``Mixed_6b.branch7x7_2.conv.weight`` of ``pt_inception-2015-12-05-*.pth`` maps onto ``Mixed_6b.branch7x7_2.conv``.

Call: ``model(images)`` with ``[N, H, W, 3]`` images in ``[0, 1]`` -> ``[N, 2048]`` pool3 features. With
``resize_input`` (default, as pytorch-fid) frames are bilinearly resized to 299x299 (torch-exact, no antialias)
and mapped to ``[-1, 1]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vid2world_jax.models.torch_names import Entry, auto_entries
from vid2world_jax.metrics import nn
from vid2world_jax.metrics.protocol import resize_bilinear

TORCH_IGNORE = [
    "fc.*",                   # 1008-way classifier: FID uses the pool3 features
    "AuxLogits.*",            # auxiliary head (absent in the FID file; present in torchvision checkpoints)
    "*num_batches_tracked",   # training counter of BatchNorm
]


def config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.resize_input = True      # resize to 299x299 like pytorch-fid (bilinear, align_corners=False)
  c.input_size = 299
  c.normalize_input = True   # [0, 1] -> [-1, 1]
  return c


class BasicConv2d(nnx.Module):
  def __init__(self, cin, cout, k, stride=1, pad=0, *, rngs):
    k = (k, k) if isinstance(k, int) else tuple(k)
    self.conv = nn.conv(cin, cout, k, stride, pad, bias=False, rngs=rngs)
    self.bn = nn.FrozenBatchNorm(cout, eps=0.001)

  def __call__(self, x):
    return jax.nn.relu(self.bn(self.conv(x)))


class InceptionA(nnx.Module):
  def __init__(self, cin, pool_features, *, rngs):
    self.branch1x1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch5x5_1 = BasicConv2d(cin, 48, 1, rngs=rngs)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, pad=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, pad=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, pad=1, rngs=rngs)
    self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs=rngs)

  def __call__(self, x):
    b1 = self.branch1x1(x)
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(nn.avg_pool_exclude_pad(x, (3, 3), (1, 1), (1, 1)))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nnx.Module):
  def __init__(self, cin, *, rngs):
    self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, pad=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3(x)
    bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([b3, bd, nn.max_pool(x, (3, 3), (2, 2))], -1)


class InceptionC(nnx.Module):
  def __init__(self, cin, c7, *, rngs):
    self.branch1x1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), pad=(0, 3), rngs=rngs)
    self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), pad=(3, 0), rngs=rngs)
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), pad=(3, 0), rngs=rngs)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), pad=(0, 3), rngs=rngs)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), pad=(3, 0), rngs=rngs)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), pad=(0, 3), rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

  def __call__(self, x):
    b1 = self.branch1x1(x)
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    bp = self.branch_pool(nn.avg_pool_exclude_pad(x, (3, 3), (1, 1), (1, 1)))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nnx.Module):
  def __init__(self, cin, *, rngs):
    self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), pad=(0, 3), rngs=rngs)
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), pad=(3, 0), rngs=rngs)
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f"branch7x7x3_{i}")(b7)
    return jnp.concatenate([b3, b7, nn.max_pool(x, (3, 3), (2, 2))], -1)


class InceptionE(nnx.Module):
  """``pool='avg'``: FIDInceptionE_1 (avg, padding not counted); ``pool='max'``: FIDInceptionE_2."""

  def __init__(self, cin, pool, *, rngs):
    self.pool = pool
    self.branch1x1 = BasicConv2d(cin, 320, 1, rngs=rngs)
    self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs=rngs)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), pad=(0, 1), rngs=rngs)
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), pad=(1, 0), rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, pad=1, rngs=rngs)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), pad=(0, 1), rngs=rngs)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), pad=(1, 0), rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

  def __call__(self, x):
    b1 = self.branch1x1(x)
    b3 = self.branch3x3_1(x)
    b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], -1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], -1)
    if self.pool == "avg":
      p = nn.avg_pool_exclude_pad(x, (3, 3), (1, 1), (1, 1))
    else:
      p = nn.max_pool(x, (3, 3), (1, 1), [(1, 1), (1, 1)])
    return jnp.concatenate([b1, b3, bd, self.branch_pool(p)], -1)


class FIDInceptionV3(nnx.Module):
  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, pad=1, rngs=rngs)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
    self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = InceptionE(1280, "avg", rngs=rngs)
    self.Mixed_7c = InceptionE(2048, "max", rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """``[N, H, W, 3]`` in ``[0, 1]`` -> ``[N, 2048]`` pool3 features."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"Inception wants [N, H, W, 3] images, got shape {images.shape}")
    x = images.astype(jnp.float32)
    if self.cfg.resize_input:
      x = resize_bilinear(x, (self.cfg.input_size,) * 2)
    if self.cfg.normalize_input:
      x = 2.0 * x - 1.0
    if min(x.shape[1:3]) < 75:
      raise ValueError(f"Inception needs at least 75x75 inputs, got {x.shape[1:3]}")
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = nn.max_pool(x, (3, 3), (2, 2))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = nn.max_pool(x, (3, 3), (2, 2))
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
      x = getattr(self, name)(x)
    return x.mean(axis=(1, 2))


def build(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> FIDInceptionV3:
  return FIDInceptionV3(cfg, rngs=rngs)


def torch_name_table(model: FIDInceptionV3) -> list[Entry]:
  """Keys of torchvision's Inception3 state dict, as in ``pt_inception-2015-12-05-*.pth``."""
  return auto_entries(model, "") + nn.batchnorm_entries(model)


# pytorch-fid's InceptionV3 wrapper module stores the same layers under blocks.<b>.<i>.
TORCH_ALIASES: dict[str, str] = {}
