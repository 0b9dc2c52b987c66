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
