"""Untrusted weight files: a pickle carrying code is refused before the code runs (converter and metric loaders);
TorchScript archives are read as data (their code is never run, unlike ``torch.jit.load``)."""

import os
import pickle

import numpy as np
import pytest
import torch

from vid2world_jax.conversion import checkpoint_io, torchscript_io
from vid2world_jax.metrics import weights


class _RunsCode:
  """Unpickling this calls os.system (what a malicious checkpoint does)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil_files(tmp_path):
  marker = tmp_path / "code_ran"
  zipped = tmp_path / "evil.ckpt"
  torch.save({"state_dict": {"w": torch.ones(2)}, "callback": _RunsCode(marker)}, zipped)
  legacy = tmp_path / "evil_legacy.pth"
  with open(legacy, "wb") as f:
    pickle.dump({"w": _RunsCode(marker)}, f, protocol=2)
  # The files really carry code: plain pickle runs it (checked on a copy of the marker path).
  probe = tmp_path / "probe_ran"
  pickle.loads(pickle.dumps(_RunsCode(probe)))
  assert probe.exists()
  return marker, zipped, legacy


def test_pickle_with_code_refused_by_converter_reader(evil_files):
  marker, zipped, legacy = evil_files
  for path in (zipped, legacy):
    with pytest.raises(checkpoint_io.UntrustedPickleError) as info:
      checkpoint_io.open_checkpoint(str(path))
    msg = str(info.value)
    assert msg.startswith(f"refused {path}: not a plain weights file") and "\n" not in msg, msg
    assert "system" in msg, msg   # names the callable it would have run
  assert not marker.exists()


def test_pickle_with_code_refused_by_metric_weight_loaders(evil_files, tmp_path):
  marker, zipped, legacy = evil_files
  pth = tmp_path / "evil_inception.pth"
  os.replace(zipped, pth)
  for path in (pth, legacy):
    with pytest.raises(checkpoint_io.UntrustedPickleError, match=r"^refused "):
      weights.open_weights(str(path))
  with pytest.raises(checkpoint_io.UntrustedPickleError, match=r"^refused "):
    weights.load_lpips("alex", str(legacy), lin_path=str(legacy))
  assert not marker.exists()


class _Rewrites(torch.nn.Module):
  """A TorchScript module whose __setstate__ (TorchScript code stored in the file) rewrites a buffer on load."""

  def __init__(self):
    super().__init__()
    self.w = torch.nn.Parameter(torch.ones(2, 3))
    self.register_buffer("buf", torch.arange(4.0))

  def forward(self, x):
    return x @ self.w.t()

  @torch.jit.export
  def __getstate__(self):
    return (self.w, self.buf, self.training)

  @torch.jit.export
  def __setstate__(self, state: tuple[torch.Tensor, torch.Tensor, bool]):
    self.w = state[0]
    self.buf = state[1] * 0 + 42
    self.training = state[2]


class _Plain(torch.nn.Module):
  def __init__(self):
    super().__init__()
    self.convs = torch.nn.ModuleList([torch.nn.Conv2d(2, 3, 3), torch.nn.Conv2d(3, 1, 1)])
    self.norm = torch.nn.BatchNorm2d(1)

  def forward(self, x):
    for c in self.convs:
      x = c(x)
    return self.norm(x)


def test_pickle_torchscript_code_runs_under_jit_load_but_not_in_our_reader(tmp_path):
  path = str(tmp_path / "rewrites.pt")
  torch.jit.save(torch.jit.script(_Rewrites()), path)
  loaded = torch.jit.load(path)   # what the metric loaders used to do: the file's code runs during the load
  assert torch.equal(loaded.buf, torch.full((4,), 42.0))
  with pytest.raises(torchscript_io.UntrustedFileError, match="custom __getstate__"):
    torchscript_io.read_tensors(path)
  with pytest.raises(torchscript_io.UntrustedFileError):
    weights.open_weights(path)


def test_pickle_torchscript_tensors_read_as_data_match_state_dict(tmp_path):
  torch.manual_seed(0)
  model = _Plain()
  with torch.no_grad():
    model.norm.running_mean.fill_(0.25)
  path = str(tmp_path / "plain.pt")
  torch.jit.save(torch.jit.script(model), path)
  assert torchscript_io.is_torchscript(path)
  got = weights.open_weights(path)
  want = model.state_dict()
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_array_equal(got[k].numpy(), want[k].numpy(), err_msg=k)


def test_pickle_with_code_refused_by_converter_cli(evil_files, tmp_path):
  import subprocess
  import sys
  from _train_helpers import REPO
  marker, zipped, _ = evil_files
  p = subprocess.run([sys.executable, "convert_torch_weights.py", f"--checkpoint={zipped}",
                      f"--out={tmp_path / 'out'}", "--variant=256"], cwd=REPO, capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == 1, p.stderr[-2000:]
  errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
  assert errors == [f"error: refused {zipped}: not a plain weights file (it references posix.system, which "
                    "torch.load(weights_only=True) will not run); convert it where its source is trusted, e.g. "
                    "to .safetensors"], p.stderr[-2000:]
  assert not marker.exists() and not (tmp_path / "out").exists()
