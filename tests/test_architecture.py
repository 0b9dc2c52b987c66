"""The project's import graph: no cycle among its modules, and the layers import downwards only.

Every import is walked: module-level and function-local ``import`` / ``from ... import`` statements (``__main__``
blocks included) and ``importlib.import_module("...")`` / ``import_module("...")`` calls with a literal string.
"""

from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = "vid2world_jax"

# Layers that sit below the trainer and the inference stack (and their packages' prefixes above them).
LOW_LAYERS = (f"{PKG}.models", f"{PKG}.diffusion", f"{PKG}.data")
HIGH_LAYERS = (f"{PKG}.training", f"{PKG}.inference", f"{PKG}.demo", f"{PKG}.play")
# Command-line modules: run with ``python -m``, imported by nothing (their reusable parts live elsewhere).
# (``rollout`` is a shim that runs ``rollout_cli``: a command line may hand over to another one.)
CLI_MODULES = (f"{PKG}.train", f"{PKG}.rollout", f"{PKG}.rollout_cli", f"{PKG}.evaluate", f"{PKG}.play.__main__",
               f"{PKG}.data.convert_videos", f"{PKG}.data.encode_latents", f"{PKG}.demo.ablations",
               f"{PKG}.demo.export_pretrained")


def _modules() -> dict[str, str]:
  out = {}
  root = os.path.join(REPO, PKG)
  for d, dirs, files in os.walk(root):
    dirs[:] = [x for x in dirs if x != "__pycache__"]
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(d, f), REPO)[:-3].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        out[".".join(rel)] = os.path.join(d, f)
  return out


def _is_package(path: str) -> bool:
  return os.path.basename(path) == "__init__.py"


def _resolve(name: str, modules: dict) -> str | None:
  """The longest project module that ``name`` (dotted) names or lies in."""
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    cand = ".".join(parts[:i])
    if cand in modules:
      return cand
  return None


def import_edges(modules: dict | None = None) -> dict[str, set[str]]:
  modules = modules or _modules()
  edges = {m: set() for m in modules}
  for mod, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    pkg = mod if _is_package(path) else mod.rpartition(".")[0]
    for node in ast.walk(tree):
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          up = pkg.split(".")
          up = up[:len(up) - (node.level - 1)]
          base = ".".join(up + ([base] if base else []))
        for a in node.names:   # `from pkg import sub` imports the submodule sub
          full = f"{base}.{a.name}"
          targets.append(full if full in modules else base)
      elif isinstance(node, ast.Call):
        fn = node.func
        fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
        if fname == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
          targets = [node.args[0].value]
      for t in targets:
        if t.split(".")[0] != PKG:
          continue
        r = _resolve(t, modules)
        if r is not None and r != mod:
          edges[mod].add(r)
  return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return out


def _within(mod: str, prefixes) -> bool:
  return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_walker_sees_function_local_and_import_module_imports():
  edges = import_edges()
  assert f"{PKG}.data.pipeline" in edges[f"{PKG}.data"] or f"{PKG}.data.simulator" in edges[f"{PKG}.data"]
  assert f"{PKG}.models.frame_cache" in edges[f"{PKG}.models.unet"]


def test_no_import_cycle_among_project_modules():
  cycles = find_cycles(import_edges())
  assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_low_layers_import_no_high_layer():
  bad = [(m, t) for m, ts in import_edges().items() if _within(m, LOW_LAYERS)
         for t in ts if _within(t, HIGH_LAYERS)]
  assert not bad, bad


def test_trainer_and_inference_do_not_import_each_other_or_above():
  """training/ never imports inference/ (sample rollouts are injected evaluators); inference/ never imports
  training/; neither imports demo/ or play/."""
  bad = []
  for m, ts in import_edges().items():
    for t in ts:
      if _within(m, (f"{PKG}.training",)) and _within(t, (f"{PKG}.inference", f"{PKG}.demo", f"{PKG}.play")):
        bad.append((m, t))
      if _within(m, (f"{PKG}.inference",)) and _within(t, (f"{PKG}.training", f"{PKG}.demo", f"{PKG}.play")):
        bad.append((m, t))
  assert not bad, bad


def test_nothing_imports_demo_or_a_command_line_module():
  bad = []
  for m, ts in import_edges().items():
    for t in ts:
      if _within(t, (f"{PKG}.demo",)) and not _within(m, (f"{PKG}.demo",)):
        bad.append((m, t))
      if t in CLI_MODULES and m not in CLI_MODULES:
        bad.append((m, t))
  assert not bad, bad


def test_no_module_reads_another_modules_protected_members():
  """``mod._name`` where ``mod`` is another project module (imported under any name): none."""
  modules = _modules()
  bad = []
  for mod, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    pkg = mod if _is_package(path) else mod.rpartition(".")[0]
    bound = {}
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for a in node.names:
          if a.asname and a.name in modules:
            bound[a.asname] = a.name
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          up = pkg.split(".")
          base = ".".join(up[:len(up) - (node.level - 1)] + ([base] if base else []))
        for a in node.names:
          if f"{base}.{a.name}" in modules:
            bound[a.asname or a.name] = f"{base}.{a.name}"
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
          and node.attr.startswith("_") and not node.attr.startswith("__") and bound[node.value.id] != mod):
        bad.append(f"{mod}: {node.value.id}.{node.attr}")
  assert not bad, bad
