"""Test helpers: the PyTorch reference implementations (torchvision, lpips, pytorch-fid, cd-fvd) with random weights.

Only the parity tests import this module. torch/torchvision/lpips/pytorch-fid/cd-fvd are dev dependencies
(requirements-dev.txt). Nothing here downloads anything: every network is built with ``weights=None`` and seeded
random parameters, including random BatchNorm running statistics so eval-mode BN is exercised.
"""

from __future__ import annotations

import sys
import types


def import_torchvision():
  """Imports torchvision even when its compiled ops do not load.

  PyPI's torchvision wheel is built against the CUDA torch; beside the CPU torch wheel its C++ ops library fails
  to load and ``torchvision._meta_registrations`` (fake kernels for those ops: nms, roi_align, ...) then raises at
  import. The model definitions used here are pure Python and need none of those ops, so that one module is
  replaced by an empty stub before the import.
  """
  if "torchvision" not in sys.modules:
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
  import torchvision
  return torchvision


def randomize_(module, seed: int):
  """Seeded random parameters and BatchNorm statistics (moderate scale, He-like conv init)."""
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, m in module.named_modules():
      if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
      elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
  return module.eval()


def lpips_reference(net: str, seed: int = 0):
  """``lpips.LPIPS(net)`` with a random trunk and the package's real v0.1 linear heads."""
  import_torchvision()
  import lpips
  import torch
  torch.manual_seed(seed)
  m = lpips.LPIPS(net=net, pnet_rand=True, pretrained=True, verbose=False)
  randomize_(m.net, seed)
  return m.eval()


def lpips_trunk_state_dict(ref) -> dict:
  """The trunk of an ``lpips.LPIPS`` as a torchvision ``features.<i>.*`` state dict (the released file format)."""
  out = {}
  for k, v in ref.net.state_dict().items():
    _, idx, rest = k.split(".", 2)  # slice<k>.<i>.<weight|bias>
    out[f"features.{idx}.{rest}"] = v.clone()
  return out


def fid_inception_reference(seed: int = 0):
  """(pytorch-fid ``InceptionV3([3])`` wrapper, its torchvision ``Inception3``) with random weights.

  Built as ``pytorch_fid.inception.fid_inception_v3`` does, minus the weight download.
  """
  import_torchvision()
  from pytorch_fid import inception as pfi
  inc = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  inc.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
  inc.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
  inc.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
  inc.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
  inc.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
  inc.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
  inc.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
  inc.Mixed_7b = pfi.FIDInceptionE_1(1280)
  inc.Mixed_7c = pfi.FIDInceptionE_2(2048)
  randomize_(inc, seed)
  orig = pfi.fid_inception_v3
  pfi.fid_inception_v3 = lambda: inc
  try:
    wrapper = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
  finally:
    pfi.fid_inception_v3 = orig
  return wrapper.eval(), inc


def i3d_reference(seed: int = 0, avg_pool_kernel=(2, 7, 7)):
  """cd-fvd's ``InceptionI3d`` (the PyTorch Kinetics I3D port used for FVD) with random weights."""
  import torch
  from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d
  torch.manual_seed(seed)
  m = InceptionI3d(400, in_channels=3)
  if tuple(avg_pool_kernel) != (2, 7, 7):
    m.avg_pool = torch.nn.AvgPool3d(kernel_size=list(avg_pool_kernel), stride=(1, 1, 1))
  return randomize_(m, seed)
