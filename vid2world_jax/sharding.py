"""Device mesh, parameter-sharding rules and batch sharding.

Mesh axes are named ("data", "fsdp", ...); sizes come from ``config.mesh.shape`` where ``-1`` means "all the
remaining devices". Parameters (and every optimizer-state / EMA leaf that mirrors them) are sharded along
``fsdp`` by rules keyed on the parameter path and shape; batches are sharded on their leading axis over
``data x fsdp``. All shardings are ``NamedSharding`` over one global mesh, so the same code runs on 1 device,
8 fake CPU devices or a multi-host pod.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")   # leading (batch) axis of every input is split over these
FSDP = "fsdp"


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """``{"data": -1, "fsdp": 2}`` -> ``{"data": n/2, "fsdp": 2}``; ValueError if it does not divide."""
  shape = dict(shape)
  for ax in BATCH_AXES:
    if ax not in shape:
      raise ValueError(f"mesh.shape must name the axes {BATCH_AXES}; got {sorted(shape)}")
  free = [k for k, v in shape.items() if v == -1]
  if len(free) > 1:
    raise ValueError(f"mesh.shape: at most one axis may be -1, got {free}")
  for k, v in shape.items():
    if v != -1 and (not isinstance(v, int) or v < 1):
      raise ValueError(f"mesh.shape.{k} must be a positive int or -1, got {v!r}")
  fixed = math.prod(v for v in shape.values() if v != -1)
  if num_devices % fixed:
    raise ValueError(f"mesh {shape} does not divide the {num_devices} devices "
                     f"(product of fixed axes {fixed} must divide {num_devices})")
  if free:
    shape[free[0]] = num_devices // fixed
  elif fixed != num_devices:
    raise ValueError(f"mesh {shape} uses {fixed} devices but {num_devices} are available "
                     f"(use -1 for one axis to take the rest)")
  return shape


def make_mesh(shape: Mapping[str, int], devices: Sequence | None = None) -> Mesh:
  """Mesh with Auto (GSPMD) axis types; jax 0.10 defaults to Explicit, which we do not use."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(shape, len(devices))
  names = tuple(shape)
  sizes = tuple(shape[n] for n in names)
  try:
    return jax.make_mesh(sizes, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)
  except Exception:  # device order heuristics unavailable (e.g. an odd fake-device count): plain reshape
    arr = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(arr, names, axis_types=(AxisType.Auto,) * len(names))


def batch_divisor(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading axis over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def path_str(path) -> str:
  """jax key path -> 'a/b/0/c' (the form the sharding rules' regexes match)."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def fsdp_spec(shape: Sequence[int], fsdp_size: int, min_size: int) -> P:
  """Shard the largest dimension divisible by the fsdp size; small or indivisible leaves are replicated."""
  if fsdp_size <= 1 or len(shape) == 0 or math.prod(shape) < min_size:
    return P()
  order = sorted(range(len(shape)), key=lambda i: (-shape[i], -i))  # largest dim, ties -> last dim
  for i in order:
    if shape[i] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[i] = FSDP
      return P(*spec)
  return P()


def param_spec(path: str, shape: Sequence[int], mesh: Mesh, rules: Sequence = (), min_size: int = 2 ** 14) -> P:
  """Partition spec for one parameter-like leaf.

  ``rules``: ``[(regex, spec), ...]``, first regex found (``re.search``) in ``path`` wins; ``spec`` is a list of
  mesh-axis names / None, one per dim (shorter lists are right-padded with None). Without a match the fsdp
  rule applies. Optimizer-state leaves (``opt_state/0/mu/unet/...``) match the same regexes as their params.
  """
  for pattern, spec in rules:
    if re.search(pattern, path):
      spec = list(spec) + [None] * (len(shape) - len(spec))
      if len(spec) != len(shape):
        raise ValueError(f"sharding rule {pattern!r} -> {spec} has more dims than {path} {tuple(shape)}")
      for d, ax in zip(shape, spec):
        if ax is not None and d % mesh.shape[ax]:
          raise ValueError(f"sharding rule {pattern!r}: dim {d} of {path} not divisible by mesh axis {ax}")
      return P(*spec)
  return fsdp_spec(shape, mesh.shape.get(FSDP, 1), min_size)


def tree_shardings(tree, mesh: Mesh, rules: Sequence = (), min_size: int = 2 ** 14):
  """NamedSharding per leaf of an (abstract or concrete) pytree; scalars are replicated.

  Scalars matter: ``optax.adamw(...).init`` leaves its ``count`` on one device, which jit with mesh shardings
  rejects (environment notes); here every leaf, scalar or not, gets a mesh sharding.
  """
  def one(path, leaf):
    shape = getattr(leaf, "shape", ())
    if len(shape) == 0:
      return replicated(mesh)
    return NamedSharding(mesh, param_spec(path_str(path), shape, mesh, rules, min_size))
  return jax.tree_util.tree_map_with_path(one, tree)


def describe(shardings, tree) -> list[str]:
  """Human-readable 'path shape spec' lines (logged once at start)."""
  lines = []
  flat_s = jax.tree_util.tree_flatten_with_path(shardings)[0]
  flat_t = jax.tree_util.tree_leaves(tree)
  for (path, s), leaf in zip(flat_s, flat_t):
    lines.append(f"{path_str(path)} {tuple(getattr(leaf, 'shape', ()))} {s.spec}")
  return lines


def to_global(local_batch: Mapping, mesh: Mesh) -> dict:
  """Host-local numpy batch ([B_local, ...] per leaf) -> global jax.Arrays sharded over data x fsdp."""
  out = {}
  for k, v in local_batch.items():
    v = np.asarray(v)
    out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
  return out


# ---------------------------------------------------------------------------------------------------------------
# Activation sharding by logical axes.

LOGICAL_AXES = ("batch", "frames", "height", "width", "tokens")


def logical_spec(names: Sequence[str | None], shape: Sequence[int], rules: Sequence, mesh) -> P:
  """``PartitionSpec`` for an activation whose dims carry logical ``names`` (None = unsharded).

  ``rules``: ``((logical name, mesh axis | (mesh axes...) | None), ...)``, e.g. ``(("batch", ("data", "fsdp")),
  ("frames", "seq"))``. Mesh axes missing from ``mesh``, of size 1, already used by an earlier dim, or not
  dividing the dim are dropped (that dim stays unsharded on them), so one rule set serves every mesh.
  """
  table = {}
  for name, axes in rules:
    if name not in LOGICAL_AXES:
      raise ValueError(f"activation rule for unknown logical axis {name!r} (known: {LOGICAL_AXES})")
    table[name] = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
  used, spec = set(), []
  for name, dim in zip(names, shape):
    picked, size = [], 1
    for ax in table.get(name, ()) if name else ():
      n = mesh.shape.get(ax, 1) if ax in mesh.axis_names else 1
      if n > 1 and ax not in used and dim % (size * n) == 0:
        picked.append(ax)
        size *= n
    used.update(picked)
    spec.append(tuple(picked) if len(picked) > 1 else (picked[0] if picked else None))
  return P(*spec)


def constrain(x, names: Sequence[str | None], rules: Sequence):
  """``with_sharding_constraint`` of ``x`` by logical axis ``names`` under the mesh set with ``jax.set_mesh``;
  a no-op without rules or without a mesh (single-device code paths, tests)."""
  if not rules:
    return x
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  if len(names) != x.ndim:
    raise ValueError(f"constrain: {len(names)} logical names for a {x.ndim}-d array {x.shape}")
  return jax.lax.with_sharding_constraint(x, logical_spec(names, x.shape, rules, mesh))
