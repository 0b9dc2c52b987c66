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
LOW_LAYERS = (f"{PKG}.models", f"{PKG}.diffusion", f"{PKG}.data", f"{PKG}.storage", f"{PKG}.conversion",
              f"{PKG}.metrics")
HIGH_LAYERS = (f"{PKG}.training", f"{PKG}.inference", f"{PKG}.demo", f"{PKG}.play")
# Command-line modules: run with ``python -m``, imported by nothing (their reusable parts live elsewhere).
# The top-level ``rollout``, ``rollout_cli``, ``evaluate`` and ``policy_eval`` are shims that keep the documented
# command lines and hand over to the command line in its layer (``inference.rollout_cli`` ...).
SHIMS = (f"{PKG}.rollout", f"{PKG}.rollout_cli", f"{PKG}.evaluate", f"{PKG}.policy_eval")
CLI_MODULES = SHIMS + (f"{PKG}.train", f"{PKG}.inference.rollout_cli", f"{PKG}.play.__main__",
                       f"{PKG}.data.convert_videos", f"{PKG}.data.encode_latents", f"{PKG}.demo.ablations",
                       f"{PKG}.demo.export_pretrained")
# The top level holds only these modules beside the packages (shared utilities and command lines).
TOP_LEVEL = {"__init__", "host_memory", "logging_utils", "param_tree", "pixels", "run_flags", "sharding", "train",
             "tree_store", "user_input", "video_io", "world_model", "rollout", "rollout_cli", "evaluate", "policy_eval"}


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


def test_shared_user_input_rules_import_no_data_layer():
  """user_input is the floor every entry point stands on (data included): it must not import the layers that use
  it (data's BadDataError is a UserInputError, so user_errors() needs no import of data)."""
  edges = import_edges()
  bad = sorted(t for t in edges[f"{PKG}.user_input"] if not t.startswith(f"{PKG}.storage"))
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


def test_shims_only_hand_over_to_their_command_line():
  """A top-level shim holds one import of ``main`` from the module it hands over to and a ``__main__`` block that
  runs that module's command line; no library code imports it (``test_nothing_imports_demo_or_a_command_line_module``)."""
  modules = _modules()
  edges = import_edges(modules)
  for shim in SHIMS:
    with open(modules[shim]) as f:
      tree = ast.parse(f.read())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert len(body) == 2 and isinstance(body[0], ast.ImportFrom) and [a.name for a in body[0].names] == ["main"], shim
    assert isinstance(body[1], ast.If) and "__main__" in ast.unparse(body[1].test), shim
    assert len(edges[shim]) == 1, (shim, edges[shim])


def test_top_level_holds_only_shared_utilities_and_command_lines():
  root = os.path.join(REPO, PKG)
  top = {f[:-3] for f in os.listdir(root) if f.endswith(".py")}
  assert top == TOP_LEVEL, sorted(top ^ TOP_LEVEL)


def test_models_and_storage_sit_at_the_bottom():
  """``models/`` imports only itself and ``sharding`` (its parameter names live in ``models.torch_names``, which
  ``conversion/`` imports: the two packages do not import each other); ``storage/`` only itself and
  ``param_tree``."""
  allowed = {f"{PKG}.models": (f"{PKG}.models", f"{PKG}.sharding"),
             f"{PKG}.storage": (f"{PKG}.storage", f"{PKG}.param_tree")}
  bad = [(m, t) for m, ts in import_edges().items() for pkg, ok in allowed.items() if _within(m, (pkg,))
         for t in ts if not _within(t, ok)]
  assert not bad, bad
