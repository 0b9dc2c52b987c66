"""VAE and Resampler: real-checkpoint manifests map 100% (shapes only), video helpers, input validation."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vid2world_jax.conversion import checkpoint_io, core
from vid2world_jax.models import resampler, vae
from vid2world_jax.testing import fixtures as fx

VARIANTS = ("256", "512", "1024")
MODULES = {"vae": vae, "resampler": resampler}
# param_counts keys in the manifest json for each module
COUNT_KEYS = {"vae": "first_stage_model", "resampler": "image_proj_model"}


def _manifest_path(variant):
  return os.path.join(fx.shared_dir(), "reference", "manifests", f"dynamicrafter_{variant}_state_dict.json")


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_vae_resampler_manifest(variant, name):
  """Every real ``first_stage_model.*`` / ``image_proj_model.*`` key maps onto the real-size model, shapes equal."""
  mod = MODULES[name]
  manifest = checkpoint_io.ManifestCheckpoint(_manifest_path(variant))
  sub = checkpoint_io.strip_prefix(manifest, mod.WEIGHTS_PREFIX)
  assert len(sub) > 0
  abstract = nnx.eval_shape(lambda: mod.build(mod.real_config(variant), rngs=nnx.Rngs(0)))
  shapes = core.param_shapes(nnx.state(abstract, nnx.Param))
  _, report = core.convert(sub, mod.torch_name_table(abstract), shapes, aliases=mod.TORCH_ALIASES,
                           ignore=mod.TORCH_IGNORE, shapes_only=True)
  print(f"\n[manifest {variant} {name}] {report.summary()}")
  assert report.ok, report.summary()
  assert report.mapped == len(shapes) == len(sub), (report.mapped, len(shapes), len(sub))
  assert not report.ignored
  assert all(manifest.kinds[k] == "param" for k in sub)
  n_params = sum(int(np.prod(s)) for s in shapes.values())
  with open(_manifest_path(variant)) as fh:
    counts = json.load(fh)["param_counts"]
  want = next(v for k, v in counts.items() if k.rstrip(".") == COUNT_KEYS[name])
  assert n_params == want, (n_params, want)


def test_vae_resampler_manifest_real_config_values():
  vcfg, rcfg = vae.real_config("512"), resampler.real_config("1024")
  assert (vcfg.ch, tuple(vcfg.ch_mult), vcfg.num_res_blocks, vcfg.z_channels, vcfg.embed_dim) == \
      (128, (1, 2, 4, 4), 2, 4, 4)
  assert tuple(vcfg.attn_resolutions) == () and vcfg.scale_factor == pytest.approx(0.18215)
  assert (rcfg.dim, rcfg.depth, rcfg.dim_head, rcfg.heads, rcfg.num_queries, rcfg.embedding_dim,
          rcfg.output_dim, rcfg.ff_mult, rcfg.video_length) == (1024, 4, 64, 12, 16, 1280, 1024, 4, 16)
  with pytest.raises(ValueError):
    vae.real_config("128")
  with pytest.raises(ValueError):
    resampler.real_config("2048")


def _tiny_vae_config(frames_per_chunk=0):
  cfg = vae.config_from_torch_params({
      "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 16, "in_channels": 3, "out_ch": 3,
                   "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0},
      "embed_dim": 4})
  cfg.frames_per_chunk = frames_per_chunk
  return cfg


def _tiny_vae(frames_per_chunk=0):
  model = vae.build(_tiny_vae_config(frames_per_chunk), rngs=nnx.Rngs(3))
  # Non-trivial norms so that a wrong per-frame/per-batch pooling would show up.
  rng = np.random.default_rng(7)
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  leaves = [np.asarray(l) + 0.05 * rng.standard_normal(l.shape).astype(np.float32) for l in leaves]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


@nnx.jit
def _encode_one(model, x, noise):
  """Reference: one image ``[1, H, W, 3]`` through encode_moments + sample_posterior, scaled."""
  mean, logvar = vae.encode_moments(model, x)
  return 0.18215 * vae.sample_posterior(mean, logvar, noise)


@nnx.jit
def _decode_one(model, z):
  return vae.decode(model, z / 0.18215)


def test_vae_video_helpers_per_frame_and_scale():
  model = _tiny_vae()
  b, t, h, w = 2, 3, 16, 16
  kx, kn, kz = jax.random.split(jax.random.key(0), 3)
  frames = jax.random.uniform(kx, (b, t, h, w, 3), minval=-1.0, maxval=1.0)
  noise = jax.random.normal(kn, (b, t, h // 2, w // 2, 4))
  lat = nnx.jit(vae.encode_video)(model, frames, noise)
  assert lat.shape == (b, t, h // 2, w // 2, 4)
  for i in range(b):
    for j in range(t):
      ref = _encode_one(model, frames[i, j][None], noise[i, j][None])
      np.testing.assert_allclose(np.asarray(lat[i, j]), np.asarray(ref[0]), rtol=1e-5, atol=1e-6)

  latents = jax.random.normal(kz, (b, t, h // 2, w // 2, 4))
  decode_video = nnx.jit(vae.decode_video)
  dec = decode_video(model, latents)
  assert dec.shape == (b, t, h, w, 3)
  for i in range(b):
    for j in range(t):
      ref = _decode_one(model, latents[i, j][None])
      np.testing.assert_allclose(np.asarray(dec[i, j]), np.asarray(ref[0]), rtol=1e-5, atol=1e-5)
  # The scale factor matters: decoding the unscaled latents gives something else.
  assert not np.allclose(np.asarray(decode_video(model, latents / 0.18215)), np.asarray(dec), atol=1e-3)


def test_vae_video_helpers_chunked_jit_and_rng():
  model = _tiny_vae()
  chunked = _tiny_vae(frames_per_chunk=2)
  nnx.update(chunked, nnx.state(model, nnx.Param))
  b, t, h, w = 1, 5, 16, 16
  frames = jax.random.uniform(jax.random.key(1), (b, t, h, w, 3), minval=-1.0, maxval=1.0)
  key = jax.random.key(2)
  encode_video = nnx.jit(vae.encode_video)
  full = encode_video(model, frames, key)
  part = encode_video(chunked, frames, key)
  np.testing.assert_allclose(np.asarray(part), np.asarray(full), rtol=1e-5, atol=1e-6)
  # Same key -> same latents; different key -> different sample; legacy uint32 keys accepted.
  np.testing.assert_array_equal(np.asarray(encode_video(model, frames, key)), np.asarray(full))
  assert not np.allclose(np.asarray(encode_video(model, frames, jax.random.key(9))), np.asarray(full))
  legacy = encode_video(model, frames, jax.random.PRNGKey(2))
  assert legacy.shape == full.shape and np.all(np.isfinite(np.asarray(legacy)))
  dec_full = nnx.jit(vae.decode_video)(model, full)
  dec_part = nnx.jit(vae.decode_video)(chunked, full)
  np.testing.assert_allclose(np.asarray(dec_part), np.asarray(dec_full), rtol=1e-5, atol=1e-5)


def test_vae_resampler_bad_shapes_raise():
  # Shape checks run before any computation, so an abstract (unallocated) model suffices.
  model = nnx.eval_shape(lambda: vae.build(_tiny_vae_config(), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError):
    vae.encode_moments(model, jnp.zeros((1, 16, 16, 4)))
  with pytest.raises(ValueError):
    vae.decode(model, jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError):
    vae.encode_video(model, jnp.zeros((1, 16, 16, 3)), jax.random.key(0))
  with pytest.raises(ValueError):
    vae.encode_video(model, jnp.zeros((1, 2, 16, 16, 3)), jnp.zeros((1, 2, 8, 8, 3)))
  with pytest.raises(ValueError):
    vae.decode_video(model, jnp.zeros((1, 8, 8, 4)))
  with pytest.raises(ValueError):
    vae.sample_posterior(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.zeros((1, 3)))
  cfg = resampler.config_from_torch_params({"dim": 32, "depth": 1, "dim_head": 8, "heads": 2, "num_queries": 2,
                                            "embedding_dim": 16, "output_dim": 24, "ff_mult": 2,
                                            "video_length": 3})
  rs = resampler.build(cfg, rngs=nnx.Rngs(0))
  assert rs(jnp.ones((2, 5, 16))).shape == (2, 6, 24)
  with pytest.raises(ValueError):
    rs(jnp.ones((2, 5, 17)))
  with pytest.raises(ValueError):
    resampler.config_from_torch_params({"dim": 32, "bogus": 1})


def test_resampler_batch_independence_and_token_permutation():
  """Batch rows are independent; the output is invariant to the order of the input tokens (no positions)."""
  cfg = resampler.config_from_torch_params({"dim": 32, "depth": 2, "dim_head": 8, "heads": 2, "num_queries": 2,
                                            "embedding_dim": 16, "output_dim": 24, "ff_mult": 2,
                                            "video_length": 3})
  model = resampler.build(cfg, rngs=nnx.Rngs(1))
  rs = lambda x: nnx.jit(lambda m, x: m(x))(model, x)  # noqa: E731
  x = jax.random.normal(jax.random.key(0), (3, 7, 16))
  out = rs(x)
  assert out.shape == (3, 6, 24)
  np.testing.assert_allclose(np.asarray(rs(x[1:2])), np.asarray(out[1:2]), rtol=1e-5, atol=1e-6)
  perm = np.array([3, 0, 6, 1, 5, 2, 4])
  np.testing.assert_allclose(np.asarray(rs(x[:, perm])), np.asarray(out), rtol=1e-4, atol=1e-5)
  assert not np.allclose(np.asarray(out[:, 0]), np.asarray(out[:, 2]))


@pytest.mark.parametrize("hw", [(256, 256), (320, 512), (17, 42)])
def test_vae_video_latent_shapes_real_config(hw):
  """Real-size VAE, shapes only: x8 down/up-sampling (320x512 -> 40x64), odd sizes as torch (floor per level)."""
  model = nnx.eval_shape(lambda: vae.build(vae.real_config("512"), rngs=nnx.Rngs(0)))
  h, w = hw
  frames = jax.ShapeDtypeStruct((1, 2, h, w, 3), jnp.float32)
  mean = nnx.eval_shape(lambda m, x: vae.encode_moments(m, x)[0], model,
                        jax.ShapeDtypeStruct((2, h, w, 3), jnp.float32))
  lat = nnx.eval_shape(lambda m, x: vae.encode_video(m, x, jax.random.key(0)), model, frames)
  assert lat.shape == (1, 2) + mean.shape[1:]
  if h % 8 == 0 and w % 8 == 0:
    assert lat.shape == (1, 2, h // 8, w // 8, 4)
    assert vae.latent_shape(model, hw) == (h // 8, w // 8, 4)
    dec = nnx.eval_shape(vae.decode_video, model, lat)
    assert dec.shape == (1, 2, h, w, 3)
  else:
    with pytest.raises(ValueError):
      vae.latent_shape(model, hw)
