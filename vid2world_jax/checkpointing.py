"""Orbax checkpoints of the whole training state + the data-iterator position.

One ``CheckpointManager`` in ``<workdir>/checkpoints`` with three named items per step:
  * ``state``: params, EMA, optimizer state, step, RNG (``StandardSave``; restored straight onto the target
    shardings, so nothing is gathered on one device);
  * ``data``: the iterator position, one JSON file per process (``process_{i}-of-{n}.json``), from any iterator
    with ``get_state() -> dict | bytes`` and ``set_state(...)`` (grain iterators and the synthetic one);
  * ``meta``: the run's config as JSON (process 0).
Saves are asynchronous; keep-last-K is orbax's ``max_to_keep``; ``wait()`` blocks until pending saves commit.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


class IteratorHandler(ocp.CheckpointHandler):
  """Per-process iterator state as JSON (the position of each host's data shard)."""

  def save(self, directory: epath.Path, args: "IteratorSave"):
    state = args.item.get_state()
    if isinstance(state, bytes):
      payload = {"bytes": state.decode()}
    else:
      payload = {"state": state}
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    (epath.Path(directory) / name).write_text(json.dumps(payload))

  def restore(self, directory: epath.Path, args: "IteratorRestore"):
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    path = epath.Path(directory) / name
    if not path.exists():
      raise FileNotFoundError(f"no data-iterator state {path} (was the run saved with another process count?)")
    payload = json.loads(path.read_text())
    state = payload["bytes"].encode() if "bytes" in payload else payload["state"]
    args.item.set_state(state)
    return args.item

  def metadata(self, directory):
    return None

  def structure(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(IteratorHandler, for_save=True)
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(IteratorHandler, for_restore=True)
@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
  item: Any


def make_manager(workdir: str, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                         create=True)
  return ocp.CheckpointManager(directory, options=options, item_names=("state", "data", "meta"))


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter, config_json: str) -> bool:
  """Starts an (async) save of ``state`` + iterator position + config at ``step``."""
  return mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=IteratorSave(data_iter),
      meta=ocp.args.JsonSave({"config": json.loads(config_json)})), force=True)


def latest_step(mngr: ocp.CheckpointManager) -> int | None:
  return mngr.latest_step()


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, data_iter):
  """Restores onto ``abstract_state`` (ShapeDtypeStructs carrying the target shardings); sets the iterator."""
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=IteratorRestore(data_iter)))
  return out["state"]


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


# ------------------------------------------------------------------------------------------------------------
# Inference: the trainable parameters only.

def _str_keys(tree):
  """orbax stores every dict key as a string (nnx pure dicts use ints for list entries)."""
  if isinstance(tree, dict):
    return {str(k): _str_keys(v) for k, v in tree.items()}
  return tree


def _rekey_like(want, got):
  if isinstance(want, dict):
    return {k: _rekey_like(v, got[str(k)]) for k, v in want.items()}
  return got


def _check_against(want, have, where: str, path: str = "") -> None:
  """Clear one-line errors when the stored tree does not fit the model (wrong config for this checkpoint)."""
  if isinstance(want, dict):
    if not isinstance(have, dict):
      raise ValueError(f"checkpoint {where}: {path or '/'} is not a dict")
    missing = [str(k) for k in want if str(k) not in have]
    if missing:
      raise ValueError(f"checkpoint {where} lacks parameter {path}/{missing[0]} (wrong config for this checkpoint?)")
    extra = sorted(set(have) - {str(k) for k in want})
    if extra:
      raise ValueError(f"checkpoint {where} has parameters the config's model lacks: {path}/{extra[:5]}")
    for k, v in want.items():
      _check_against(v, have[str(k)], where, f"{path}/{k}")
    return
  if tuple(have.shape) != tuple(want.shape):
    raise ValueError(f"checkpoint {where}: {path} has shape {tuple(have.shape)}, the config's model "
                     f"{tuple(want.shape)}")


def restore_params(state_dir: str, abstract_params, *, use_ema: bool = True):
  """The trainable parameters of a trainer checkpoint's ``state`` item, nothing else (no optimizer state).

  ``abstract_params``: the model's parameter pure dict as ``jax.ShapeDtypeStruct`` leaves carrying the target
  dtype (the stored float32 values are cast on restore, e.g. to bfloat16) and sharding. Restores the ``ema``
  entry when ``use_ema`` and the checkpoint has one, else ``params``. Returns ``(params, name of the entry)``."""
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(state_dir).item_metadata
  stored = meta.tree if hasattr(meta, "tree") else meta
  name = "ema" if use_ema and "ema" in stored else "params"
  if name not in stored:
    raise ValueError(f"{state_dir} holds no 'params' (keys: {sorted(stored)})")
  _check_against(abstract_params, stored[name], state_dir)
  target = {name: _str_keys(abstract_params)}
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, dtype=x.dtype), target)
  out = ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                             partial_restore=True))
  return _rekey_like(abstract_params, out[name]), name
