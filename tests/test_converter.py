"""convert_torch_weights: whole-checkpoint coverage on the real manifests, strict errors, aliases, causal mode."""

import os
import subprocess
import sys

import numpy as np
import pytest

from vid2world_jax.conversion import checkpoint_io, core
from vid2world_jax.conversion import dynamicrafter as dc
from vid2world_jax.testing import fixtures as fx

REPO = fx.REPO_ROOT
MANIFEST_DIR = os.path.join(fx.shared_dir(), "reference", "manifests")
VARIANTS = ["256", "512", "1024"]


def _manifest(variant):
  return os.path.join(MANIFEST_DIR, f"dynamicrafter_{variant}_state_dict.json")


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifest_full_checkpoint_maps_100_percent(variant):
  ckpt = checkpoint_io.open_checkpoint(_manifest(variant))
  configs, _, reports = dc.convert_checkpoint(ckpt, variant, shapes_only=True)
  assert set(reports) == set(dc.COMPONENTS)
  for name, rep in reports.items():
    assert rep.ok, rep.summary()
    assert rep.mapped == rep.total_flax > 0, (name, rep.summary())
  # every checkpoint key is mapped, a schedule buffer, or a documented ignore
  mapped_or_ignored = sum(r.mapped + len(r.ignored) for r in reports.values())
  buffers = sum(1 for k in ckpt if k in dc.SCHEDULE_BUFFERS)
  assert mapped_or_ignored + buffers == len(ckpt)
  # parameter counts of the mapped Flax models equal the manifest's (ignored keys excluded)
  for name, rep in reports.items():
    mod = dc.component_module(name)
    _, shapes = dc.abstract_component(name, configs[name])
    n_flax = sum(int(np.prod(s)) for s in shapes.values())
    n_ckpt = sum(int(np.prod(ckpt[k])) for k in ckpt if k.startswith(mod.WEIGHTS_PREFIX)
                 and k not in rep.ignored)
    assert n_flax == n_ckpt, (name, n_flax, n_ckpt)


def test_manifest_cli_reports_full_coverage():
  out = subprocess.run([sys.executable, os.path.join(REPO, "convert_torch_weights.py"), "--manifest",
                        os.path.join(MANIFEST_DIR, "dynamicrafter_256_state_dict.tsv")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "(100.00%)" in out.stdout, out.stdout


# ---- fixture-based converter checks (tiny UNet) ----------------------------------------------------------

def _unet_fixture():
  """The first DynamiCrafter (not Vid2World) UNet fixture."""
  paths = [p for p in fx.discover("unet") if "vid2world" not in fx.load(p).config.get("target", "")]
  assert paths, "no DynamiCrafter unet fixture found"
  f = fx.load(paths[0])
  from vid2world_jax.models import unet
  return f, unet.config_from_torch_params(f.config["params"])


def _convert_unet(ckpt, cfg, **kw):
  return dc.convert_checkpoint(ckpt, "256", components=["unet"], component_configs={"unet": cfg}, **kw)


def test_converter_ckpt_and_safetensors_agree(tmp_path):
  torch = pytest.importorskip("torch")  # installed in CI (requirements-dev); needed for .ckpt only
  f, cfg = _unet_fixture()
  w = f.weights()
  path = tmp_path / "model.ckpt"
  torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in w.items()}, "global_step": 3}, path)
  _, p_ckpt, rep = _convert_unet(checkpoint_io.open_checkpoint(str(path)), cfg)
  _, p_st, _ = _convert_unet(checkpoint_io.open_checkpoint(f.weights_path), cfg)
  assert rep["unet"].ok
  assert p_ckpt["unet"].keys() == p_st["unet"].keys()
  for k in p_st["unet"]:
    np.testing.assert_array_equal(p_ckpt["unet"][k], p_st["unet"][k])


def test_converter_errors_name_missing_unexpected_and_misshaped_keys():
  f, cfg = _unet_fixture()
  w = dict(f.weights())
  victim = sorted(k for k in w if k.endswith("in_layers.2.weight"))[0]
  bad = dict(w)
  del bad[victim]
  bad["model.diffusion_model.not_a_layer.weight"] = np.zeros(3, np.float32)
  conv = sorted(k for k in w if k.endswith("out_layers.3.weight"))[0]
  bad[conv] = np.zeros(w[conv].shape[::-1], np.float32)
  with pytest.raises(core.ConversionError) as e:
    _convert_unet(bad, cfg)
  msg = str(e.value)
  assert victim in msg and "not_a_layer" in msg and conv in msg
  # an explicitly allowed unused key is accepted
  ok = dict(w)
  ok["model.diffusion_model.extra_buffer"] = np.zeros(3, np.float32)
  with pytest.raises(core.ConversionError):
    _convert_unet(ok, cfg)
  _, _, rep = _convert_unet(ok, cfg, extra_ignore=["*extra_buffer"])
  assert rep["unet"].ok and rep["unet"].ignored == ["model.diffusion_model.extra_buffer"]


def test_converter_accepts_framestride_embed_name():
  f, cfg = _unet_fixture()
  w = f.weights()
  renamed = {k.replace("fps_embedding", "framestride_embed"): v for k, v in w.items()}
  assert renamed.keys() != w.keys()
  _, a, _ = _convert_unet(w, cfg)
  _, b, _ = _convert_unet(renamed, cfg)
  for k in a["unet"]:
    np.testing.assert_array_equal(a["unet"][k], b["unet"][k])


def _temporal_conv_keys(w):
  return sorted(k for k in w if ".temopral_conv." in k and k.endswith(".weight") and w[k].ndim == 5)


@pytest.mark.parametrize("mode", ["shift", "mask", "mixed"])
def test_transfer_converter_causal_mode_writes_expected_kernels(mode):
  f, cfg = _unet_fixture()
  w = f.weights()
  keys = _temporal_conv_keys(w)
  assert keys
  configs, params, _ = _convert_unet(w, cfg, causal=dc.CausalOptions(enabled=True, temporal_conv_transfer=mode))
  ucfg = configs["unet"]
  assert ucfg.temporal_conv_padding == "causal" and ucfg.causal_temporal_attention and ucfg.causal_init_attn
  for key in keys:
    path = tuple(int(p) if p.isdigit() else p for p in key[len("model.diffusion_model."):].split("."))
    path = path[:-1] + ("kernel",)
    wt = w[key][:, :, :, 0, 0]  # [O, I, 3]: taps on x_{t-1}, x_t, x_{t+1}
    wm, w0, wp = (wt[:, :, i].T for i in range(3))  # -> [I, O]
    zero = np.zeros_like(w0)
    expected = {"shift": [wm, w0, wp], "mask": [zero, wm, w0], "mixed": [zero, wm - wp, w0 + 2 * wp]}[mode]
    got = params["unet"][path]
    assert got.shape == (3, 1, 1) + w0.shape
    for tap in range(3):
      np.testing.assert_allclose(got[tap, 0, 0], expected[tap], rtol=0, atol=1e-6, err_msg=f"{key} tap {tap}")
  # biases and non-temporal weights are untouched
  _, plain, _ = _convert_unet(w, cfg)
  for path, v in plain["unet"].items():
    if not dc.is_temporal_conv_kernel(path):
      np.testing.assert_array_equal(params["unet"][path], v)


def test_converter_refuses_half_renamed_vid2world_keys():
  """`.conv3d.` temporal convs without `out.2.conv2d.` cannot come from the original code: a clear error."""
  f, cfg = _unet_fixture()
  w = f.weights()
  keys = set(_temporal_conv_keys(w))
  renamed = {}
  for k, v in w.items():
    if k in keys or (k.endswith(".bias") and k.replace(".bias", ".weight") in keys):
      k = k.rsplit(".", 1)[0] + ".conv3d." + k.rsplit(".", 1)[1]
    renamed[k] = v
  with pytest.raises(core.ConversionError, match="inconsistent Vid2World checkpoint"):
    _convert_unet(renamed, cfg)


def test_converter_checks_schedule_buffers_against_variant():
  from vid2world_jax.diffusion import schedules
  f, cfg = _unet_fixture()
  w = dict(f.weights())
  buf256 = schedules.torch_buffers(schedules.schedule_for_variant("256"))
  w["betas"] = np.asarray(buf256["betas"], np.float32)
  _convert_unet(w, cfg)  # matching schedule: accepted
  w["betas"] = np.asarray(schedules.torch_buffers(schedules.schedule_for_variant("512"))["betas"], np.float32)
  with pytest.raises(core.ConversionError, match="betas"):
    _convert_unet(w, cfg)


def test_converter_cli_writes_orbax_and_config(tmp_path):
  f, cfg = _unet_fixture()
  configs, params, _ = _convert_unet(f.weights(), cfg)
  dc.save_converted(str(tmp_path / "out"), "256", configs, params)
  meta, tree = dc.load_converted(str(tmp_path / "out"))
  assert meta["variant"] == "256" and "unet" in meta["components"]
  flat = dc.nested_to_flat(tree["unet"])
  assert flat.keys() == params["unet"].keys()
  for k, v in params["unet"].items():
    np.testing.assert_array_equal(flat[k], v)


def test_converter_missing_file_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    checkpoint_io.open_checkpoint(str(tmp_path / "nope.ckpt"))
  bad = tmp_path / "corrupt.safetensors"
  bad.write_bytes(b"\x00\x01garbage")
  with pytest.raises(ValueError, match="cannot read"):
    checkpoint_io.open_checkpoint(str(bad))


def test_converter_torch_is_not_imported_by_the_core_packages():
  code = ("import sys, vid2world_jax, vid2world_jax.train, vid2world_jax.inference.sampler, vid2world_jax.world_model\n"
          "import vid2world_jax.conversion.dynamicrafter, vid2world_jax.conversion.checkpoint_io\n"
          "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines()[-1] == "[]"


def test_converter_missing_torch_for_ckpt_is_a_clear_error(tmp_path, monkeypatch):
  ckpt = tmp_path / "model_256.ckpt"
  ckpt.write_bytes(b"not read: torch is missing")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
  with pytest.raises(ImportError, match="needs PyTorch"):
    checkpoint_io.open_checkpoint(str(ckpt))
  # the CLI prints one line (no traceback) and exits 1
  code = ("import runpy, sys; sys.modules['torch'] = None; "
          f"sys.argv = ['convert_torch_weights.py', '--checkpoint', {str(ckpt)!r}, '--out', {str(tmp_path / 'o')!r}]; "
          "runpy.run_path('convert_torch_weights.py', run_name='__main__')")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, (out.stdout, out.stderr)
  assert "needs PyTorch" in out.stderr and "Traceback" not in out.stderr, out.stderr
