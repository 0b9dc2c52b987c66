"""Training from precomputed latents == encoding inside the step (same seed, fp32, tight tolerance).

The latents path gives the step the frozen encoders' outputs (VAE posterior moments, CLIP image tokens of frame
0) instead of frames; its FrozenStage holds no VAE / CLIP image encoder.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests import _train_helpers  # noqa: F401  (repo on sys.path)
from configs import test_tiny
from vid2world_jax import sharding, world_model
from vid2world_jax.training import steps
from vid2world_jax.training import setup as train_setup


def _configs(arg):
  """(in-step encoding, latents) configs; the toy denoiser keeps compile time low (the encoders are real)."""
  out = []
  for source in ("synthetic", "latents"):
    cfg = test_tiny.get_config(arg)
    cfg.model.arch = "toy"
    cfg.data.batch_size = 2
    cfg.data.source = source
    out.append(cfg)
  return out


def _setups(arg):
  """Setups (graphdefs, abstract batch; nothing compiled) and eagerly built states of the same seed."""
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
  result = []
  for cfg in _configs(arg):
    setup = train_setup.Setup(cfg, mesh)
    model, frozen = world_model.build(setup.mcfg, rngs=nnx.Rngs(params=0, dropout=1), encoders=setup.encoders)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    result.append((setup, nnx.to_pure_dict(params), rest, nnx.split(frozen)[1]))
  return result


def _frames_batch(cfg, seed=0):
  r = np.random.default_rng(seed)
  b, t, a = cfg.data.batch_size, cfg.data.clip_length, cfg.data.action_dim
  h, w = cfg.data.resolution
  return {"frames": r.uniform(-1, 1, (b, t, h, w, 3)).astype(np.float32),
          "actions": r.uniform(-1, 1, (b, t, a)).astype(np.float32)}


def _latents_batch(setup, frozen, batch):
  """What data/encode_latents.py stores: VAE moments of every frame, CLIP tokens of frame 0."""
  fs = nnx.merge(setup.frozen_graphdef, frozen)
  frames = jnp.asarray(batch["frames"])
  out = {"latent_moments": jax.jit(fs.encode_moments)(frames), "actions": batch["actions"]}
  if setup.mcfg.context == "resampler":
    out["clip_image_tokens"] = jax.jit(fs.image_tokens)(frames[:, 0])
  return out


def _leaf_paths(state):
  return {sharding.path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(state))}


@pytest.mark.parametrize("arg", ["vae", None])
def test_latents_loss_and_grads_equal_in_step_encoding(arg):
  (s_frames, params_f, rest_f, frozen_f), (s_lat, params_l, rest_l, frozen_l) = _setups(arg)
  assert s_frames.encoders and not s_lat.encoders
  # The latents setup builds no frozen encoder: only the empty-prompt text context remains (resampler context).
  paths = _leaf_paths(frozen_l)
  assert not any(p.startswith(("vae", "clip_image")) for p in paths), paths
  if arg == "vae":
    assert any(p.startswith("vae/") for p in _leaf_paths(frozen_f))
    assert paths == {"text_context"}
    text = jax.random.normal(jax.random.key(7), frozen_f["text_context"].shape)  # a non-trivial constant
    frozen_f["text_context"].set_value(text)
    frozen_l["text_context"].set_value(text)
  jax.tree.map(np.testing.assert_array_equal, params_f, params_l)  # same seed, same trainable init

  batch = _frames_batch(s_frames.cfg)
  lat_batch = _latents_batch(s_frames, frozen_f, batch)
  assert set(lat_batch) == set(s_lat.abs_batch)
  for k, v in s_lat.abs_batch.items():
    assert lat_batch[k].shape == v.shape, (k, lat_batch[k].shape, v.shape)

  keys = steps.step_rngs(jax.random.key_data(jax.random.key(0)), jnp.int32(3))

  def loss_grads(setup, frozen, rest, b):
    fn = steps.make_loss_fn(setup.graphdef, setup.frozen_graphdef, setup.cfg, setup.schedule)
    return jax.jit(jax.value_and_grad(fn, has_aux=True))(params_f, frozen, rest, b, keys)

  (loss_f, aux_f), g_f = loss_grads(s_frames, frozen_f, rest_f, batch)
  (loss_l, aux_l), g_l = loss_grads(s_lat, frozen_l, rest_l, lat_batch)
  assert float(loss_f) > 0
  np.testing.assert_allclose(float(loss_l), float(loss_f), rtol=1e-5)
  np.testing.assert_allclose(aux_l["bucket_loss_sum"], aux_f["bucket_loss_sum"], rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(aux_l["bucket_count"], aux_f["bucket_count"])
  flat_f = dict(jax.tree_util.tree_leaves_with_path(g_f))
  for path, gl in jax.tree_util.tree_leaves_with_path(g_l):
    gf = flat_f[path]
    np.testing.assert_allclose(gl, gf, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(gf).max())),
                               err_msg=sharding.path_str(path))
  if arg == "vae":  # the resampler (fed by the CLIP tokens) really gets gradient
    assert float(np.abs(np.asarray(g_l["resampler"]["proj_in"]["kernel"])).max()) > 0


def test_latents_step_different_noise_key_changes_loss():
  """The latent sample really uses the step's first_stage key (a VAE posterior has non-zero variance)."""
  (s_frames, params, _, frozen_f), (s_lat, _, rest, frozen_l) = _setups("vae")
  lat_batch = _latents_batch(s_frames, frozen_f, _frames_batch(s_frames.cfg))
  fn = jax.jit(steps.make_loss_fn(s_lat.graphdef, s_lat.frozen_graphdef, s_lat.cfg, s_lat.schedule))
  keys = steps.step_rngs(jax.random.key_data(jax.random.key(0)), jnp.int32(0))
  l0, _ = fn(params, frozen_l, rest, lat_batch, keys)
  l1, _ = fn(params, frozen_l, rest, lat_batch, dict(keys, first_stage=jax.random.key(123)))
  assert abs(float(l0) - float(l1)) > 1e-7


def test_latents_frozen_stage_refuses_encoding():
  _, (s_lat, _, _, frozen) = _setups("vae")
  fs = nnx.merge(s_lat.frozen_graphdef, frozen)
  with pytest.raises(ValueError, match="without them"):
    fs.encode(jnp.zeros((1, 4, 32, 32, 3)), jax.random.key(0))
