"""[parity] JAX AutoencoderKL vs the PyTorch reference fixtures (every ``kind == "vae"`` folder)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vid2world_jax.conversion import core
from vid2world_jax.models import vae
from vid2world_jax.testing import fixtures as fx

TOL = 1e-4
VAE_FIXTURES = fx.discover("vae")


def test_vae_parity_fixtures_exist():
  assert VAE_FIXTURES, f"no vae fixtures under {fx.fixture_roots()}"


def _load_model(f):
  cfg = vae.config_from_torch_params(f.config["params"])
  model = vae.build(cfg, rngs=nnx.Rngs(0))
  shapes = core.param_shapes(nnx.state(model, nnx.Param))
  params, report = core.convert(f.weights(), vae.torch_name_table(model), shapes,
                                aliases=vae.TORCH_ALIASES, ignore=vae.TORCH_IGNORE)
  assert report.ok, report.summary()
  assert report.mapped == len(shapes) == len(f.weights())
  core.load_into(model, params)
  return model


@pytest.mark.parametrize("path", VAE_FIXTURES, ids=lambda p: p.rstrip("/").split("/")[-1])
def test_vae_parity(path):
  f = fx.load(path)
  assert f.kind == "vae"
  io = f.io
  model = _load_model(f)
  nhwc = lambda k: fx.nchw_to_nhwc(io[k])  # noqa: E731

  x = jnp.asarray(nhwc("image"))
  encoder_out = model.encoder(x)
  moments = model.quant_conv(encoder_out)
  mean, logvar = vae.encode_moments(model, x)
  std = jnp.exp(0.5 * logvar)
  sample = vae.sample_posterior(mean, logvar, jnp.asarray(nhwc("noise")))
  ours = {
      "encoder_out": encoder_out,
      "moments": moments,
      "posterior_mean": mean,
      "posterior_logvar": logvar,
      "posterior_std": std,
      "posterior_sample": sample,
      "decoded": vae.decode(model, jnp.asarray(nhwc("z"))),
      "decoded_from_mean": vae.decode(model, mean),
  }
  errs = {k: fx.max_rel_err(np.asarray(v), nhwc(k)) for k, v in ours.items()}
  print(f"\n[vae parity {f.name}] " + ", ".join(f"{k}={e:.2e}" for k, e in errs.items()))
  bad = {k: e for k, e in errs.items() if not e <= TOL}
  assert not bad, f"max_rel_err above {TOL}: {bad}"
  # Every recorded output/intermediate (except the inputs) was compared.
  assert set(io) - {"image", "noise", "z"} <= set(ours), sorted(set(io) - set(ours))


@pytest.mark.parametrize("path", VAE_FIXTURES, ids=lambda p: p.rstrip("/").split("/")[-1])
def test_vae_parity_encode_video_matches_scaled_sample(path):
  """``encode_video`` on a 1-frame video equals ``scale_factor * posterior_sample`` of the reference."""
  f = fx.load(path)
  model = _load_model(f)
  img = fx.nchw_to_nhwc(f.io["image"])[:, None]
  noise = fx.nchw_to_nhwc(f.io["noise"])[:, None]
  lat = vae.encode_video(model, jnp.asarray(img), jnp.asarray(noise))
  ref = 0.18215 * fx.nchw_to_nhwc(f.io["posterior_sample"])[:, None]
  err = fx.max_rel_err(np.asarray(lat), ref)
  print(f"\n[vae parity encode_video {f.name}] {err:.2e}")
  assert err <= TOL
  dec = vae.decode_video(model, jnp.asarray(0.18215 * fx.nchw_to_nhwc(f.io["z"])[:, None]))
  err = fx.max_rel_err(np.asarray(dec)[:, 0], fx.nchw_to_nhwc(f.io["decoded"]))
  print(f"[vae parity decode_video {f.name}] {err:.2e}")
  assert err <= TOL
