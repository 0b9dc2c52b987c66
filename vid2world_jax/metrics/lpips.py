"""LPIPS (Zhang et al. 2018, the ``lpips`` package v0.1) with VGG16 or AlexNet trunks, Flax NNX, channels-last.

Attribute names mirror the torch checkpoints: the trunk is ``net.features.<i>`` (torchvision's ``features``
indices, e.g. ``features.28.weight`` of ``vgg16``), and the linear heads are ``lin<k>.model.1`` (the ``lpips``
package's ``weights/v0.1/{vgg,alex}.pth``). Inputs: images in ``[-1, 1]``, ``[N, H, W, 3]``; output: ``[N]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vid2world_jax.models.torch_names import Entry, auto_entries
from vid2world_jax.metrics import nn
from vid2world_jax.models import layers

# ScalingLayer of lpips v0.1: (x - shift) / scale, per RGB channel.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# torchvision ``features`` layouts: (kind, args) per index; taps are the indices whose outputs LPIPS uses.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VGG_TAPS = (3, 8, 15, 22, 29)
ALEX_TAPS = (1, 4, 7, 9, 11)
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}

# Checkpoint keys that are unused by design.
TORCH_IGNORE = [
    "classifier.*",        # torchvision classifier head (LPIPS uses the conv trunk only)
    "scaling_layer.*",     # constant buffers of the lpips module (SHIFT/SCALE above)
    "*num_batches_tracked",
    "lins.*",              # lpips module state dicts repeat lin<k> under the ModuleList name lins.<k>
]


def config(net: str = "vgg") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.net = net  # "vgg" (RT-1 / CS:GO protocol) or "alex" (RECON protocol)
  return c


class Features(nnx.Module):
  """torchvision ``vgg16().features[:30]`` or ``alexnet().features[:12]``; returns the 5 LPIPS taps."""

  def __init__(self, net: str, *, rngs: nnx.Rngs):
    items = []
    if net == "vgg":
      cin = 3
      for v in _VGG16:
        if v == "M":
          items.append(nn.MaxPool((2, 2), (2, 2)))
        else:
          items += [nn.conv(cin, v, (3, 3), 1, 1, rngs=rngs), nn.ReLU()]
          cin = v
      self.taps = VGG_TAPS
    elif net == "alex":
      items = [nn.conv(3, 64, (11, 11), 4, 2, rngs=rngs), nn.ReLU(), nn.MaxPool((3, 3), (2, 2)),
               nn.conv(64, 192, (5, 5), 1, 2, rngs=rngs), nn.ReLU(), nn.MaxPool((3, 3), (2, 2)),
               nn.conv(192, 384, (3, 3), 1, 1, rngs=rngs), nn.ReLU(),
               nn.conv(384, 256, (3, 3), 1, 1, rngs=rngs), nn.ReLU(),
               nn.conv(256, 256, (3, 3), 1, 1, rngs=rngs), nn.ReLU()]
      self.taps = ALEX_TAPS
    else:
      raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")
    self.features = layers.Seq(items[: self.taps[-1] + 1])

  def __call__(self, x):
    outs = []
    for i, layer in enumerate(self.features):
      x = layer(x)
      if i in self.taps:
        outs.append(x)
    return outs


class NetLinLayer(nnx.Module):
  """``lpips.NetLinLayer``: ``model = Sequential(Dropout, Conv2d(c, 1, 1, bias=False))``."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.model = layers.Seq([layers.Identity(), nn.conv(channels, 1, (1, 1), bias=False, rngs=rngs)])

  def __call__(self, x):
    return self.model(x)


def _normalize(f, eps=1e-10):
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + eps)


class LPIPS(nnx.Module):
  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.net_name = cfg.net
    self.net = Features(cfg.net, rngs=rngs)
    for k, ch in enumerate(CHANNELS[cfg.net]):
      setattr(self, f"lin{k}", NetLinLayer(ch, rngs=rngs))

  def __call__(self, x0: jax.Array, x1: jax.Array, per_layer: bool = False):
    """LPIPS distance ``[N]`` between ``[N, H, W, 3]`` images in ``[-1, 1]``."""
    if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[-1] != 3:
      raise ValueError(f"LPIPS wants two [N, H, W, 3] arrays of equal shape, got {x0.shape} and {x1.shape}")
    shift, scale = jnp.asarray(SHIFT, jnp.float32), jnp.asarray(SCALE, jnp.float32)
    x = (jnp.concatenate([x0, x1], 0).astype(jnp.float32) - shift) / scale
    n = x0.shape[0]
    res = []
    for k, f in enumerate(self.net(x)):
      d = jnp.square(_normalize(f[:n]) - _normalize(f[n:]))
      res.append(getattr(self, f"lin{k}")(d).mean(axis=(1, 2))[:, 0])
    total = sum(res)
    return (total, res) if per_layer else total


def build(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> LPIPS:
  return LPIPS(cfg, rngs=rngs)


def torch_name_table(model: LPIPS) -> list[Entry]:
  """Trunk: torchvision keys ``features.<i>.*``; heads: lpips keys ``lin<k>.model.1.weight``."""
  table = auto_entries(model.net, "", path_prefix=("net",))
  for k in range(len(CHANNELS[model.net_name])):
    table += auto_entries(getattr(model, f"lin{k}"), f"lin{k}.", path_prefix=(f"lin{k}",))
  return table


# The lpips package's own module state_dict names the trunk net.slice<k>.<i>; <i> is torchvision's index.
TORCH_ALIASES = {f"net.slice{k}.": "features." for k in range(1, 6)}
