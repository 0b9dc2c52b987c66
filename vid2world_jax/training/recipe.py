"""A generic stage runner: a recipe is a list of named stages in the config, run in order, each cached.

  config.job = "recipe"
  config.recipe.stages = ("pretrain", "causalize", "finetune", "evaluate", "report")   # order of execution
  config.recipe.fns = {"pretrain": "my_project.stages:PRETRAIN", ...}                  # name -> "module:attr"
  config.recipe.prepare = "my_project.stages:prepare_config"                          # optional, "" = none

Every value is plain data (import paths), so the trainer (``training.jobs``) dispatches to ``run`` without importing any recipe's
code. An entry of ``fns`` names either a ``Stage`` (a function plus the file its output is cached in) or a plain
function (cached in ``<workdir>/<name>/output``). Outputs are cached in folders in non-executable formats
(``tree_store``: JSON structure, npz arrays, orbax for model parameters); a pickle is never written or loaded.
A stage function is called as ``fn(cfg, ctx)`` with a
``Context``: the workdir and the outputs of the earlier stages (``ctx.outputs[name]``). A stage whose cache file
exists is not run again (its output is loaded); an output of ``None`` (a stage that does nothing under this
config) is not cached. Each stage is timed (wall and process-CPU seconds, ``ctx.timing`` / ``ctx.cpu``), cached
loads included. ``prepare(cfg) -> cfg`` completes and checks the config before any stage runs (a ``ValueError``
there is a config error).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage function ``fn(cfg, ctx) -> output`` and where its output is cached (relative to the workdir;
  None = never cached: the stage runs every time). ``label`` names it in the log lines (default: the name)."""
  fn: Callable[[Any, "Context"], Any]
  output: str | None
  label: str = ""


@dataclasses.dataclass
class Context:
  """What a stage sees: the workdir, the earlier stages' outputs and their timings."""
  workdir: str
  outputs: dict = dataclasses.field(default_factory=dict)
  timing: dict = dataclasses.field(default_factory=dict)   # stage -> wall seconds
  cpu: dict = dataclasses.field(default_factory=dict)      # stage -> process CPU seconds (fair on a loaded machine)
  wall0: float = dataclasses.field(default_factory=time.time)
  cpu0: float = dataclasses.field(default_factory=time.process_time)


def log(msg: str) -> None:
  print(f"[recipe] {msg}", flush=True)


def resolve(path: str) -> Any:
  """``"package.module:attr"`` -> the object (``attr`` may be dotted)."""
  if ":" not in path:
    raise ValueError(f"a recipe entry must be 'module:attr', got {path!r}")
  mod, attr = path.split(":", 1)
  obj = importlib.import_module(mod)
  for a in attr.split("."):
    obj = getattr(obj, a)
  return obj


def save(path: str, obj) -> None:
  """``obj`` cached in the folder ``path`` (atomic: an interrupted save never leaves a half-written cache)."""
  from vid2world_jax import tree_store  # pylint: disable=import-outside-toplevel
  if path.endswith(".pkl"):
    raise ValueError(f"stage outputs are folders in non-executable formats, not pickles: {path!r}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tree_store.save(path, obj)


def load(path: str):
  from vid2world_jax import tree_store  # pylint: disable=import-outside-toplevel
  return tree_store.load(path)


def cached(path: str, fn: Callable[[], Any], label: str = "") -> Any:
  """``fn()`` cached in the folder ``path`` (loaded when it exists; a None result is not saved)."""
  from vid2world_jax import tree_store  # pylint: disable=import-outside-toplevel
  if tree_store.exists(path):
    log(f"stage {label or os.path.basename(path)}: cached {path}")
    return load(path)
  out = fn()
  if out is not None:
    save(path, out)
  return out


def stages(cfg) -> list[tuple[str, Stage]]:
  """The configured stages in order, resolved (errors name the stage)."""
  r = cfg.recipe
  fns = r.fns.to_dict() if hasattr(r.fns, "to_dict") else dict(r.fns)
  out = []
  for name in r.stages:
    if name not in fns:
      raise ValueError(f"recipe stage {name!r} has no entry in config.recipe.fns (known: {sorted(fns)})")
    try:
      obj = resolve(fns[name])
    except (ImportError, AttributeError) as e:
      raise ValueError(f"recipe stage {name!r}: cannot import {fns[name]!r}: {e}") from None
    if not isinstance(obj, Stage):
      if not callable(obj):
        raise ValueError(f"recipe stage {name!r}: {fns[name]!r} is neither a Stage nor a function")
      obj = Stage(fn=obj, output=os.path.join(name, "output"))
    out.append((name, obj))
  return out


def prepare(cfg):
  """The config after the recipe's ``prepare`` hook (unchanged when there is none)."""
  hook = cfg.recipe.get("prepare", "")
  return resolve(hook)(cfg) if hook else cfg


def run(cfg, workdir: str, *, prepared: bool = False) -> Context:
  """Runs ``cfg.recipe.stages`` in order in ``workdir``; returns the context (outputs and timings)."""
  if not prepared:
    cfg = prepare(cfg)
  plan = stages(cfg)
  os.makedirs(workdir, exist_ok=True)
  ctx = Context(workdir=workdir)
  for name, st in plan:
    t0, c0 = time.time(), time.process_time()
    label = st.label or name
    if st.output is None:
      out = st.fn(cfg, ctx)
    else:
      out = cached(os.path.join(workdir, st.output), lambda st=st: st.fn(cfg, ctx), label)
    ctx.outputs[name] = out
    ctx.timing[name] = time.time() - t0
    ctx.cpu[name] = time.process_time() - c0
  return ctx
