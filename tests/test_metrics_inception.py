"""FID InceptionV3 parity with pytorch-fid's InceptionV3 (FID variant blocks, eval-mode BN, random weights)."""

import numpy as np
import pytest
import torch

import jax
import jax.numpy as jnp
from flax import nnx

from vid2world_jax.metrics import _torch_refs, inception, weights
from vid2world_jax.testing.fixtures import max_rel_err


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  wrapper, inc = _torch_refs.fid_inception_reference(seed=0)
  path = tmp_path_factory.mktemp("inc") / "pt_inception-random.pth"
  torch.save(inc.state_dict(), path)  # same key layout as pt_inception-2015-12-05-*.pth
  return wrapper, inc, str(path)


def _run(model, x):
  graphdef, state = nnx.split(model)
  return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(x)))


def test_inception_metric_parity_full_pipeline(converted):
  """pytorch-fid's InceptionV3 wrapper: resize to 299 (bilinear), [0,1] -> [-1,1], pool3 features (2048)."""
  wrapper, _, path = converted
  model = weights.load_inception(path)
  x = np.random.default_rng(0).uniform(0, 1, (1, 64, 80, 3)).astype(np.float32)
  with torch.no_grad():
    want = wrapper(torch.from_numpy(x.transpose(0, 3, 1, 2)))[0].numpy().reshape(1, 2048)
  got = _run(model, x)
  err = max_rel_err(got, want)
  print(f"FID Inception (299 input) max rel err {err:.3g}, feature scale {np.abs(want).max():.3g}")
  assert err <= 1e-4
  assert np.std(want) > 0


def test_inception_metric_parity_small_input_no_resize(converted):
  """The network alone at a small input (fully convolutional, >= 75x75), batch 2, incl. non-square input."""
  _, inc, path = converted
  cfg = inception.config()
  cfg.resize_input = False
  model = weights.load_inception(path, cfg)
  x = np.random.default_rng(1).uniform(0, 1, (2, 83, 99, 3)).astype(np.float32)
  wrapper_like = torch.nn.Sequential(
      inc.Conv2d_1a_3x3, inc.Conv2d_2a_3x3, inc.Conv2d_2b_3x3, torch.nn.MaxPool2d(3, 2),
      inc.Conv2d_3b_1x1, inc.Conv2d_4a_3x3, torch.nn.MaxPool2d(3, 2),
      inc.Mixed_5b, inc.Mixed_5c, inc.Mixed_5d, inc.Mixed_6a, inc.Mixed_6b, inc.Mixed_6c, inc.Mixed_6d,
      inc.Mixed_6e, inc.Mixed_7a, inc.Mixed_7b, inc.Mixed_7c, torch.nn.AdaptiveAvgPool2d(1)).eval()
  with torch.no_grad():
    want = wrapper_like(torch.from_numpy(2 * x.transpose(0, 3, 1, 2) - 1)).numpy().reshape(2, 2048)
  err = max_rel_err(_run(model, x), want)
  print(f"FID Inception (83x99, no resize) max rel err {err:.3g}")
  assert err <= 1e-4


def test_inception_metric_missing_weights_message(tmp_path):
  with pytest.raises(weights.MissingWeightsError, match="pt_inception") as e:
    weights.load_inception(str(tmp_path / "missing.pth"))
  assert "\n" not in str(e.value)


def test_inception_metric_bad_file_reports_keys(tmp_path):
  torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "partial.pth")
  with pytest.raises(ValueError, match="missing|without a table entry"):
    weights.load_inception(str(tmp_path / "partial.pth"))
