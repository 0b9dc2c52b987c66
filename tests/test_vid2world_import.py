"""[vid2world] Released Vid2World checkpoints import as trained: manifests of the RT-1 / CS:GO / RECON releases
(100% of keys and shapes, schedule buffers), detection of the trained settings, the CS:GO embedding, the
recorded settings and their enforcement. The numerical parity with the original model is in
``test_parity_unet.py`` (fixture ``tests/fixtures/vid2world_tiny``). Both were generated from the original code
by ``tools/vid2world_reference.py``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vid2world_jax.conversion import checkpoint_io, core, vid2world
from vid2world_jax.models import torch_names
from vid2world_jax.conversion import dynamicrafter as dc
from vid2world_jax.testing import fixtures as fx

MANIFESTS = os.path.join(fx.REPO_FIXTURES, "vid2world_manifests")
FIXTURE = os.path.join(fx.REPO_FIXTURES, "vid2world_tiny")
RELEASES = {"rt1": (13, "mlp", 16), "csgo": (51, "embedding", 16), "recon": (3, "mlp", 20)}


def _manifest(name):
  return os.path.join(MANIFESTS, f"vid2world_{name}_state_dict.json")


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_vid2world_manifest_maps_100_percent_as_trained(name):
  ckpt = checkpoint_io.open_checkpoint(_manifest(name))
  info = vid2world.detect(ckpt)
  action_dim, encoder, temporal_length = RELEASES[name]
  assert info == dict(release=name, causal=True, action_dim=action_dim, action_encoder=encoder,
                      temporal_length=temporal_length)
  configs, _, reports = dc.convert_checkpoint(ckpt, vid2world.VARIANT, shapes_only=True)
  for comp, rep in reports.items():
    assert rep.ok and rep.mapped == rep.total_flax > 0, (comp, rep.summary())
  buffers = sum(1 for k in ckpt if k in dc.SCHEDULE_BUFFERS)
  assert sum(r.mapped + len(r.ignored) for r in reports.values()) + buffers == len(ckpt)
  with open(_manifest(name)) as f:
    counts = json.load(f)["param_counts"]
  _, shapes = dc.abstract_component("unet", configs["unet"])
  assert sum(int(np.prod(s)) for s in shapes.values()) == counts["model.diffusion_model"]
  u = configs["unet"]
  assert (u.use_causal_attention, u.causal_init_attn, u.temporal_conv_padding, u.out_conv_padding,
          u.temporal_norm, u.action_dim, u.action_encoder, u.default_fs, u.temporal_length) == (
              True, True, "causal", "causal_height", "joint", action_dim, encoder, 3, temporal_length)


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_vid2world_manifest_schedule_buffers_equal(name):
  with np.load(os.path.join(MANIFESTS, f"vid2world_{name}_schedule_buffers.npz")) as z:
    theirs = {k: z[k] for k in z.files}
  assert set(theirs) == set(dc.SCHEDULE_BUFFERS)
  assert dc.check_schedule_buffers(theirs, vid2world.VARIANT) == []


def test_vid2world_manifest_cli_full_coverage_without_variant():
  for name in sorted(RELEASES):
    out = subprocess.run([sys.executable, os.path.join(fx.REPO_ROOT, "convert_torch_weights.py"), "--manifest",
                          _manifest(name)], capture_output=True, text=True, cwd=fx.REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "coverage: " in out.stdout and "(100.00%)" in out.stdout.split("coverage: ")[1], out.stdout
    assert f"Vid2World checkpoint ({name})" in out.stdout


def _fixture():
  f = fx.load(FIXTURE)
  from vid2world_jax.models import unet
  plain = dict(f.config["params"])  # the same sizes read as a DynamiCrafter UNet: settings must come from keys
  for k in ("action_emb", "action_dim", "use_causal_attention"):
    plain.pop(k)
  return f, unet.config_from_torch_params(plain)


def _convert(w, cfg, **kw):
  return dc.convert_checkpoint(w, "512", components=["unet"], component_configs={"unet": cfg}, **kw)


def test_vid2world_fixture_settings_come_from_the_keys():
  f, cfg = _fixture()
  w = f.weights()
  assert "model.diffusion_model.out.2.conv2d.weight" in w
  configs, params, rep = _convert(w, cfg)
  assert rep["unet"].ok and rep["unet"].mapped == rep["unet"].total_flax
  u = configs["unet"]
  assert (u.causal_temporal_attention, u.causal_init_attn, u.temporal_conv_padding, u.out_conv_padding,
          u.temporal_norm, u.action_dim, u.action_encoder) == (True, True, "causal", "causal_height", "joint",
                                                               13, "mlp")
  # imported as trained: kernels copied, never transferred
  k = "model.diffusion_model.input_blocks.1.0.temopral_conv.conv1.2.conv3d.weight"
  got = params["unet"][("input_blocks", 1, 0, "temopral_conv", "conv1", 2, "kernel")]
  np.testing.assert_array_equal(got, torch_names.TRANSFORMS["conv"](w[k]))
  np.testing.assert_array_equal(params["unet"][("out", 2, "kernel")],
                                torch_names.TRANSFORMS["conv"](w["model.diffusion_model.out.2.conv2d.weight"]))
  with pytest.raises(core.ConversionError, match="without --causal"):
    _convert(w, cfg, causal=dc.CausalOptions(enabled=True))


def test_vid2world_csgo_embedding_is_copied_without_transpose():
  """CS:GO: ``action_emb_preprocess.weight [51, mc]`` is used as ``a @ W``; the encoder matches that exactly."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from vid2world_jax.models import unet
  f, cfg = _fixture()
  rng = np.random.default_rng(0)
  w = {k: v for k, v in f.weights().items() if ".action_emb_proj." not in k}
  mc, ted = cfg.model_channels, 4 * cfg.model_channels
  new = {"action_emb_preprocess.weight": (51, mc), "action_emb_proj.0.weight": (ted, mc),
         "action_emb_proj.0.bias": (ted,), "action_emb_proj.2.weight": (ted, ted), "action_emb_proj.2.bias": (ted,)}
  for k, s in new.items():
    w["model.diffusion_model." + k] = rng.normal(size=s).astype(np.float32) * 0.1
  configs, params, rep = _convert(w, cfg)
  assert rep["unet"].ok and configs["unet"].action_encoder == "embedding" and configs["unet"].action_dim == 51
  table = w["model.diffusion_model.action_emb_preprocess.weight"]
  np.testing.assert_array_equal(params["unet"][("action_emb", 0, "kernel")], table)
  enc = unet.action_encoder("embedding", 51, mc, ted, dtype=jnp.float32, rngs=nnx.Rngs(0))
  for i in (0, 1, 3):
    enc[i].kernel.set_value(jnp.asarray(params["unet"][("action_emb", i, "kernel")]))
    if i:
      enc[i].bias.set_value(jnp.asarray(params["unet"][("action_emb", i, "bias")]))
  a = (rng.random((2, 5, 51)) < 0.1).astype(np.float32)
  p = lambda n: w["model.diffusion_model.action_emb_proj." + n]
  h = a @ table
  h = h @ p("0.weight").T + p("0.bias")
  h = h / (1 + np.exp(-h))
  want = h @ p("2.weight").T + p("2.bias")
  with jax.default_matmul_precision("highest"):
    got = np.asarray(enc(jnp.asarray(a)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_vid2world_recorded_settings_are_enforced():
  f, cfg = _fixture()
  configs, _, _ = _convert(f.weights(), cfg)
  info = vid2world.detect(f.weights())
  rec = vid2world.record(info, configs["unet"])
  assert rec["trained_causal"] and not rec["weight_transfer_applied"] and rec["origin"] == "vid2world_release"
  vid2world.check_model_config(rec, configs["unet"], "x")  # as trained: fine
  other = configs["unet"].copy_and_resolve_references()
  other.out_conv_padding = "symmetric"
  other.causal_init_attn = False
  with pytest.raises(ValueError, match="out_conv_padding='symmetric'.*causal_height|causal_init_attn=False"):
    vid2world.check_model_config(rec, other, "init_from ckpt")
  vid2world.check_model_config({"enabled": True}, other, "x")  # a --causal conversion is not checked here
