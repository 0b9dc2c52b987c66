"""Sharding: one train step on 8 fake CPU devices (data=4, fsdp=2) equals the single-device step."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from _train_helpers import tiny_config
from vid2world_jax import sharding
from vid2world_jax.training import setup as train_setup


def _one_step(cfg, devices, shape):
  mesh = sharding.make_mesh(shape, devices)
  setup = train_setup.Setup(cfg, mesh)
  state, rest, frozen = setup.init()
  it = train_setup.SyntheticClips(cfg.data, process_index=0, process_count=1)
  batch = sharding.to_global(next(it), mesh)
  new_state, metrics = setup.step(state, frozen, rest, batch)
  return setup, new_state, metrics


def test_shard_step_equals_single_device():
  cfg = tiny_config(**{"mesh.fsdp_min_size": 64, "optim.ema_decay": 0.9, "optim.warmup_steps": 0})
  assert jax.device_count() == 8
  s1, st1, m1 = _one_step(cfg, jax.devices()[:1], {"data": 1, "fsdp": 1})
  s8, st8, m8 = _one_step(cfg, jax.devices(), {"data": 4, "fsdp": 2})
  # Parameters really are sharded over fsdp on the 8-device mesh, optimizer moments and EMA alike.
  specs = [s.spec for s in jax.tree.leaves(s8.state_sh["params"])]
  assert any("fsdp" in tuple(sp) for sp in specs)
  leaves8 = jax.tree_util.tree_leaves_with_path(st8)
  sharded = [sharding.path_str(p) for p, x in leaves8 if x.ndim and not x.sharding.is_fully_replicated]
  assert any(p.startswith("params/") for p in sharded)
  assert any("mu" in p for p in sharded) and any(p.startswith("ema/") for p in sharded)
  # Same numbers as on one device.
  assert np.isclose(float(m1["loss"]), float(m8["loss"]), rtol=1e-5, atol=1e-6)
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                       st1["params"], st8["params"])
  worst = max(jax.tree.leaves(diffs))
  assert worst <= 1e-5, worst
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                       jax.device_get(st8["params"]), jax.device_get(s8.init()[0]["params"]))
  assert max(jax.tree.leaves(moved)) > 1e-6  # the step did change the parameters


def test_shard_rules_and_mesh_resolution():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2})
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
  assert sharding.param_spec("unet/conv/kernel", (3, 3, 64, 128), mesh, min_size=1) == P(None, None, None, "fsdp")
  assert sharding.param_spec("unet/bias", (7,), mesh, min_size=1) == P()          # indivisible -> replicated
  assert sharding.param_spec("unet/conv/kernel", (3, 3, 4, 4), mesh, min_size=10 ** 6) == P()  # small
  rules = [(r"null_context", [None, "fsdp"])]
  assert sharding.param_spec("opt_state/1/0/mu/null_context", (3, 8), mesh, rules, 1) == P(None, "fsdp")
  with pytest.raises(ValueError, match="does not divide"):
    sharding.resolve_mesh_shape({"data": -1, "fsdp": 3}, 8)
  with pytest.raises(ValueError, match="uses 4 devices"):
    sharding.resolve_mesh_shape({"data": 2, "fsdp": 2}, 8)


def test_shard_grad_accumulation_runs_sharded():
  cfg = tiny_config(**{"optim.grad_accum_steps": 2})
  _, st, m = _one_step(cfg, jax.devices(), {"data": 2, "fsdp": 2 * 2})
  assert np.isfinite(float(m["loss"])) and int(st["step"]) == 1
