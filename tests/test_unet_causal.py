"""[causal] / [action] properties of the UNet with the Vid2World options, on a tiny fully randomised model.

Strict settings (causal temporal attention incl. init_attn, causal temporal conv padding, per-frame or cumulative
temporal norms, per-frame timesteps, actions): outputs at frames <= k must not depend on anything at frames > k.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

from vid2world_jax.world_model import unet_denoise
from vid2world_jax.models import unet as U

A = 3          # action dim
CTX_D = 16     # context dim
HW = 4


def tiny_config(strict: bool, norm: str = "per_frame", action_dim: int = A, encoder: str = "mlp"):
  # 64 channels = 2 per GroupNorm group: with 1 channel per group the GroupNorm after the embedding add would
  # cancel the per-channel embedding shift, and timesteps/actions would have (almost) no effect.
  c = U.default_config()
  c.update(dict(in_channels=8, out_channels=4, model_channels=64, channel_mult=[1], num_res_blocks=1,
                attention_resolutions=[1], num_head_channels=32, context_dim=CTX_D, use_linear=True,
                temporal_conv=True, temporal_attention=True, use_relative_position=False, temporal_length=16,
                addition_attention=True, image_cross_attention=True, image_cross_attention_scale_learnable=True,
                fs_condition=True, default_fs=3, action_dim=action_dim, action_encoder=encoder))
  if strict:
    c.causal_temporal_attention = True
    c.causal_init_attn = True
    c.temporal_conv_padding = "causal"
    c.temporal_norm = norm
  return c


def randomize(model, seed: int):
  """Re-draws every parameter (also the upstream zero-inits) so that every path influences the output."""
  state = nnx.state(model, nnx.Param)
  leaves, tree = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = []
  for k, v in zip(keys, leaves):
    n = jax.random.normal(k, v.shape, v.dtype)
    if v.ndim >= 2:
      new.append(n / np.sqrt(np.prod(v.shape[:-1])))
    else:  # biases / norm scales / alpha
      new.append(v + 0.1 * n)
  nnx.update(model, jax.tree.unflatten(tree, new))


@functools.lru_cache(maxsize=None)
def get_model(strict: bool, norm: str = "per_frame", action_dim: int = A, encoder: str = "mlp"):
  m = U.build(tiny_config(strict, norm, action_dim, encoder), rngs=nnx.Rngs(0))
  randomize(m, 1)
  m.eval()
  return m


# Fast-compiling jit (the tiny model's runtime is negligible; XLA's optimisation passes dominate on 2 cores).
_FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_JITS = {}


def _jitted(model, with_mask: bool):
  key = (id(model), with_mask)
  if key not in _JITS:
    graphdef, state = nnx.split(model)

    def f(state, x, t, concat, context, fs, actions, mask):
      m = nnx.merge(graphdef, state)
      return unet_denoise(m, x, t, {"concat": concat, "context": context, "fs": fs}, actions,
                         mask if with_mask else None)

    _JITS[key] = (jax.jit(f, compiler_options=_FAST), state)
  return _JITS[key]


def make_inputs(seed: int, b: int, t: int, action_dim: int = A):
  r = np.random.default_rng(seed)
  return dict(
      x=r.standard_normal((b, t, HW, HW, 4)).astype(np.float32),
      t=r.integers(0, 1000, (b, t)),
      concat=r.standard_normal((b, HW, HW, 4)).astype(np.float32),
      context=r.standard_normal((b, 77 + 16 * t, CTX_D)).astype(np.float32),  # per-frame image tokens
      fs=np.array([3, 10][:b] + [3] * max(0, b - 2)),
      actions=r.standard_normal((b, t, action_dim)).astype(np.float32),
      mask=(r.random((b, t)) > 0.4).astype(np.float32))


def perturb_after(inp: dict, k: int, seed: int) -> dict:
  """New values for everything that belongs to frames > k (latents, per-frame t, actions, mask, image tokens)."""
  r = np.random.default_rng(seed)
  out = {n: v.copy() for n, v in inp.items()}
  out["x"][:, k + 1:] = r.standard_normal(out["x"][:, k + 1:].shape) * 3
  out["t"][:, k + 1:] = r.integers(0, 1000, out["t"][:, k + 1:].shape)
  out["actions"][:, k + 1:] = r.standard_normal(out["actions"][:, k + 1:].shape) * 3
  out["mask"][:, k + 1:] = 1 - out["mask"][:, k + 1:]
  out["context"][:, 77 + 16 * (k + 1):] = r.standard_normal(out["context"][:, 77 + 16 * (k + 1):].shape)
  return out


def run(model, inp, with_mask=True):
  fn, state = _jitted(model, with_mask)
  return np.asarray(fn(state, inp["x"], inp["t"], inp["concat"], inp["context"], inp["fs"], inp["actions"],
                       inp["mask"]))


def max_prefix_leak(model, inp, with_mask=True, seed=0):
  """max over k of max |out[:, :k+1] - out'[:, :k+1]| when frames > k are perturbed; also the min change seen
  at frame k+1 (to make sure the perturbation mattered)."""
  t = inp["x"].shape[1]
  base = run(model, inp, with_mask)
  leak, min_change = 0.0, np.inf
  for k in range(t - 1):
    out = run(model, perturb_after(inp, k, seed + k), with_mask)
    leak = max(leak, float(np.max(np.abs(out[:, :k + 1] - base[:, :k + 1]))))
    min_change = min(min_change, float(np.max(np.abs(out[:, k + 1] - base[:, k + 1]))))
  return leak, min_change


@pytest.mark.parametrize("norm,with_mask", [("per_frame", True), ("cumulative", True), ("per_frame", False)],
                         ids=["per_frame-action_dropout", "cumulative-action_dropout", "per_frame-no_mask"])
def test_causal_strict_prefix_independent_of_future(norm, with_mask):
  model = get_model(True, norm)
  leak, min_change = max_prefix_leak(model, make_inputs(0, 2, 6), with_mask)
  print(f"\nstrict {norm} mask={with_mask}: max leak into frames<=k {leak:.2e}, min change at k+1 {min_change:.2e}")
  assert leak <= 1e-6
  assert min_change > 1e-3


@pytest.mark.parametrize("mode", ["shift", "mask", "mixed"])
def test_causal_prefix_after_temporal_conv_transfer(mode):
  """The causality property for every temporal-conv weight transfer: the random strict model's temporal-conv
  kernels are replaced by their transferred versions (as init_from / the converter do) and the model is run with
  per-frame action dropout."""
  from vid2world_jax.conversion import dynamicrafter
  from vid2world_jax.models import weight_transfer
  model = nnx.clone(get_model(True, "cumulative"))
  state = nnx.state(model, nnx.Param)
  flat = nnx.to_flat_state(state)
  n, changed = 0, False
  for path, var in flat:
    if dynamicrafter.is_temporal_conv_kernel(tuple(str(k) for k in path)):
      old = np.asarray(var[...])
      new = weight_transfer.transfer_flax_kernel(old, mode)
      var.set_value(jnp.asarray(new))
      n += 1
      changed = changed or not np.array_equal(old, np.asarray(new))
  assert n > 0 and changed == (mode != "shift")   # shift reuses the kernel as is
  nnx.update(model, nnx.from_flat_state(flat))
  leak, min_change = max_prefix_leak(model, make_inputs(1, 2, 5), with_mask=True)
  print(f"\ntransfer {mode}: max leak into frames<=k {leak:.2e}, min change at k+1 {min_change:.2e}")
  assert leak <= 1e-6
  assert min_change > 1e-3


@pytest.mark.slow
@settings(max_examples=4, deadline=None, derandomize=True)
@given(t=st.integers(1, 16), seed=st.integers(0, 2 ** 16))
def test_causal_hypothesis_over_clip_length(t, seed):
  model = get_model(True, "per_frame")
  inp = make_inputs(seed, 1, t)
  if t == 1:
    out = run(model, inp)
    assert out.shape == (1, 1, HW, HW, 4) and np.all(np.isfinite(out))
    return
  leak, min_change = max_prefix_leak(model, inp, seed=seed)
  assert leak <= 1e-6
  assert min_change > 1e-4


def test_causal_original_settings_leak():
  """The original settings (joint norms, symmetric conv, bidirectional attention) are NOT causal."""
  model = get_model(False, action_dim=A)
  inp = make_inputs(0, 2, 6)
  base = run(model, inp)
  out = run(model, perturb_after(inp, 0, 5))
  leak = float(np.max(np.abs(out[:, 0] - base[:, 0])))
  print(f"\noriginal settings: change of frame 0 when frames 1.. are perturbed: {leak:.3e}")
  assert leak > 1e-3


def test_causal_per_frame_timesteps_equal_entries_match_clip_timestep():
  model = get_model(True, "per_frame")
  inp = make_inputs(3, 2, 5)
  per_clip = np.array([999, 37])
  inp["t"] = np.repeat(per_clip[:, None], 5, axis=1)
  a = run(model, inp)
  inp["t"] = per_clip
  b = run(model, inp)
  print(f"\n[B,T] equal entries vs [B]: max abs diff {np.max(np.abs(a - b)):.2e}")
  assert np.max(np.abs(a - b)) <= 1e-6


def test_action_locality():
  model = get_model(True, "per_frame")
  inp = make_inputs(4, 2, 6)
  inp["mask"][:] = 1
  base = run(model, inp)
  t = inp["x"].shape[1]
  for k in range(t):
    mod = {n: v.copy() for n, v in inp.items()}
    mod["actions"][:, k] += 2.0
    out = run(model, mod)
    diff = np.abs(out - base).max(axis=(0, 2, 3, 4))  # per frame
    assert np.all(diff[:k] <= 1e-6), (k, diff)
    assert np.all(diff[k:] > 1e-5), (k, diff)
    # dropped action at frame k: output independent of actions[:, k]
    m0 = {n: v.copy() for n, v in inp.items()}
    m0["mask"][:, k] = 0
    m1 = {n: v.copy() for n, v in m0.items()}
    m1["actions"][:, k] = np.random.default_rng(k).standard_normal(m1["actions"][:, k].shape) * 5
    assert np.max(np.abs(run(model, m0) - run(model, m1))) <= 1e-7
    assert np.max(np.abs(run(model, m0) - base)) > 1e-5  # dropping does change the output


def test_action_embedding_encoder_sums_table_rows():
  from vid2world_jax.models.embeddings import action_encoder
  enc = action_encoder("embedding", 5, 32, 128, dtype=jnp.float32, rngs=nnx.Rngs(0))
  table = np.asarray(enc[0].kernel[...])
  assert table.shape == (5, 32) and enc[0].bias is None
  multi_hot = np.array([[1, 0, 1, 0, 1]], np.float32)
  np.testing.assert_allclose(np.asarray(enc[0](jnp.asarray(multi_hot)))[0], table[[0, 2, 4]].sum(0),
                             rtol=1e-6, atol=1e-6)
  assert enc(jnp.asarray(multi_hot)).shape == (1, 128)


def test_action_required_and_shape_errors():
  model = nnx.eval_shape(lambda: U.build(tiny_config(True), rngs=nnx.Rngs(0)))  # errors come before compute
  inp = make_inputs(0, 1, 2)
  cond = {"concat": inp["concat"], "context": inp["context"], "fs": None}
  with pytest.raises(ValueError, match="actions"):
    unet_denoise(model, inp["x"], inp["t"], cond)
  with pytest.raises(ValueError, match="actions must be"):
    unet_denoise(model, inp["x"], inp["t"], cond, inp["actions"][..., :2])
  with pytest.raises(ValueError, match="action_mask"):
    unet_denoise(model, inp["x"], inp["t"], cond, inp["actions"], inp["mask"][:, :1])
  with pytest.raises(ValueError, match="t must be"):
    unet_denoise(model, inp["x"], inp["t"][:, :1], cond, inp["actions"])
  with pytest.raises(ValueError, match="concat"):
    unet_denoise(model, inp["x"], inp["t"], {**cond, "concat": inp["concat"][:, :2]}, inp["actions"])
  with pytest.raises(ValueError, match="context"):
    unet_denoise(model, inp["x"], inp["t"], {**cond, "context": inp["context"][..., :3]}, inp["actions"])
  no_act = nnx.eval_shape(lambda: U.build(tiny_config(False, action_dim=0), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="action_dim=0"):
    unet_denoise(no_act, inp["x"], inp["t"], cond, inp["actions"])


def test_causal_remat_and_bfloat16_match_float32():
  """``remat=True`` gives the same numbers; ``dtype=bfloat16`` (params stay float32) stays close."""
  ref_model = get_model(True, "per_frame")
  inp = make_inputs(7, 1, 3)
  ref = run(ref_model, inp)
  for overrides, tol in [(dict(remat=True), 1e-5), (dict(dtype="bfloat16"), 0.1)]:
    cfg = tiny_config(True)
    cfg.update(overrides)
    m = U.build(cfg, rngs=nnx.Rngs(0))
    nnx.update(m, nnx.state(ref_model, nnx.Param))
    m.eval()
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(m, nnx.Param)))
    out = run(m, inp)
    assert out.dtype == np.float32
    err = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
    print(f"\n{overrides}: max rel diff vs float32 {err:.2e}")
    assert err <= tol, (overrides, err)
