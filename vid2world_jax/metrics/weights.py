"""Converters from the standard released weight files to the metric networks (explicit name tables, loud errors).

* LPIPS: torchvision ``vgg16`` / ``alexnet`` state dict (e.g. ``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth``;
  only ``features.*`` is used) plus the linear heads ``weights/v0.1/{vgg,alex}.pth`` that ship inside the pip package
  ``lpips`` (found automatically when ``lpips`` is installed, or passed explicitly). A full ``lpips.LPIPS`` module
  state dict (``net.slice<k>.<i>.*`` + ``lin<k>.*``) is accepted as a single file too.
* FID: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (torchvision Inception3 key names).
* FVD: an I3D state dict (``InceptionI3d`` key names, e.g. ``i3d_pretrained_400.pt``); a TorchScript archive with
  the same parameter names is read as data (``conversion.torchscript_io``: its code is never run).

Files are read with :func:`vid2world_jax.conversion.checkpoint_io.open_checkpoint` (``.pth/.pt/.safetensors``).
A missing file raises :class:`MissingWeightsError` whose message is one line saying what to supply.
"""

from __future__ import annotations

import collections
import importlib.util
import os
from collections.abc import Mapping

from flax import nnx

from vid2world_jax.conversion import checkpoint_io, torchscript_io
from vid2world_jax.conversion.core import ConversionError, convert, load_into, param_shapes
from vid2world_jax.metrics import i3d as i3d_lib
from vid2world_jax.metrics import inception as inception_lib
from vid2world_jax.metrics import lpips as lpips_lib

WHERE = {
    "lpips": "a torchvision vgg16/alexnet state dict, e.g. vgg16-397923af.pth (plus the lpips package's "
             "weights/v0.1/<net>.pth linear heads: pip install lpips==0.1.4)",
    "inception": "pytorch-fid's pt_inception-2015-12-05-6726825d.pth",
    "i3d": "an I3D (InceptionI3d) state dict .pt such as i3d_pretrained_400.pt",
}


class MissingWeightsError(FileNotFoundError):
  """A weight file the user must supply is absent (message: one line)."""


def _require(path: str | None, what: str, flag: str) -> str:
  if not path:
    raise MissingWeightsError(f"{what} weights not given: pass {flag}=<{WHERE[what]}>")
  if not os.path.isfile(path):
    raise MissingWeightsError(f"{what} weights file not found: {path} (expected {WHERE[what]}; "
                              f"this tool never downloads weights)")
  return path


def open_weights(path: str) -> Mapping:
  """Lazy key -> tensor mapping of a weight file. Torch pickles are read with ``weights_only=True`` (a pickle that
  would run code is refused); TorchScript archives through ``torchscript_io.read_tensors``, which reads their
  tensors without running any of their code (never ``torch.jit.load``: README, Reliability)."""
  if os.path.splitext(path)[1].lower() in (".pt", ".pth") and torchscript_io.is_torchscript(path):
    return torchscript_io.read_tensors(path)
  return checkpoint_io.open_checkpoint(path)


def _convert_into(model: nnx.Module, ckpt: Mapping, table, *, aliases, ignore, what: str, path: str):
  expected = param_shapes(nnx.state(model, nnx.Param))
  params, report = convert(ckpt, table, expected, aliases=aliases, ignore=ignore)
  if not report.ok:
    raise ConversionError(f"cannot convert {what} weights from {path}:\n{report.summary()}")
  load_into(model, params)
  return model


def default_lpips_lin_path(net: str, version: str = "0.1") -> str | None:
  """``weights/v0.1/<net>.pth`` inside the installed ``lpips`` package (found without importing it), or None."""
  spec = importlib.util.find_spec("lpips")
  if spec is None or not spec.submodule_search_locations:
    return None
  p = os.path.join(list(spec.submodule_search_locations)[0], "weights", f"v{version}", f"{net}.pth")
  return p if os.path.isfile(p) else None


def load_lpips(net: str, backbone_path: str | None, lin_path: str | None = None, *,
               rngs: nnx.Rngs | None = None) -> lpips_lib.LPIPS:
  """LPIPS(``net``) with the trunk from ``backbone_path`` and heads from ``lin_path`` (default: lpips package)."""
  _require(backbone_path, "lpips", "--lpips_weights")
  model = lpips_lib.build(lpips_lib.config(net), rngs=rngs or nnx.Rngs(0))
  backbone = open_weights(backbone_path)
  sources = [backbone]
  if not any(k.startswith("lin0.") for k in backbone):
    lin_path = lin_path or default_lpips_lin_path(net)
    if lin_path is None:
      raise MissingWeightsError(f"LPIPS linear-head weights for {net!r} not found: pip install lpips==0.1.4 or pass "
                                f"--lpips_lin_weights=<lpips/weights/v0.1/{net}.pth>")
    if not os.path.isfile(lin_path):
      raise MissingWeightsError(f"LPIPS linear-head weights file not found: {lin_path}")
    lins = open_weights(lin_path)
    overlap = set(backbone) & set(lins)
    if overlap:
      raise ConversionError(f"{backbone_path} and {lin_path} both hold {sorted(overlap)[:5]}")
    sources.append(lins)
  ckpt = collections.ChainMap(*sources)
  return _convert_into(model, ckpt, lpips_lib.torch_name_table(model), aliases=lpips_lib.TORCH_ALIASES,
                       ignore=lpips_lib.TORCH_IGNORE, what=f"LPIPS-{net}", path=backbone_path)


def load_inception(path: str | None, cfg=None, *, rngs: nnx.Rngs | None = None) -> inception_lib.FIDInceptionV3:
  """FID InceptionV3 from pytorch-fid's ``pt_inception-2015-12-05-*.pth``."""
  _require(path, "inception", "--inception_weights")
  model = inception_lib.build(cfg or inception_lib.config(), rngs=rngs or nnx.Rngs(0))
  return _convert_into(model, open_weights(path), inception_lib.torch_name_table(model),
                       aliases=inception_lib.TORCH_ALIASES, ignore=inception_lib.TORCH_IGNORE,
                       what="FID Inception", path=path)


def load_i3d(path: str | None, cfg=None, *, rngs: nnx.Rngs | None = None) -> i3d_lib.InceptionI3d:
  """I3D from an ``InceptionI3d`` state dict ``.pt`` (or a TorchScript archive with the same names)."""
  _require(path, "i3d", "--i3d_weights")
  model = i3d_lib.build(cfg or i3d_lib.config(), rngs=rngs or nnx.Rngs(0))
  return _convert_into(model, open_weights(path), i3d_lib.torch_name_table(model),
                       aliases=i3d_lib.TORCH_ALIASES, ignore=i3d_lib.TORCH_IGNORE, what="I3D", path=path)
