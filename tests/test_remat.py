"""Named remat policies per block kind give the same gradients as no remat; activation sharding constraints
(logical-axis rules) leave the outputs unchanged on 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from vid2world_jax import sharding
from vid2world_jax.models import remat
from vid2world_jax.models import unet as U

# Fast-compiling jit (tiny model: XLA's optimisation passes dominate on 2 cores), as in test_unet_causal.py.
_FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _cfg(**kw):
  c = U.default_config()
  c.update(dict(in_channels=8, out_channels=4, model_channels=32, channel_mult=[1], num_res_blocks=1,
                attention_resolutions=[1], num_head_channels=16, context_dim=16, use_linear=True,
                temporal_conv=True, temporal_attention=True, use_relative_position=False, temporal_length=4,
                addition_attention=True, fs_condition=False, use_causal_attention=True, causal_init_attn=True,
                temporal_conv_padding="causal"))
  c.update(kw)
  return c


def _inputs(b=2, t=4):  # 8x8 latents: spatial attention over 64 tokens, temporal over 4 frames
  r = np.random.default_rng(0)
  return (jnp.asarray(r.standard_normal((b, t, 8, 8, 8)), jnp.float32), jnp.asarray(r.integers(0, 1000, (b, t))),
          jnp.asarray(r.standard_normal((b, 77, 16)), jnp.float32))


def _grads(cfg, params):
  m = U.build(cfg, rngs=nnx.Rngs(0))
  m.eval()
  graphdef, _, rest = nnx.split(m, nnx.Param, ...)
  x, t, ctx = _inputs()

  def loss(p, rest):
    model = nnx.merge(graphdef, p, rest, copy=True)
    return jnp.mean(model(x, t, ctx) ** 2)

  return jax.jit(jax.value_and_grad(loss), compiler_options=_FAST)(params, rest)


@pytest.fixture(scope="module")
def reference():
  m = U.build(_cfg(), rngs=nnx.Rngs(0))
  params = nnx.state(m, nnx.Param)
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params)
  return params, _grads(_cfg(), params)


@pytest.mark.parametrize("overrides", [
    dict(remat=True),                                                     # legacy boolean
    dict(remat_block="dots_with_no_batch_dims_saveable"),
    dict(remat_resblock="nothing_saveable", remat_spatial="dots_saveable",
         remat_temporal="dots_with_no_batch_dims_saveable"),
    dict(remat_block="nothing_saveable", remat_spatial="nothing_saveable", remat_temporal="nothing_saveable"),
])
def test_remat_policies_same_gradients(reference, overrides):
  params, (ref_loss, ref_g) = reference
  loss, g = _grads(_cfg(**overrides), params)
  assert abs(float(loss) - float(ref_loss)) <= 1e-6 * abs(float(ref_loss))
  flat_r, flat_g = jax.tree.leaves(ref_g), jax.tree.leaves(g)
  assert len(flat_r) == len(flat_g) and any(float(jnp.max(jnp.abs(a))) > 0 for a in flat_r)
  for a, b in zip(flat_r, flat_g):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=1e-5)


def test_remat_policy_really_rematerialises():
  """The jaxpr of the gradient holds a remat (checkpoint) primitive only when a policy is set."""
  x, t, ctx = _inputs()

  def jaxpr(cfg):
    m = U.build(cfg, rngs=nnx.Rngs(0))
    m.eval()
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    f = lambda p, r: jnp.sum(nnx.merge(graphdef, p, r, copy=True)(x, t, ctx))
    return str(jax.make_jaxpr(jax.grad(f))(params, rest))

  with_policy = jaxpr(_cfg(remat_temporal="nothing_saveable"))
  assert "checkpoint" in with_policy or "remat" in with_policy
  without = jaxpr(_cfg())
  assert "checkpoint" not in without and "remat" not in without


def test_remat_legacy_boolean_and_bad_names():
  assert remat.block_policies(_cfg(remat=True))["block"] == "nothing_saveable"
  assert remat.block_policies(_cfg(remat=True, remat_block="dots_saveable"))["block"] == "dots_saveable"
  assert set(remat.block_policies(_cfg()).values()) == {"none"}
  with pytest.raises(ValueError, match="remat_spatial must be one of"):
    U.build(_cfg(remat_spatial="everything"), rngs=nnx.Rngs(0))


def test_remat_logical_spec_rules():
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
  rules = (("batch", ("data", "fsdp")), ("frames", "fsdp"))
  assert sharding.logical_spec(("batch", "frames", None), (8, 4, 3), rules, mesh) == P(("data", "fsdp"), None, None)
  assert sharding.logical_spec(("batch", "frames", None), (2, 4, 3), rules, mesh) == P("data", "fsdp", None)
  assert sharding.logical_spec(("batch", "frames"), (3, 5), rules, mesh) == P(None, None)
  with pytest.raises(ValueError, match="unknown logical axis"):
    sharding.logical_spec(("batch",), (8,), (("pixels", "data"),), mesh)


def test_remat_activation_sharding_constraints_keep_outputs():
  """UNet forward jitted on a data=2 x fsdp=4 mesh: batch over data, frames over fsdp (sequence-parallel style)
  gives the single-device output; the lowered program carries the constraints."""
  assert jax.device_count() >= 8
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
  rules = (("batch", "data"), ("frames", "fsdp"))
  base = U.build(_cfg(), rngs=nnx.Rngs(0))
  base.eval()
  params = nnx.state(base, nnx.Param)
  x, t, ctx = _inputs()
  ref = np.asarray(base(x, t, ctx))
  m = U.build(_cfg(activation_rules=rules), rngs=nnx.Rngs(0))
  m.eval()
  graphdef, _, rest = nnx.split(m, nnx.Param, ...)
  f = jax.jit(lambda p, r, x, t, c: nnx.merge(graphdef, p, r, copy=True)(x, t, c),
              out_shardings=NamedSharding(mesh, P("data")), compiler_options=_FAST)
  with jax.set_mesh(mesh):
    text = f.lower(params, rest, x, t, ctx).as_text()
    out = f(params, rest, x, t, ctx)
  assert text.count("sharding_constraint") + text.count("Sharding") >= 5
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=1e-5)
