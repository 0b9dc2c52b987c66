"""Per-dataset evaluation protocols (paper Appendix C / spec §8.2): which frames, which crop, which resolution.

Videos are uint8 ``[N, T, H, W, 3]`` (channels-last). ``apply(videos, protocol)`` returns the frames that are
scored, as uint8 ``[N, T', H', W', 3]``:

* ``rt1``: all 16 frames (the given first frame included), native resolution; LPIPS with VGG.
* ``csgo``: the 12 predicted frames (4 ground-truth history frames dropped); the black padding added by the
  loader's 275x512 -> 320x512 centre crop (22 rows on top, 23 at the bottom) is removed, then frames are resized to
  DIAMOND's 150x280; LPIPS with VGG.
* ``generic``: every frame as given, no crop/resize; LPIPS with VGG.

Also holds :func:`resize_bilinear`, a torch-exact ``F.interpolate(mode='bilinear', align_corners=False)`` (no
antialiasing) used by the FID/FVD preprocessing, and an antialiased variant for the protocol's downsizing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def get_protocol(name: str) -> ml_collections.ConfigDict:
  """Settings of a named protocol ("rt1", "csgo", "generic")."""
  c = ml_collections.ConfigDict()
  c.name = name
  c.num_frames = None          # required clip length T of the inputs (None: any)
  c.first_frame = 0            # first scored frame (frames before it are given history)
  c.crop_rows = None           # (top, bottom) rows of padding to remove when the input height is pad_height
  c.pad_height = None          # input height that carries the padding (other heights are taken as already cropped)
  c.resize_to = None           # (H, W) scoring resolution, None: native
  c.resize_antialias = True    # antialiased (PIL/torchvision-Resize-like) downsizing; unverified for the reference
  c.lpips_net = "vgg"          # LPIPS backbone: "vgg" (RT-1/CS:GO) or "alex" (RECON)
  if name == "rt1":
    c.num_frames = 16
  elif name == "csgo":
    c.num_frames = 16
    c.first_frame = 4
    c.crop_rows = (22, 23)
    c.pad_height = 320
    c.resize_to = (150, 280)
  elif name != "generic":
    raise ValueError(f"unknown protocol {name!r}; want rt1, csgo or generic")
  return c


def apply(videos, protocol) -> np.ndarray:
  """Selects/crops/resizes the scored frames of uint8 ``[N, T, H, W, 3]`` videos (see module doc)."""
  cfg = get_protocol(protocol) if isinstance(protocol, str) else protocol
  v = np.asarray(videos)
  if v.ndim != 5 or v.shape[-1] != 3:
    raise ValueError(f"videos must be [N, T, H, W, 3], got shape {v.shape}")
  if v.dtype != np.uint8:
    raise ValueError(f"videos must be uint8, got {v.dtype}")
  if cfg.num_frames is not None and v.shape[1] != cfg.num_frames:
    raise ValueError(f"protocol {cfg.name}: videos have {v.shape[1]} frames, the protocol scores "
                     f"{cfg.num_frames}-frame clips")
  v = v[:, cfg.first_frame:]
  if cfg.crop_rows is not None and v.shape[2] == cfg.pad_height:
    top, bottom = cfg.crop_rows
    v = v[:, :, top:v.shape[2] - bottom]
  if cfg.resize_to is not None and tuple(v.shape[2:4]) != tuple(cfg.resize_to):
    n, t, h, w, c = v.shape
    x = jnp.asarray(v.reshape(n * t, h, w, c), jnp.float32)
    if cfg.resize_antialias:
      x = jax.image.resize(x, (n * t, *cfg.resize_to, c), method="linear", antialias=True)
    else:
      x = resize_bilinear(x, tuple(cfg.resize_to))
    v = np.asarray(jnp.clip(jnp.round(x), 0, 255)).astype(np.uint8).reshape(n, t, *cfg.resize_to, c)
  return v


@functools.lru_cache(maxsize=64)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
  """``[n_out, n_in]`` weights of torch's 1-D linear interpolation, align_corners=False, no antialias."""
  scale = n_in / n_out
  m = np.zeros((n_out, n_in), np.float64)
  for i in range(n_out):
    src = max((i + 0.5) * scale - 0.5, 0.0)
    i0 = min(int(np.floor(src)), n_in - 1)
    i1 = min(i0 + 1, n_in - 1)
    lam = src - i0
    m[i, i0] += 1.0 - lam
    m[i, i1] += lam
  return m.astype(np.float32)


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """torch ``F.interpolate(x, size, mode='bilinear', align_corners=False)`` on channels-last ``[N, H, W, C]``."""
  if x.ndim != 4:
    raise ValueError(f"resize_bilinear wants [N, H, W, C], got shape {x.shape}")
  h, w = x.shape[1:3]
  if (h, w) == tuple(size):
    return x
  mh = jnp.asarray(_interp_matrix(h, size[0]))
  mw = jnp.asarray(_interp_matrix(w, size[1]))
  x = jnp.einsum("oh,nhwc->nowc", mh, x, precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("pw,nowc->nopc", mw, x, precision=jax.lax.Precision.HIGHEST)
