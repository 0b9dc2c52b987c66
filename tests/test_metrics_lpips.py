"""LPIPS parity with the ``lpips`` package (random trunk, the package's real v0.1 linear heads)."""

import numpy as np
import pytest
import torch

import jax.numpy as jnp

from vid2world_jax.metrics import _torch_refs, weights
from vid2world_jax.testing.fixtures import max_rel_err


def _inputs(seed, n=2, hw=(64, 64)):
  rng = np.random.default_rng(seed)
  a = rng.uniform(-1, 1, (n, *hw, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
  return a, b


def _torch(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_metric_parity_torchvision_trunk(net, tmp_path):
  ref = _torch_refs.lpips_reference(net, seed=1)
  trunk = tmp_path / f"{net}_trunk.pth"
  torch.save(_torch_refs.lpips_trunk_state_dict(ref), trunk)
  model = weights.load_lpips(net, str(trunk))  # heads: the lpips package's weights/v0.1/<net>.pth
  a, b = _inputs(0)
  with torch.no_grad():
    want_total, want_layers = ref(_torch(a), _torch(b), retPerLayer=True)
  got_total, got_layers = model(jnp.asarray(a), jnp.asarray(b), per_layer=True)
  want = want_total.numpy().reshape(-1)
  err = max_rel_err(np.asarray(got_total), want)
  print(f"LPIPS-{net} max rel err {err:.3g} (values {want})")
  assert err <= 1e-4
  for g, w in zip(got_layers, want_layers):
    assert max_rel_err(np.asarray(g), w.numpy().reshape(-1)) <= 1e-4
  assert np.all(want > 0)
  # identical images: distance exactly zero
  assert np.allclose(np.asarray(model(jnp.asarray(a), jnp.asarray(a))), 0.0, atol=1e-7)


def test_lpips_metric_full_module_state_dict(tmp_path):
  """A full ``lpips.LPIPS`` state dict (net.slice<k>.<i>.*, lin<k>.*) converts from one file."""
  ref = _torch_refs.lpips_reference("alex", seed=2)
  path = tmp_path / "lpips_alex_full.pth"
  torch.save(ref.state_dict(), path)
  model = weights.load_lpips("alex", str(path), lin_path="/nonexistent/never/read.pth")
  a, b = _inputs(3, n=1, hw=(48, 40))
  with torch.no_grad():
    want = ref(_torch(a), _torch(b)).numpy().reshape(-1)
  assert max_rel_err(np.asarray(model(jnp.asarray(a), jnp.asarray(b))), want) <= 1e-4


def test_lpips_metric_missing_weights_message(tmp_path):
  with pytest.raises(weights.MissingWeightsError, match="lpips weights file not found") as e:
    weights.load_lpips("vgg", str(tmp_path / "nope.pth"))
  assert "\n" not in str(e.value)
  with pytest.raises(weights.MissingWeightsError, match="--lpips_weights"):
    weights.load_lpips("vgg", None)


def test_lpips_metric_wrong_file_is_loud(tmp_path):
  """A trunk file for the other backbone fails with a conversion report, not a silent partial load."""
  ref = _torch_refs.lpips_reference("alex", seed=0)
  path = tmp_path / "alex.pth"
  torch.save(_torch_refs.lpips_trunk_state_dict(ref), path)
  with pytest.raises(ValueError, match="cannot convert LPIPS-vgg"):
    weights.load_lpips("vgg", str(path))
