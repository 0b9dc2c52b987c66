"""One attention function (models/attention.attention): every kernel equals the einsum reference (fp32, CPU),
causal mask and broadcast (text / image) keys included; the UNet gives the same output with each kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vid2world_jax.models import attention as A
from vid2world_jax.models import attention_kernels as K
from vid2world_jax.models import unet as U

TOL = 1e-5


def _qkv(seed, q_shape, k_shape, d=16):
  r = np.random.default_rng(seed)
  return (jnp.asarray(r.standard_normal(q_shape + (d,)), jnp.float32),
          jnp.asarray(r.standard_normal(k_shape + (d,)), jnp.float32) * 2,
          jnp.asarray(r.standard_normal(k_shape + (d,)), jnp.float32))


def _ref(q, k, v, scale, causal):
  return A.dot_attention(q, k, v, scale, A.causal_mask(q.shape[-3]) if causal else None)


@pytest.mark.parametrize("impl", ["einsum", "xla", "chunked", "auto"])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_self_matches_einsum(impl, causal):
  """Temporal self-attention layout ``[B, HW, T, h, d]`` (T=7: chunks of 3 leave a ragged last block)."""
  q, k, v = _qkv(0, (2, 3, 7, 2), (2, 3, 7, 2))
  out = A.attention(q, k, v, 0.25, causal=causal, impl=impl, chunk=3)
  ref = _ref(q, k, v, 0.25, causal)
  assert out.shape == ref.shape and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_attention_cross_broadcast_keys_match_einsum(impl):
  """Text keys ``[B, 1, 77, h, d]`` shared by all frames' queries ``[B, T, N, h, d]``."""
  q, k, v = _qkv(1, (2, 3, 10, 2), (2, 1, 77, 2))
  out = A.attention(q, k, v, 0.25, impl=impl, chunk=4)
  np.testing.assert_allclose(np.asarray(out), np.asarray(_ref(q, k, v, 0.25, False)), atol=TOL, rtol=TOL)


def test_attention_causal_mask_really_masks():
  """Changing future keys/values leaves earlier query rows unchanged with causal=True (and changes them without)."""
  q, k, v = _qkv(2, (1, 6, 2), (1, 6, 2))
  k2, v2 = k.at[:, 4:].add(5.0), v.at[:, 4:].add(5.0)
  for impl in ("xla", "chunked"):
    a = A.attention(q, k, v, 0.3, causal=True, impl=impl, chunk=2)
    b = A.attention(q, k2, v2, 0.3, causal=True, impl=impl, chunk=2)
    np.testing.assert_allclose(np.asarray(a[:, :4]), np.asarray(b[:, :4]), atol=TOL)
    assert float(jnp.max(jnp.abs(a[:, 4:] - b[:, 4:]))) > 0.1
    c = A.attention(q, k2, v2, 0.3, causal=False, impl=impl)
    assert float(jnp.max(jnp.abs(a[:, :4] - c[:, :4]))) > 0.1


@pytest.mark.parametrize("causal", [False, True])
def test_attention_splash_kernel_interpret_matches_einsum(causal):
  """The Pallas splash kernel (interpret mode on CPU: the TPU kernel's own code path) equals the reference."""
  q, k, v = _qkv(3, (2, 128, 2), (2, 128, 2), d=64)
  out = K.splash_attention(q, k, v, 0.125, causal, interpret=True)
  np.testing.assert_allclose(np.asarray(out), np.asarray(_ref(q, k, v, 0.125, causal)), atol=TOL, rtol=TOL)


def test_attention_resolve_impl_per_backend_and_errors():
  assert A.resolve_impl("auto", 2560, 2560, "tpu") == "splash"
  assert A.resolve_impl("auto", 16, 16, "tpu") == "xla"       # temporal attention: too short for splash blocks
  assert A.resolve_impl("auto", 2560, 77, "tpu") == "xla"     # text cross-attention
  assert A.resolve_impl("auto", 2560, 2560, "gpu") == "gpu"   # jax.nn.dot_product_attention picks cuDNN
  assert A.resolve_impl("auto", 2560, 2560, "cpu") == "einsum"   # measured faster on CPU (docs/profile.md)
  assert A.resolve_impl("chunked", 5, 5, "tpu") == "chunked"
  with pytest.raises(ValueError, match="attention impl must be one of"):
    A.resolve_impl("flash", 4, 4)
  q, k, v = _qkv(4, (1, 4, 1), (1, 5, 1))
  with pytest.raises(ValueError, match="Lq == Lk"):
    A.attention(q, k, v, 1.0, causal=True)
  with pytest.raises(ValueError, match="divisible by 128"):
    K.splash_attention(q, k, v, 1.0, False)


def test_attention_auto_follows_the_mesh_platform_not_the_host():
  """An ahead-of-time compile for a TPU topology runs in a CPU process: "auto" must pick the kernel of the mesh's
  platform (splash), not of the host (regression: the TPU memory plan once compiled materialised XLA attention)."""
  from jax._src import mesh as mesh_lib
  tpu_mesh = jax.sharding.AbstractMesh((4,), ("fsdp",), abstract_device=mesh_lib.AbstractDevice("TPU v4", 1, "tpu"))
  assert A.target_backend() == jax.default_backend() == "cpu"
  with jax.sharding.use_abstract_mesh(tpu_mesh):
    assert A.target_backend() == "tpu"
    assert A.resolve_impl("auto", 2560, 2560) == "splash"
    assert A.resolve_impl("auto", 16, 16) == "xla"
  assert A.resolve_impl("auto", 2560, 2560) == "einsum"   # back on the CPU host


def _tiny_unet_cfg(impl):
  c = U.default_config()
  c.update(dict(in_channels=8, out_channels=4, model_channels=32, channel_mult=[1, 2], num_res_blocks=1,
                attention_resolutions=[1, 2], num_head_channels=16, context_dim=16, use_linear=True,
                temporal_conv=True, temporal_attention=True, use_relative_position=False, temporal_length=8,
                addition_attention=True, image_cross_attention=True, fs_condition=True, attention_impl=impl))
  c.causal_temporal_attention = True
  c.causal_init_attn = True
  c.temporal_conv_padding = "causal"
  return c


def test_attention_unet_forward_same_for_every_impl():
  """Whole causal UNet (spatial self/cross, image cross-attention, causal temporal): every kernel == einsum."""
  r = np.random.default_rng(0)
  x = jnp.asarray(r.standard_normal((2, 5, 8, 8, 8)), jnp.float32)
  ctx = jnp.asarray(r.standard_normal((2, 77 + 16 * 5, 16)), jnp.float32)
  t = jnp.asarray(r.integers(0, 1000, (2, 5)))
  outs = {}
  ref_state = None
  for impl in ("einsum", "xla", "chunked"):
    m = U.build(_tiny_unet_cfg(impl), rngs=nnx.Rngs(0))
    if ref_state is None:
      ref_state = nnx.state(m, nnx.Param)
      ref_state = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), ref_state)
    nnx.update(m, ref_state)
    m.eval()
    outs[impl] = np.asarray(m(x, t, ctx))
  scale = np.max(np.abs(outs["einsum"]))
  for impl in ("xla", "chunked"):
    assert np.max(np.abs(outs[impl] - outs["einsum"])) <= TOL * max(scale, 1.0), impl


def test_attention_chunked_gradients_match_einsum():
  """The checkpointed query blocks give the reference gradients (causal, ragged last block)."""
  q, k, v = _qkv(5, (2, 7, 2), (2, 7, 2))
  f = lambda impl: jax.grad(lambda q, k, v: jnp.sum(jnp.sin(A.attention(q, k, v, 0.3, causal=True, impl=impl,
                                                                         chunk=3))), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(f("chunked"), f("einsum")):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=TOL)
