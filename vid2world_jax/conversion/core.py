"""Generic PyTorch state_dict -> Flax NNX parameter conversion: an explicit name table plus per-kind transforms.

The tables (lists of ``models.torch_names.Entry``, one per Flax parameter: which torch key feeds it and which
``models.torch_names.TRANSFORMS`` layout transform applies) are built by each model
(``vid2world_jax.models.<model>.torch_name_table``, usually with ``models.torch_names.auto_entries``).
:func:`convert` applies a table to a key->array mapping and fails loudly on anything missing, unexpected or
mis-shaped; :func:`load_into` writes the result into a module.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flax import nnx

from vid2world_jax.models.torch_names import TRANSFORMS, Entry, torch_name  # the name tables' vocabulary


def param_shapes(abstract_or_real_module_state) -> dict[tuple, tuple]:
  """``{path: shape}`` for every leaf of an ``nnx.State`` (abstract or concrete)."""
  flat = nnx.to_flat_state(abstract_or_real_module_state)
  return {tuple(p): tuple(v.get_value().shape) for p, v in flat}


class ConversionError(ValueError):
  """Raised with a full report of missing / unexpected / mis-shaped keys."""


@dataclasses.dataclass
class Report:
  mapped: int
  total_flax: int
  ignored: list[str]
  missing_torch: list[str]       # table wants them, checkpoint lacks them
  unexpected_torch: list[str]    # checkpoint has them, nothing uses them, not ignored
  unmapped_flax: list[tuple]     # flax params with no table entry
  shape_errors: list[str]

  @property
  def ok(self) -> bool:
    return not (self.missing_torch or self.unexpected_torch or self.unmapped_flax or self.shape_errors)

  def summary(self) -> str:
    cov = 100.0 * self.mapped / max(self.total_flax, 1)
    lines = [f"mapped {self.mapped}/{self.total_flax} Flax parameters ({cov:.2f}%), "
             f"{len(self.ignored)} checkpoint keys ignored by rule"]
    for name, items in [("missing in checkpoint", self.missing_torch),
                        ("unexpected checkpoint keys", self.unexpected_torch),
                        ("Flax parameters without a table entry", self.unmapped_flax),
                        ("shape mismatches", self.shape_errors)]:
      if items:
        lines.append(f"{len(items)} {name}:")
        lines.extend(f"  {x}" for x in items[:50])
        if len(items) > 50:
          lines.append(f"  ... and {len(items) - 50} more")
    return "\n".join(lines)


def _lazy_shape_view(shape, dtype=np.float32):
  """A zero-memory array of ``shape`` (broadcast view) for shape-only transforms."""
  return np.broadcast_to(np.zeros((), dtype), tuple(shape))


def convert(
    checkpoint: Mapping[str, Any],
    table: list[Entry],
    expected_shapes: Mapping[tuple, tuple],
    *,
    aliases: Mapping[str, str] | None = None,
    ignore: Iterable[str] = (),
    shapes_only: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[dict[tuple, np.ndarray], Report]:
  """Applies ``table`` to ``checkpoint``.

  Args:
    checkpoint: torch key -> array (numpy, torch tensor, or, with ``shapes_only``, a shape tuple). Values are
      read lazily one at a time, so a lazily loading mapping keeps peak memory at one tensor.
    table: entries, one per Flax parameter.
    expected_shapes: ``{flax path: shape}`` of the target model (e.g. from ``nnx.eval_shape``).
    aliases: ``{regex-free substring: replacement}`` applied to checkpoint keys before lookup
      (e.g. ``framestride_embed`` -> ``fps_embedding``).
    ignore: glob patterns of checkpoint keys that are known to be unused.
    shapes_only: only check shapes (manifest mode); the returned params dict is empty.
  Returns:
    ``({flax path: float32 array}, report)``. Raise with :meth:`Report.summary` if ``not report.ok``.
  """
  aliases = dict(aliases or {})
  ignore = list(ignore)
  renamed: dict[str, str] = {}
  for key in checkpoint.keys():
    new = key
    for old, rep in aliases.items():
      new = new.replace(old, rep)
    if new in renamed:
      raise ConversionError(f"checkpoint keys {renamed[new]!r} and {key!r} both map to {new!r}")
    renamed[new] = key

  by_torch: dict[str, Entry] = {}
  for e in table:
    if e.torch_key in by_torch:
      raise ConversionError(f"table maps {e.torch_key!r} twice")
    if e.transform not in TRANSFORMS:
      raise ConversionError(f"unknown transform {e.transform!r} for {e.torch_key!r}")
    by_torch[e.torch_key] = e
  table_paths = {e.path for e in table}
  unmapped_flax = sorted((p for p in expected_shapes if p not in table_paths), key=str)
  stale = sorted((e.path for e in table if e.path not in expected_shapes), key=str)
  missing = sorted(k for k in by_torch if k not in renamed)
  ignored, unexpected = [], []
  for k in sorted(renamed):
    if k in by_torch:
      continue
    if any(fnmatch.fnmatchcase(k, pat) or fnmatch.fnmatchcase(renamed[k], pat) for pat in ignore):
      ignored.append(renamed[k])
    else:
      unexpected.append(renamed[k])

  params: dict[tuple, np.ndarray] = {}
  shape_errors = [f"table path {p} does not exist in the Flax model" for p in stale]
  items = [e for e in table if e.torch_key in renamed and e.path in expected_shapes]
  it = progress(items) if progress else items
  mapped = 0
  for e in it:
    raw = checkpoint[renamed[e.torch_key]]
    if shapes_only:
      shape = tuple(raw) if isinstance(raw, (tuple, list)) else tuple(raw.shape)
      arr = TRANSFORMS[e.transform](_lazy_shape_view(shape))
    else:
      arr = TRANSFORMS[e.transform](to_numpy(raw))
    want = tuple(expected_shapes[e.path])
    if tuple(arr.shape) != want:
      shape_errors.append(f"{renamed[e.torch_key]}: checkpoint {tuple(np.shape(raw)) if not shapes_only else shape}"
                          f" -> {tuple(arr.shape)} after '{e.transform}', Flax {torch_name(e.path)} wants {want}")
      continue
    mapped += 1
    if not shapes_only:
      params[e.path] = np.ascontiguousarray(arr, dtype=np.float32).reshape(arr.shape)  # keep 0-d (alpha)
  report = Report(mapped=mapped, total_flax=len(expected_shapes), ignored=ignored, missing_torch=missing,
                  unexpected_torch=unexpected, unmapped_flax=unmapped_flax, shape_errors=shape_errors)
  return params, report


def to_numpy(x) -> np.ndarray:
  """numpy view/copy of a numpy array or torch tensor (torch imported only if such a tensor is passed)."""
  if isinstance(x, np.ndarray):
    return x
  if type(x).__module__.startswith("torch"):
    return x.detach().to("cpu").float().numpy()
  return np.asarray(x)


def load_into(model: nnx.Module, params: Mapping[tuple, np.ndarray]) -> None:
  """Writes converted ``params`` into ``model`` in place (every Param must be present)."""
  state = nnx.state(model, nnx.Param)
  flat = dict(nnx.to_flat_state(state))
  missing = [p for p in flat if tuple(p) not in params]
  if missing:
    raise ConversionError(f"{len(missing)} Flax parameters have no converted value, e.g. {missing[:5]}")
  for p, var in flat.items():
    value = params[tuple(p)]
    if tuple(value.shape) != tuple(var.get_value().shape):
      raise ConversionError(f"{torch_name(p)}: converted {value.shape} != model {var.get_value().shape}")
    var.set_value(np.asarray(value, dtype=var.get_value().dtype))
  nnx.update(model, state)
