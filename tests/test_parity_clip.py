"""Parity of the OpenCLIP text / image encoders (and kornia-exact preprocessing) with the PyTorch fixtures,
and 100% key coverage of the real DynamiCrafter manifests (``cond_stage_model.*``, ``embedder.*``).

Keywords: ``parity`` (fixtures, kornia), ``manifest`` (real key lists), ``clip`` (all).
"""

import fnmatch
import functools
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from vid2world_jax.conversion import checkpoint_io, core
from vid2world_jax.models import clip_common, clip_image, clip_text, image_preprocess
from vid2world_jax.testing import fixtures as fx

TOL = 1e-4
TEXT_FIXTURES = fx.discover("clip_text")
IMAGE_FIXTURES = fx.discover("clip_image")


def _ids(paths):
  return [os.path.basename(p) for p in paths]


def _convert(mod, fixture):
  cfg = mod.config_from_torch_params(fixture.config)
  model = _abstract(mod, cfg)  # every parameter is overwritten by load_into below
  ckpt = fixture.weights()
  shapes = core.param_shapes(nnx.state(model, nnx.Param))
  params, report = core.convert(ckpt, mod.torch_name_table(model), shapes, aliases=mod.TORCH_ALIASES,
                                ignore=mod.TORCH_IGNORE)
  assert report.ok, report.summary()
  assert report.mapped == report.total_flax == len(shapes)
  # Exactly the keys matched by the documented ignore patterns were skipped, nothing else.
  want_ignored = sorted(k for k in ckpt if any(fnmatch.fnmatchcase(k, p) for p in mod.TORCH_IGNORE))
  assert sorted(report.ignored) == want_ignored and want_ignored
  core.load_into(model, params)
  return cfg, model, ckpt


def _abstract(mod, cfg):
  """Shape-only model (eager random init costs seconds of per-op compiles on CPU); fill with load_into."""
  return nnx.eval_shape(lambda: mod.build(cfg, rngs=nnx.Rngs(0)))


@nnx.jit(static_argnames=("layer",))
def _text_forward(model, tokens, layer=None):
  return model(tokens, layer=layer, return_intermediates=True)


@nnx.jit
def _image_forward(model, image):
  return model(image, return_intermediates=True)


def _check(name, ours, ref, errors):
  err = fx.max_rel_err(np.asarray(ours), ref)
  errors[name] = err
  print(f"  {name:32s} max_rel_err {err:.3e}")


def test_parity_clip_fixtures_present():
  assert TEXT_FIXTURES, "no clip_text fixture found (set V2W_FIXTURES / V2W_SHARED)"
  assert IMAGE_FIXTURES, "no clip_image fixture found (set V2W_FIXTURES / V2W_SHARED)"


@pytest.mark.parametrize("path", TEXT_FIXTURES, ids=_ids(TEXT_FIXTURES))
def test_parity_clip_text(path):
  f = fx.load(path)
  assert f.kind == "clip_text"
  cfg, model, _ = _convert(clip_text, f)
  tokens = jnp.asarray(f.io["tokens"].astype(np.int32))
  errors = {}
  print(f"\n{f.name}:")
  out, inter = _text_forward(model, tokens)
  _check("out", out, f.io["out"], errors)
  inter_keys = [k for k in f.io if k.startswith("inter/")]
  assert inter_keys
  for k in inter_keys:
    _check(k, inter[k[len("inter/"):]], f.io[k], errors)
  for layer in clip_text.LAYERS:
    if f"out_layer_{layer}" in f.io:
      _check(f"out_layer_{layer}", _text_forward(model, tokens, layer=layer)[0], f.io[f"out_layer_{layer}"], errors)
  assert "out_layer_last" in errors
  if "attn_mask" in f.io:  # our causal mask equals the stored one (-inf above the diagonal)
    np.testing.assert_array_equal(np.asarray(clip_common.causal_mask(cfg.context_length)), f.io["attn_mask"])
  bad = {k: v for k, v in errors.items() if not v <= TOL}
  assert not bad, f"parity errors above {TOL}: {bad}"
  # "penultimate" and "last" really differ (an off-by-one in the block count would show up above).
  assert fx.max_rel_err(f.io["out_layer_last"], f.io["out"]) > 1e-3


def _layer_norm(x, w, b, eps=1e-5):
  x = x.astype(np.float64)
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


@pytest.mark.parametrize("path", IMAGE_FIXTURES, ids=_ids(IMAGE_FIXTURES))
def test_parity_clip_image(path):
  f = fx.load(path)
  assert f.kind == "clip_image"
  _, model, ckpt = _convert(clip_image, f)
  image = jnp.asarray(fx.nchw_to_nhwc(f.io["image"]))
  errors = {}
  print(f"\n{f.name}:")
  out, inter = _image_forward(model, image)
  _check("out", out, f.io["out"], errors)
  _check("preprocessed", inter["preprocessed"], fx.nchw_to_nhwc(f.io["preprocessed"]), errors)
  inter_keys = [k for k in f.io if k.startswith("inter/")]
  for k in ("inter/resized", "inter/conv1/out", "inter/ln_pre/out"):
    assert k in inter_keys, k
  for k in inter_keys:
    ref = f.io[k]
    if ref.ndim == 4:  # NCHW images / conv maps -> channels-last
      ref = fx.nchw_to_nhwc(ref)
    _check(k, inter[k[len("inter/"):]], ref, errors)
  bad = {k: v for k, v in errors.items() if not v <= TOL}
  assert not bad, f"parity errors above {TOL}: {bad}"
  # Our output is the token sequence *before* ln_post/proj: applying the (ignored) head to the class token
  # reproduces open_clip's standard pooled embedding, which DynamiCrafter does not use.
  if "ref/visual_forward_unused" in f.io:
    p = "embedder.model.visual."
    pooled = _layer_norm(np.asarray(out)[:, 0], ckpt[p + "ln_post.weight"], ckpt[p + "ln_post.bias"])
    pooled = pooled @ ckpt[p + "proj"].astype(np.float64)
    err = fx.max_rel_err(pooled, f.io["ref/visual_forward_unused"])
    print(f"  {'ref/visual_forward_unused':32s} max_rel_err {err:.3e}")
    assert err <= TOL


@pytest.mark.parametrize("hw", [(320, 512), (576, 1024), (256, 256), (100, 150), (224, 300), (224, 224),
                                (900, 230)])
def test_parity_clip_preprocess_kornia(hw):
  """Our resize vs the real kornia 0.9.0 at real frame sizes (blur kernels 3 and 7, up/down mixes)."""
  import kornia  # requirements-dev.txt (reference only)
  import torch
  rng = np.random.default_rng(hw[0] * 7 + hw[1])
  x = rng.uniform(-1, 1, (2, 3) + hw).astype(np.float32)
  ref = kornia.geometry.resize(torch.from_numpy(x), (224, 224), interpolation="bicubic", align_corners=True,
                               antialias=True).numpy()
  ours = np.asarray(image_preprocess.kornia_resize(jnp.asarray(fx.nchw_to_nhwc(x)), (224, 224)))
  err = fx.max_rel_err(ours, fx.nchw_to_nhwc(ref))
  print(f"{hw}: sigma/ks {image_preprocess.antialias_params(hw[0], 224)} "
        f"{image_preprocess.antialias_params(hw[1], 224)} max_rel_err {err:.3e}")
  assert err <= 1e-5


def test_clip_preprocess_rejects_bad_shapes():
  with pytest.raises(ValueError):
    image_preprocess.preprocess(jnp.zeros((1, 3, 32, 32)))  # NCHW instead of NHWC
  with pytest.raises(ValueError):
    image_preprocess.kornia_resize(jnp.zeros((32, 32, 3)))


def test_clip_text_rejects_bad_tokens():
  cfg = clip_text.config_from_torch_params(
      {"open_clip_model_cfg": {"text_cfg": {"context_length": 77, "vocab_size": 50, "width": 16, "heads": 2,
                                            "layers": 2}}})
  model = _abstract(clip_text, cfg)  # the checks run before any parameter is read
  with pytest.raises(ValueError):
    model(jnp.zeros((2, 76), jnp.int32))
  with pytest.raises(ValueError):
    model(jnp.zeros((2, 77), jnp.float32))
  with pytest.raises(ValueError):
    model(jnp.zeros((2, 77), jnp.int32), layer="first")
  out = nnx.eval_shape(lambda m, t: m(t), model, jnp.zeros((2, 77), jnp.int32))
  assert out.shape == (2, 77, 16) and out.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------- manifests

MANIFEST_DIR = os.path.join(fx.shared_dir(), "reference", "manifests")


@functools.lru_cache(maxsize=None)
def _real_abstract(mod_name, cfg_json):
  """Shape-only full-size model, shared by the variants whose real_config is identical (tracing ViT-H takes
  seconds on the shared CPU)."""
  mod = {m.__name__: m for m in (clip_text, clip_image)}[mod_name]
  cfg = ml_collections.ConfigDict(json.loads(cfg_json))
  return _abstract(mod, cfg)


@pytest.mark.parametrize("variant", ["256", "512", "1024"])
@pytest.mark.parametrize("mod", [clip_text, clip_image], ids=["clip_text", "clip_image"])
def test_manifest_clip_real_keys(mod, variant):
  path = os.path.join(MANIFEST_DIR, f"dynamicrafter_{variant}_state_dict.json")
  manifest = checkpoint_io.ManifestCheckpoint(path)
  sub = checkpoint_io.strip_prefix(manifest, mod.WEIGHTS_PREFIX)
  assert len(sub) > 0
  cfg = mod.real_config(variant)
  abstract = _real_abstract(mod.__name__, cfg.to_json())
  shapes = core.param_shapes(nnx.state(abstract, nnx.Param))
  table = mod.torch_name_table(abstract)
  _, report = core.convert(sub, table, shapes, aliases=mod.TORCH_ALIASES, ignore=mod.TORCH_IGNORE,
                           shapes_only=True)
  print(f"{mod.__name__} @ {variant}: {report.summary()}")
  assert report.ok, report.summary()
  assert report.mapped == report.total_flax == len(shapes)
  mapped_keys = {e.torch_key for e in table}
  assert mapped_keys | set(report.ignored) == set(sub)
  # Every ignore pattern is in use (no stale rules) and matches only keys we do not map.
  for pat in mod.TORCH_IGNORE:
    hits = [k for k in sub if fnmatch.fnmatchcase(k, pat)]
    assert hits, f"ignore pattern {pat!r} matches no {variant} manifest key"
    assert not set(hits) & mapped_keys
  # Parameter count: everything but the ignored keys.
  n_model = sum(int(np.prod(s)) for s in shapes.values())
  n_ckpt = sum(int(np.prod(sub[k])) for k in sub if k not in set(report.ignored))
  assert n_model == n_ckpt


def test_manifest_clip_real_config_matches_fixture_record():
  """``real_config`` equals the ViT-H-14 config the fixture generator recorded (``open_clip_model_cfg_real``)."""
  assert TEXT_FIXTURES and IMAGE_FIXTURES
  for mod, path, keys in [(clip_text, TEXT_FIXTURES[0], ("width", "heads", "layers", "vocab_size", "context_length")),
                          (clip_image, IMAGE_FIXTURES[0], ("width", "heads", "layers", "patch_size", "image_size"))]:
    rec = mod.config_from_torch_params(fx.load(path).config["open_clip_model_cfg_real"])
    real = mod.real_config("256")
    for k in keys:
      assert rec[k] == real[k], (mod.__name__, k, rec[k], real[k])


def test_manifest_clip_real_forward_shapes():
  """Full-size ViT-H/14 towers trace end to end: 77x1024 text tokens, 257x1280 image tokens from a
  320x512 frame (shape-only, no memory)."""
  text = _real_abstract(clip_text.__name__, clip_text.real_config("256").to_json())
  out = nnx.eval_shape(lambda m, t: m(t), text, jnp.zeros((2, 77), jnp.int32))
  assert out.shape == (2, 77, 1024) and out.dtype == jnp.float32
  image = _real_abstract(clip_image.__name__, clip_image.real_config("512").to_json())
  out = nnx.eval_shape(lambda m, x: m(x), image, jnp.zeros((2, 320, 512, 3), jnp.float32))
  assert out.shape == (2, 257, 1280) and out.dtype == jnp.float32


def test_clip_graphdef_is_jit_static():
  """Both encoders split into a hashable graphdef, so ``jax.jit(lambda state, x: nnx.merge(g, state)(x))``
  works (a mutable ConfigDict attribute would break this)."""
  for mod, cfg in [(clip_text, clip_text.real_config("256")), (clip_image, clip_image.real_config("256"))]:
    graphdef, _ = nnx.split(_real_abstract(mod.__name__, cfg.to_json()))
    assert isinstance(hash(graphdef), int)
