"""Cached fast path of the rollout (issue 6 item 4): cached == uncached rollout, one cached step == the full-window
forward, refusal of non-causal models.

Tiny, fully randomised (every parameter re-drawn, also zero-inits / norm scales) causal UNets in float32 with
``highest`` matmul precision (conftest). Tolerance: max abs diff <= 1e-5."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import _rollout_helpers as h
from vid2world_jax.inference import sampler as rl
from vid2world_jax.inference import rollout_model
from vid2world_jax.models import unet as U
from vid2world_jax.models import frame_cache as FC

TOL = 1e-5
A, CTX_D, HW = 3, 16, 4
# Fast-compiling jit for the UNet-level tests (runtime is negligible; XLA passes dominate on 2 cores).
_FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def random_build(ctor, seed: int):
  """``ctor()`` (a module or a tuple of modules) with every parameter drawn at random (zero-inits and norm
  scales included, so every path influences the output). Built abstractly (``nnx.eval_shape``) and filled from
  numpy: eager initialisation of every parameter is slow on the shared CPU."""
  abstract = nnx.eval_shape(ctor)
  g, params, rest = nnx.split(abstract, nnx.Param, ...)
  r = np.random.default_rng(seed)

  def draw(path, v):
    n = r.standard_normal(v.shape).astype(np.float32)
    if v.ndim >= 2:
      return jnp.asarray(n / np.sqrt(np.prod(v.shape[:-1])))
    base = 1.0 if str(path[-1]).strip(".[]'\"") == "scale" else 0.0  # norm scales around 1, biases around 0
    return jnp.asarray(base + 0.1 * n)

  key = jax.random.key(0)
  params = jax.tree.map_with_path(draw, params)
  rest = jax.tree.map(lambda v: key if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key)
                      else jnp.zeros(v.shape, v.dtype), rest)
  return nnx.merge(g, params, rest)


# ------------------------------------------------------------------------------------------------------------
# UNet level: fill(history) + step(new frame) == full-window forward.

def unet_config(norm: str, causal: bool = True):
  """Everything cross-frame on: temporal convs, block temporal attention, init_attn, per-frame image tokens,
  fs and action conditioning; two levels (down/upsampling) with attention at both resolutions."""
  c = U.default_config()
  c.update(dict(in_channels=8, out_channels=4, model_channels=32, channel_mult=[1, 2], num_res_blocks=1,
                attention_resolutions=[1, 2], num_head_channels=16, context_dim=CTX_D, use_linear=True,
                temporal_conv=True, temporal_attention=True, use_relative_position=False, temporal_length=16,
                addition_attention=True, image_cross_attention=True, image_cross_attention_scale_learnable=True,
                fs_condition=True, default_fs=3, action_dim=A, action_encoder="mlp"))
  c.causal_temporal_attention = causal
  c.causal_init_attn = causal
  c.temporal_conv_padding = "causal" if causal else "symmetric"
  c.temporal_norm = norm
  return c


@functools.lru_cache(maxsize=None)
def unet_model(norm: str):
  m = random_build(lambda: U.build(unet_config(norm), rngs=nnx.Rngs(0)), 1)
  m.eval()
  return m


def unet_inputs(seed: int, b: int, t: int):
  r = np.random.default_rng(seed)
  return dict(
      x=r.standard_normal((b, t, HW, HW, 8)).astype(np.float32),
      t=r.integers(0, 1000, (b, t)),
      context=r.standard_normal((b, 77 + 16 * t, CTX_D)).astype(np.float32),  # per-frame image tokens
      fs=np.array([3, 10][:b]),
      actions=r.standard_normal((b, t, A)).astype(np.float32),
      mask=(r.random((b, t)) > 0.4).astype(np.float32))


@pytest.mark.parametrize("norm", ["per_frame", "cumulative"])
def test_cache_step_equals_full_window_forward(norm):
  """For every new-frame position p of a 5-frame window: fill on the 4-slot history buffer (slots >= p hold other
  frames, which must be ignored) + one step on frame p == the full forward's frame p; fill's outputs at the
  history frames == the full forward's."""
  w = 5
  model = unet_model(norm)
  g, st = nnx.split(model)
  inp = unet_inputs(0, 2, w)
  args = (inp["x"], inp["t"], inp["context"], inp["fs"], inp["actions"], inp["mask"])
  full = np.asarray(jax.jit(lambda s, *a: nnx.merge(g, s)(*a), compiler_options=_FAST)(st, *args))

  def cached(s, x, t, c, fs, a, mk, p):
    m = nnx.merge(g, s)
    cache = FC.FrameCache.for_fill(p, w)
    hist = m(x[:, :w - 1], t[:, :w - 1], c, fs, a[:, :w - 1], mk[:, :w - 1], cache=cache)
    at = lambda z: jax.lax.dynamic_slice_in_dim(z, p, 1, axis=1)
    return hist, m(at(x), at(t), c, fs, at(a), at(mk), cache=FC.FrameCache.for_step(cache.entries, p, w))

  fn = jax.jit(cached, compiler_options=_FAST)
  for p in range(w):
    hist, new = fn(st, *args, p)
    assert new.shape == (2, 1, HW, HW, 4)
    np.testing.assert_allclose(np.asarray(new[:, 0]), full[:, p], rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(hist[:, :p]), full[:, :p], rtol=0, atol=TOL)
  assert np.abs(full[:, -1] - full[:, -2]).max() > 1e-2  # frames differ: the comparison is not trivial


def test_cache_refuses_noncausal_unet():
  m = U.build(unet_config("joint", causal=False), rngs=nnx.Rngs(0))
  reasons = FC.noncausal_reasons(m)
  assert any("padding" in r for r in reasons) and any("not causal" in r for r in reasons)
  assert any("joint" in r for r in reasons)
  inp = unet_inputs(0, 1, 3)
  with pytest.raises(ValueError, match="strictly causal"):
    m(inp["x"], inp["t"], inp["context"], inp["fs"], inp["actions"], inp["mask"],
      cache=FC.FrameCache.for_fill(2, 4))
  causal = unet_model("per_frame")
  assert FC.noncausal_reasons(causal) == []
  with pytest.raises(ValueError, match="1 frame"):
    causal(inp["x"], inp["t"], inp["context"], inp["fs"], inp["actions"], inp["mask"],
           cache=FC.FrameCache.for_step({}, 2, 4))


def test_frame_cache_scopes_and_misuse():
  """Scoped keys are shared by one entries dict; a step never writes; a missing entry is a clear KeyError; a cache
  reaches only causal self-attention over frames (cross-attention with a cache is refused)."""
  from vid2world_jax.models.attention import CrossAttention
  fill = FC.FrameCache.for_fill(2, 4)
  fill.scope("a").scope("b").write("k", 1)
  assert fill.entries == {"a.b.k": 1} and FC.child(None, "a") is None
  step = FC.FrameCache.for_step(fill.entries, 2, 4)
  assert step.scope("a").scope("b").read("k") == 1
  np.testing.assert_array_equal(np.asarray(step.valid_history(4)), [True, True, False, False])
  with pytest.raises(ValueError, match="step mode"):
    step.write("k", 2)
  with pytest.raises(KeyError, match="no entry 'a.missing'"):
    step.scope("a").read("missing")
  attn = CrossAttention(8, 8, 2, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="self-attention over frames only"):
    attn(jnp.ones((1, 3, 8)), jnp.ones((1, 5, 8)), cache=FC.FrameCache.for_fill(1, 4))


# ------------------------------------------------------------------------------------------------------------
# Rollout level: cached == uncached (growing window, sliding window, guidance, both causal norms).

WINDOW = 4


@functools.lru_cache(maxsize=None)
def world_models(norm: str):
  """(uncached RolloutModel, cached RolloutModel, params) of one randomised tiny causal world model (one level,
  so the nested-scan rollouts compile quickly)."""
  from vid2world_jax import world_model
  c = h.tiny_model_config("unet", window=WINDOW)
  c.model.unet.channel_mult = [1]
  c.model.unet.attention_resolutions = [1]
  c.model.unet.temporal_norm = norm
  wm, fs = random_build(lambda: world_model.build(c.model, rngs=nnx.Rngs(0)), 2)
  g, s = nnx.split(wm)
  fg, fsd = nnx.split(fs)
  plain = rollout_model.world_model_rollout_model(c.model, g, fg)
  cached = rollout_model.world_model_rollout_model(c.model, g, fg, cached=True)
  assert isinstance(cached.denoiser, rollout_model.CachedDenoiser) and isinstance(plain.denoiser, rollout_model.FnDenoiser)
  return plain, cached, (s, fsd)


def fast_rollout(model, cfg, params, ctx, acts, keys, horizon):
  """What ``rl.rollout`` runs (``_rollout_impl``: scan over frames, scan over DDIM steps), jitted with the fast
  compiler options; ``rl.rollout`` itself is exercised by the slow RGB test below."""
  fn = jax.jit(lambda p, c, a, k: rl._rollout_impl(model, cfg, horizon, p, c, a, k), compiler_options=_FAST)
  with rl.noise_mode():
    return np.asarray(fn(params, ctx, acts, keys))


@pytest.mark.parametrize("norm,k,horizon,guidance", [("per_frame", 1, 6, 2.5), ("cumulative", 2, 5, 2.5),
                                                       ("per_frame", 1, 4, None)])
def test_rollout_cached_equals_uncached(norm, k, horizon, guidance):
  """Window 4: frames grow the window up to 4, later frames slide it (k + horizon > 4 in the guided cases);
  guidance (both branches batched, rescale 0.7) and the conditional-only pass."""
  plain, cached, params = world_models(norm)
  cfg = rl.SamplerConfig(ddim_steps=2, eta=1.0, guidance_scale=guidance, guidance_rescale=0.7, window=WINDOW)
  ctx, acts = h.random_inputs(batch=2, k=k, horizon=horizon, seed=k)
  keys = rl.rollout_keys(4, 2)
  want = fast_rollout(plain, cfg, params, ctx, acts, keys, horizon)
  got = fast_rollout(cached, cfg, params, ctx, acts, keys, horizon)
  assert got.shape == (2, k + horizon, 4, 4, 12)
  np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
  assert np.abs(want[:, -1] - want[:, -2]).max() > 1e-3  # the model really produced (different) frames


def test_rollout_cached_refuses_noncausal_models():
  from vid2world_jax import world_model
  c = h.tiny_model_config("unet", window=WINDOW)
  c.model.unet.temporal_norm = "joint"
  wm, fs = nnx.eval_shape(lambda: world_model.build(c.model, rngs=nnx.Rngs(0)))
  g, _ = nnx.split(wm)
  fg, _ = nnx.split(fs)
  with pytest.raises(ValueError, match="cached rollout.*temporal_norm 'joint'"):
    rollout_model.world_model_rollout_model(c.model, g, fg, cached=True)
  with pytest.raises(ValueError, match="cached rollout"):  # allow_noncausal does not unlock the cached path
    rollout_model.world_model_rollout_model(c.model, g, fg, cached=True, allow_noncausal=True)
  c.model.unet.temporal_norm = "per_frame"
  c.model.unet.temporal_conv_padding = "symmetric"
  with pytest.raises(ValueError, match="temporal conv padding 'symmetric'"):
    rollout_model.world_model_rollout_model(c.model, g, fg, cached=True)
  t = h.tiny_model_config("toy", window=WINDOW)
  with pytest.raises(ValueError, match="arch='unet'"):
    rollout_model.world_model_rollout_model(t.model, g, fg, cached=True)


@pytest.mark.slow
def test_rollout_world_model_cached_rgb_equals_uncached():
  """The public RGB entry point (``InferenceSession.rollout_with_context``, default-optimised ``rl.rollout`` jit)
  with ``cached=True`` == ``cached=False``. Slow (two full-optimisation compiles of the nested scans); the same
  code path is covered quickly by ``test_rollout_cached_equals_uncached``."""
  from vid2world_jax import inference, world_model
  c = h.tiny_model_config("unet", window=WINDOW)
  c.model.unet.channel_mult = [1]
  c.model.unet.attention_resolutions = [1]
  wm, _ = random_build(lambda: world_model.build(c.model, rngs=nnx.Rngs(0)), 3)
  params = nnx.to_pure_dict(nnx.state(wm, nnx.Param))
  cfg = rl.SamplerConfig(ddim_steps=2, eta=1.0, guidance_scale=1.0, window=WINDOW)
  frames = np.random.default_rng(0).integers(0, 256, (1, 2, 8, 8, 3)).astype(np.uint8)
  acts = np.random.default_rng(1).normal(size=(1, 5, 3)).astype(np.float32)
  out = []
  for cached in (False, True):
    sess = inference.InferenceSession.from_params(c, params, sampler=cfg, cached=cached)
    out.append(sess.rollout_with_context(frames, acts[:, 1:], guidance_scale=2.5, seed=1,
                                         context_actions=acts[:, :1]))
  (lat0, rgb0), (lat1, rgb1) = out
  np.testing.assert_allclose(lat1, lat0, rtol=0, atol=TOL)
  assert rgb1.shape == rgb0.shape == (1, 6, 8, 8, 3)
  assert np.abs(rgb1.astype(int) - rgb0.astype(int)).max() <= 1


def test_rollout_cached_cli_refuses_toy_arch(tmp_path):
  """``--cached`` reaches the rollout entry point: the toy arch (no UNet) is refused with a clear message."""
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  h.write_toy_checkpoint(tmp_path / "work")
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "ctx.npz", frames=rng.integers(0, 256, size=(1, 16, 16, 3), dtype=np.uint8))
  np.save(tmp_path / "acts.npy", rng.uniform(-1, 1, size=(2, 2)).astype(np.float32))
  r = subprocess.run([sys.executable, "-m", "vid2world_jax.rollout", f"--config={repo}/configs/test_tiny.py:toy",
                      f"--checkpoint={tmp_path / 'work'}", f"--context={tmp_path / 'ctx.npz'}",
                      f"--actions={tmp_path / 'acts.npy'}", "--ddim_steps=1", "--cached",
                      f"--out={tmp_path / 'o.npz'}"], cwd=repo, capture_output=True, text=True, timeout=600,
                     env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""))
  assert r.returncode != 0
  assert "cached rollout needs model.arch='unet'" in r.stderr, r.stderr[-2000:]
  assert not (tmp_path / "o.npz").exists()
