"""I3D parity with cd-fvd's ``InceptionI3d`` (the PyTorch Kinetics-400 I3D used for FVD), random weights.

The real network pools the final 2x7x7 map of 224x224, >= 9-frame clips; to keep the test small both sides use a
1x2x2 final average pool on 8x64x64 clips (every layer, padding rule and the logits path are unchanged).
"""

import numpy as np
import pytest
import torch

import jax
import jax.numpy as jnp
from flax import nnx

from vid2world_jax.metrics import _torch_refs, i3d, weights
from vid2world_jax.testing.fixtures import max_rel_err

SMALL_POOL = (1, 2, 2)


def _run(model, x):
  graphdef, state = nnx.split(model)
  return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(x)))


def test_i3d_metric_parity_small_clip(tmp_path):
  ref = _torch_refs.i3d_reference(seed=0, avg_pool_kernel=SMALL_POOL)
  path = tmp_path / "i3d_random.pt"
  torch.save(ref.state_dict(), path)
  cfg = i3d.config()
  cfg.avg_pool_kernel = SMALL_POOL
  model = weights.load_i3d(str(path), cfg)
  # odd sizes exercise the asymmetric TF "same" padding
  x = np.random.default_rng(0).uniform(-1, 1, (1, 7, 61, 63, 3)).astype(np.float32)
  with torch.no_grad():
    want = ref(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))).numpy()
  got = _run(model, x)
  assert got.shape == (1, 400)
  err = max_rel_err(got, want)
  print(f"I3D (7x61x63 clip) max rel err {err:.3g}, logit scale {np.abs(want).max():.3g}")
  assert err <= 1e-4


def test_i3d_metric_preprocess_matches_reference():
  """224x224 bilinear resize (align_corners=False) and [0,255] -> [-1,1], as StyleGAN-V / cd-fvd."""
  import torch.nn.functional as F
  v = np.random.default_rng(1).integers(0, 256, (2, 3, 30, 50, 3), dtype=np.uint8)
  got = np.asarray(i3d.preprocess(v, size=24))
  t = torch.from_numpy(v.astype(np.float32)).flatten(0, 1).permute(0, 3, 1, 2)
  want = F.interpolate(t, size=(24, 24), mode="bilinear", align_corners=False)
  want = (2 * want / 255 - 1).reshape(2, 3, 3, 24, 24).permute(0, 1, 3, 4, 2).numpy()
  assert np.max(np.abs(got - want)) < 1e-5


def test_i3d_metric_missing_weights_message(tmp_path):
  with pytest.raises(weights.MissingWeightsError, match="i3d weights file not found") as e:
    weights.load_i3d(str(tmp_path / "i3d_torchscript.pt"))
  assert "\n" not in str(e.value)


def test_i3d_metric_too_small_input_is_clear():
  cfg = i3d.config()
  model = i3d.build(cfg, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="average-pool kernel"):
    model(jnp.zeros((1, 4, 64, 64, 3)))


def test_i3d_metric_real_geometry():
  """16-frame 224x224 clips end in a 2x7x7 map: exactly the real network's final average pool."""
  assert i3d.final_feature_shape((16, 224, 224)) == (2, 7, 7)
  assert tuple(i3d.config().avg_pool_kernel) == (2, 7, 7)
  # the shape rule agrees with the layers themselves (abstract evaluation, nothing is computed)
  cfg = i3d.config()
  cfg.avg_pool_kernel = (1, 1, 1)
  model = i3d.build(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  feats = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).Mixed_5c(
      _trunk(nnx.merge(graphdef, s), x)), state, jax.ShapeDtypeStruct((1, 12, 70, 90, 3), jnp.float32))
  assert feats.shape[1:4] == i3d.final_feature_shape((12, 70, 90))


def _trunk(model, x):
  for name in model.ORDER[:-1]:
    x = getattr(model, name)(x)
  return x


def test_i3d_metric_torchscript_archive(tmp_path):
  """A TorchScript archive (like StyleGAN-V's i3d_torchscript.pt) with InceptionI3d parameter names converts."""
  ref = _torch_refs.i3d_reference(seed=3, avg_pool_kernel=SMALL_POOL)
  x = torch.from_numpy(np.random.default_rng(2).uniform(-1, 1, (1, 3, 5, 33, 33)).astype(np.float32))
  with torch.no_grad():
    traced = torch.jit.trace(ref, x)
  path = tmp_path / "i3d_torchscript.pt"
  torch.jit.save(traced, str(path))
  cfg = i3d.config()
  cfg.avg_pool_kernel = SMALL_POOL
  model = weights.load_i3d(str(path), cfg)
  got = nnx.state(model, nnx.Param)["Mixed_5c"]["b1b"]["conv3d"]["kernel"][...]
  want = ref.Mixed_5c.b1b.conv3d.weight.detach().numpy().transpose(2, 3, 4, 1, 0)
  np.testing.assert_array_equal(np.asarray(got), want)
