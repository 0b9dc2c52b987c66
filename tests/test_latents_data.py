"""Precomputed latents end to end: encode an episodes dataset into ArrayRecord shards (resume skips finished
shards), read it back through the latents source, compare with encoding the pixel pipeline's batch, train."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests import _train_helpers
from configs import test_tiny
from vid2world_jax import sharding, world_model
from vid2world_jax.training import steps
from vid2world_jax.training import loop
from vid2world_jax.training import config as train_config
from vid2world_jax.training import setup as train_setup
from vid2world_jax.data import episodes, latents, latents_writer, pipeline


def _dataset(tmp_path, n=3, length=6):
  d = tmp_path / "eps"
  d.mkdir()
  r = np.random.default_rng(0)
  for i in range(n):
    episodes.write_episode(str(d / f"ep{i:02d}.npz"), r.integers(0, 256, (length, 40, 36, 3), dtype=np.uint8),
                           r.uniform(-1, 1, (length, 2)).astype(np.float32))
  return str(d)


def _cfg(path, source="episodes"):
  cfg = test_tiny.get_config("vae")
  cfg.model.arch = "toy"
  cfg.data.update(dict(source=source, path=path, batch_size=2, clip_length=4, num_threads=1,
                       prefetch_buffer_size=1))
  cfg.train.sample_every = 0
  return cfg


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("latents")
  cfg = _cfg(_dataset(tmp))
  model, fs = world_model.build(cfg.model, rngs=nnx.Rngs(params=0, dropout=1))
  fs.text_context.set_value(jax.random.normal(jax.random.key(5), fs.text_context.shape))
  graphdef, state = nnx.split(fs)
  out = str(tmp / "lat")
  stats = latents_writer.encode_dataset(cfg, out, graphdef, state, episodes_per_shard=2, batch_frames=4,
                                        progress=False)
  return cfg, out, graphdef, state, stats, model


def test_latents_encode_writes_shards_and_resumes(encoded):
  cfg, out, graphdef, state, stats, _ = encoded
  assert stats == {"episodes": 3, "frames": 18, "shards_written": 2, "shards_skipped": 0}
  meta = latents.read_meta(out)
  assert meta["latent_shape"] == [4, 4, 8] and meta["token_shape"] == [5, 32] and meta["num_shards"] == 2
  assert sorted(latents.finished_shards(out)) == [0, 1]
  # Resume: an unfinished shard (no .json) is rewritten, the finished one skipped.
  os.remove(os.path.join(out, latents.shard_name(1, 2) + ".json"))
  again = latents_writer.encode_dataset(cfg, out, graphdef, state, episodes_per_shard=2, batch_frames=4,
                                        progress=False)
  assert again == {"episodes": 1, "frames": 6, "shards_written": 1, "shards_skipped": 1}
  # Other settings into the same directory: refused in one line.
  with pytest.raises(ValueError, match="other settings"):
    latents_writer.encode_dataset(cfg, out, graphdef, state, episodes_per_shard=3, progress=False)


def test_latents_source_batch_equals_encoding_pixel_batch(encoded):
  cfg, out, graphdef, state, _, _ = encoded
  pix = next(pipeline.make_train_iterator(cfg.data, process_index=0, process_count=1))
  lcfg = _cfg(out, "latents")
  lat = next(pipeline.make_train_iterator(lcfg.data, process_index=0, process_count=1))
  # Same seed -> same episodes and windows as the pixel pipeline.
  np.testing.assert_array_equal(lat["episode_id"], pix["episode_id"])
  np.testing.assert_array_equal(lat["actions"], pix["actions"])
  fs = nnx.merge(graphdef, state)
  frames = jnp.asarray(pix["frames"])
  want_m = jax.jit(fs.encode_moments)(frames)
  want_t = jax.jit(fs.image_tokens)(frames[:, 0])
  assert lat["latent_moments"].shape == want_m.shape and lat["clip_image_tokens"].shape == want_t.shape
  np.testing.assert_allclose(lat["latent_moments"], want_m, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(lat["clip_image_tokens"], want_t, rtol=1e-5, atol=1e-5)

  # The loss from the stored latents == the loss encoding the pixel batch inside the step (same key).
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
  s_pix, s_lat = train_setup.Setup(cfg, mesh), train_setup.Setup(lcfg, mesh)
  model = encoded[5]
  _, params, rest = nnx.split(model, nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  _, lat_frozen = nnx.split(world_model.FrozenStage(lcfg.model, rngs=nnx.Rngs(0), encoders=False))
  lat_frozen["text_context"].set_value(state["text_context"][...])
  keys = steps.step_rngs(jax.random.key_data(jax.random.key(1)), jnp.int32(0))
  lf = steps.make_loss_fn(s_pix.graphdef, s_pix.frozen_graphdef, cfg, s_pix.schedule)
  ll = steps.make_loss_fn(s_lat.graphdef, s_lat.frozen_graphdef, lcfg, s_lat.schedule)
  loss_pix, _ = jax.jit(lf)(params, state, rest, {"frames": frames, "actions": pix["actions"]}, keys)
  loss_lat, _ = jax.jit(ll)(params, lat_frozen, rest, {k: lat[k] for k in s_lat.abs_batch}, keys)
  np.testing.assert_allclose(float(loss_lat), float(loss_pix), rtol=1e-5)


def test_latents_train_from_shards(encoded, tmp_path):
  """``data.source=latents`` trains (2 steps, finite losses) with no VAE / CLIP in the step."""
  _, out, _, _, _, _ = encoded
  cfg = _cfg(out, "latents")
  cfg.total_steps = 2
  cfg.data.batch_size = 8   # the 8 fake devices of tests/conftest.py
  res = loop.train_and_evaluate(cfg, str(tmp_path / "wd"))
  assert res["last_step"] == 2 and all(np.isfinite(v) for v in res["losses"].values())


def test_latents_config_errors(encoded):
  _, out, _, _, _, _ = encoded
  cfg = _cfg(out, "latents")
  cfg.data.augment = True
  with pytest.raises(train_config.ConfigError, match="augment"):
    train_config.validate_config(cfg, 1, 1)
  cfg = _cfg(out, "latents")
  cfg.data.resolution = (64, 64)
  with pytest.raises(train_config.ConfigError, match="do not match"):
    train_config.validate_config(cfg, 1, 1)
  cfg = _cfg(str(out) + "_missing", "latents")
  with pytest.raises(train_config.ConfigError, match="encode_latents"):
    train_config.validate_config(cfg, 1, 1)


def test_latents_encode_cli_needs_weights(tmp_path):
  """Without init_from (and without --allow_random_encoders) the command fails in one line."""
  r = subprocess.run([sys.executable, "-m", "vid2world_jax.data.encode_latents", "--config=configs/test_tiny.py:vae",
                      f"--out={tmp_path / 'x'}"], cwd=_train_helpers.REPO, capture_output=True, text=True,
                     timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode != 0
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "init_from" in lines[0], r.stderr
