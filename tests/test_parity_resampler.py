"""[parity] JAX Resampler vs the PyTorch reference fixtures (every ``kind == "resampler"`` folder)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vid2world_jax.conversion import core
from vid2world_jax.models import resampler
from vid2world_jax.testing import fixtures as fx

TOL = 1e-4
RESAMPLER_FIXTURES = fx.discover("resampler")


def test_resampler_parity_fixtures_exist():
  assert RESAMPLER_FIXTURES, f"no resampler fixtures under {fx.fixture_roots()}"


@pytest.mark.parametrize("path", RESAMPLER_FIXTURES, ids=lambda p: p.rstrip("/").split("/")[-1])
def test_resampler_parity(path):
  f = fx.load(path)
  assert f.kind == "resampler"
  cfg = resampler.config_from_torch_params(f.config["params"])
  model = resampler.build(cfg, rngs=nnx.Rngs(0))
  shapes = core.param_shapes(nnx.state(model, nnx.Param))
  weights = f.weights()
  params, report = core.convert(weights, resampler.torch_name_table(model), shapes,
                                aliases=resampler.TORCH_ALIASES, ignore=resampler.TORCH_IGNORE)
  assert report.ok, report.summary()
  assert report.mapped == len(shapes) == len(weights)
  core.load_into(model, params)

  out = np.asarray(model(jnp.asarray(f.io["x"])))
  n_tokens = cfg.num_queries * cfg.video_length
  assert out.shape == (f.io["x"].shape[0], n_tokens, cfg.output_dim)
  err = fx.max_rel_err(out, f.io["out"])
  print(f"\n[resampler parity {f.name}] out={err:.2e}")
  assert err <= TOL
  # Every recorded output was compared.
  assert set(f.io) - {"x"} == {"out"}, sorted(f.io)
