"""Op kinds of a profile, for the JAX / PyTorch side-by-side tables (benchmarks/profile_unet.py).

One vocabulary for both sides (``KINDS``): convolutions, matmuls of linear layers, attention's batched matmuls,
softmax, normalisation statistics, activations, layout copies / transposes, other elementwise work.

* JAX: the CPU runtime traces one event per executed HLO instruction (thunk), named like the instruction
  (``fusion.12``, ``ynn_fusion.420``, ``convolution.3``, ``copy.7``). ``hlo_kinds(hlo_text)`` reads the compiled
  module's text (``compiled.as_text()``) and gives each instruction a kind from the opcodes it runs (a fusion:
  the opcodes of the computation it calls, recursively) and the source file of its ops (``metadata``).
* PyTorch: ``torch_kind(aten_name)`` maps an ``aten::`` op of ``torch.profiler``'s table (self CPU time) to a kind.
"""

from __future__ import annotations

import collections
import re

KINDS = ("convolution", "linear matmul", "attention matmul", "softmax", "normalisation", "activation",
         "layout / copy", "elementwise", "other")

_LAYOUT = {"copy", "transpose", "bitcast", "reshape", "broadcast", "slice", "concatenate", "pad",
           "dynamic-slice", "dynamic-update-slice", "parameter", "constant", "tuple", "get-tuple-element",
           "iota", "reverse", "gather", "scatter", "copy-start", "copy-done", "bitcast-convert", "convert"}
_ACTIVATION = {"erf", "tanh", "logistic"}
_CONTROL = {"while", "conditional", "call", "custom-call", "after-all", "sort", "rng", "rng-bit-generator",
            "rng-get-and-update-state"}

_COMP_START = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(?:\(.*?\)|\S+)\s+([a-z][a-z0-9\-]*)\((.*)$")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_SRC = re.compile(r'source_file="([^"]+)"')
_FRAME = re.compile(r"stack_frame_id=(\d+)")
_TABLE_ROW = re.compile(r"^(\d+)\s+(.*)$")
_FIELD = re.compile(r"(\w+)=(\d+)")


def stack_frames(hlo_text: str) -> dict[int, list[tuple[str, str, int]]]:
  """Stack frame id -> ``[(file, function, line), ...]`` innermost first, from the module's ``FileNames``,
  ``FunctionNames``, ``FileLocations`` and ``StackFrames`` tables (metadata ``stack_frame_id``)."""
  tables: dict[str, dict[int, str]] = collections.defaultdict(dict)
  section = None
  for line in hlo_text.splitlines():
    s = line.strip()
    if s in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      section = s
      continue
    if not s or section is None:
      if not s:
        section = None
      continue
    m = _TABLE_ROW.match(s)
    if m:
      tables[section][int(m.group(1))] = m.group(2).strip().strip('"')
  loc = {}
  for i, row in tables["FileLocations"].items():
    f = dict((k, int(v)) for k, v in _FIELD.findall(row))
    loc[i] = (tables["FileNames"].get(f.get("file_name_id"), ""), tables["FunctionNames"].get(
        f.get("function_name_id"), ""), f.get("line", 0))
  frames = {}
  parent = {}
  for i, row in tables["StackFrames"].items():
    f = dict((k, int(v)) for k, v in _FIELD.findall(row))
    frames[i] = loc.get(f.get("file_location_id"), ("", "", 0))
    parent[i] = f.get("parent_frame_id", 0)
  out = {}
  for i in frames:
    chain, j, seen = [], i, set()
    while j in frames and j not in seen:
      seen.add(j)
      chain.append(frames[j])
      j = parent[j]
    out[i] = chain
  return out


def model_site(chain: list[tuple[str, str, int]], package: str = "vid2world_jax") -> str:
  """``file.py:function`` of the innermost frame inside ``package`` ("" when none)."""
  for file, fn, _ in chain:
    if package in file:
      return f"{file.rsplit('/', 1)[-1]}:{fn}"
  return ""


def parse_hlo(hlo_text: str) -> tuple[dict, dict]:
  """``(computations, instructions)``: computation name -> list of instruction names; instruction name ->
  ``{"op", "calls": [...], "batch_dot": bool, "source": file or ""}``."""
  comps: dict[str, list[str]] = {}
  instrs: dict[str, dict] = {}
  current = None
  for line in hlo_text.splitlines():
    m = _COMP_START.match(line.strip()) if current is None else None
    if m:
      current = m.group(1)
      comps[current] = []
      continue
    if line.strip() == "}":
      current = None
      continue
    if current is None:
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, op, rest = m.groups()
    src = _SRC.search(rest)
    frame = _FRAME.search(rest)
    instrs[name] = {"op": op, "calls": _CALLS.findall(rest), "source": src.group(1) if src else "",
                    "frame": int(frame.group(1)) if frame else 0,
                    "batch_dot": op == "dot" and "lhs_batch_dims={" in rest and "lhs_batch_dims={}" not in rest}
    comps[current].append(name)
  return comps, instrs


def _ops_under(name: str, comps: dict, instrs: dict, seen=None) -> list[dict]:
  """The instruction ``name`` and, for a fusion / call, every instruction of the computations it calls."""
  seen = set() if seen is None else seen
  ins = instrs.get(name)
  if ins is None:
    return []
  out = [ins]
  for c in ins["calls"]:
    if c in seen:
      continue
    seen.add(c)
    for sub in comps.get(c, []):
      out.extend(_ops_under(sub, comps, instrs, seen))
  return out


def kind_of_ops(ops: list[dict]) -> str:
  """Kind of an executed instruction from the opcodes it runs (its own and, for a fusion, the fused ones)."""
  names = {o["op"] for o in ops}
  if "convolution" in names:
    return "convolution"
  if "dot" in names:
    return "attention matmul" if any(o["batch_dot"] for o in ops if o["op"] == "dot") else "linear matmul"
  if "reduce" in names and "exponential" in names:
    return "softmax"
  if "reduce" in names or "reduce-window" in names:
    return "normalisation"
  if names & _ACTIVATION:
    return "activation"
  compute = names - _LAYOUT - {"fusion"}
  if not compute:
    return "layout / copy"
  if compute <= _CONTROL:
    return "other"
  return "elementwise"


def hlo_kinds(hlo_text: str) -> dict[str, tuple[str, str]]:
  """Instruction name -> ``(kind, site)`` for every instruction of the module; site: ``file.py:function`` of the
  model code that emitted its first op with one (``model_site``), or the metadata's source file."""
  comps, instrs = parse_hlo(hlo_text)
  frames = stack_frames(hlo_text)
  out = {}
  for name in instrs:
    ops = _ops_under(name, comps, instrs)
    sites = [model_site(frames.get(o["frame"], [])) for o in ops]
    src = next((s for s in sites if s), "") or next((o["source"] for o in ops if o["source"]), "")
    out[name] = (kind_of_ops(ops), src)
  return out


_TORCH = {
    "convolution": ("conv", "convolution", "mkldnn_convolution", "slow_conv"),
    "attention matmul": ("bmm", "baddbmm", "einsum", "scaled_dot_product", "_flash_attention"),
    "linear matmul": ("addmm", "aten::mm", "linear", "matmul"),
    "softmax": ("softmax",),
    "normalisation": ("group_norm", "layer_norm", "batch_norm", "aten::mean", "aten::var", "aten::std"),
    "activation": ("gelu", "silu", "sigmoid", "tanh", "erf"),
    "layout / copy": ("copy_", "clone", "contiguous", "aten::cat", "permute", "transpose", "aten::view", "reshape",
                      "_to_copy", "aten::to", "expand", "repeat", "empty", "aten::t", "as_strided", "unsqueeze",
                      "squeeze", "slice", "select", "chunk", "split", "flatten", "aten::pad", "constant_pad",
                      "unflatten", "aten::stack", "narrow", "zeros", "fill_", "resize_", "aten::detach", "alias",
                      "unsafe_view", "_reshape_alias", "aten::index", "lift_fresh"),
}


def torch_kind(name: str) -> str:
  """Kind of a ``torch.profiler`` op name (``aten::...``)."""
  n = name.lower()
  if not n.startswith("aten::"):
    return "other"
  n = "aten::" + n[len("aten::"):].lstrip("_")   # aten::_softmax -> aten::softmax
  for kind, keys in _TORCH.items():
    if any((k in n) if k.startswith("aten::") or "_" in k else (n == f"aten::{k}" or n.startswith(f"aten::{k}"))
           for k in keys):
      return kind
  return "elementwise"


def table(times: dict[str, float]) -> list[tuple[str, float, float]]:
  """``[(kind, seconds, share)]`` in ``KINDS`` order (kinds with no time left out)."""
  total = sum(times.values()) or 1.0
  return [(k, times[k], times[k] / total) for k in KINDS if times.get(k, 0.0) > 0]


def sum_by(events, key) -> dict:
  """Sums ``events`` (``(name, seconds)``) by ``key(name)``."""
  out = collections.defaultdict(float)
  for name, sec in events:
    out[key(name)] += sec
  return dict(out)
