"""Orbax checkpoints of the whole training state + the data-iterator position.

One ``CheckpointManager`` in ``<workdir>/checkpoints`` with three named items per step:
  * ``state``: params, EMA, optimizer state, step, RNG (``StandardSave``; restored straight onto the target
    shardings, so nothing is gathered on one device);
  * ``data``: the iterator position, one JSON file per process (``process_{i}-of-{n}.json``), from any iterator
    with ``get_state() -> dict | bytes`` and ``set_state(...)`` (grain iterators and the synthetic one);
  * ``meta``: the run's config as JSON (process 0).
Saves are asynchronous; keep-last-K is orbax's ``max_to_keep``; ``wait()`` blocks until pending saves commit.

Integrity (README, Reliability): ``Manager`` writes ``<step>/integrity.json`` (sha256 of every file) inside orbax's
commit; ``restore`` verifies it, then restores every item; ``restore_newest_good`` moves a step that fails to
``<step>.corrupt`` (one log line naming the step and the file) and falls back to the previous one. Save failures
(disk full, I/O errors) surface as ``CheckpointWriteError`` (one line: path, errno); ``verify_step(step_dir)``
(raises ``CheckpointCorrupt(step, path, reason)``) is the check for any other loader of a step directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging as std_logging
import json
import os
import re
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from vid2world_jax.storage import integrity
from vid2world_jax import param_tree
from vid2world_jax.storage.integrity import CheckpointCorrupt, verify_step  # noqa: F401 - public API


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


ITEMS = ("state", "data", "meta")
TMP_SUFFIX = ".orbax-checkpoint-tmp"   # orbax's name of a step directory being written


class CheckpointWriteError(RuntimeError):
  """A checkpoint save failed (disk full, permissions, I/O error); message: one line with the path and errno."""

  def __init__(self, step: int, path: str, errno_: int | None, detail: str):
    self.step, self.path, self.errno = step, path, errno_
    code = f"errno {errno_} ({os.strerror(errno_)})" if errno_ else "no errno"
    super().__init__(f"checkpoint save of step {step} failed: {path}: {code}: {' '.join(detail.split())[:300]}")


class NoGoodCheckpoint(RuntimeError):
  """Checkpoints exist but none restores and verifies (message: one line)."""


class Manager(ocp.CheckpointManager):
  """orbax ``CheckpointManager`` that seals every step (``integrity.seal_step``) inside the commit.

  Async saves: orbax's ``post_finalization_callback`` runs in the save thread after every item is written and
  finalized and BEFORE the temporary directory is renamed to ``<step>`` (or, on object stores, before
  ``commit_success.txt``), so a committed step always carries its record and a step whose record could not be
  written is never committed. Synchronous saves (``async_save=False``) seal right after orbax returns.
  """

  def __init__(self, directory: str, *, keep: int, async_save: bool = True, cleanup_tmp: bool = False):
    self._sealing_step = None
    self._async = async_save
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
        cleanup_tmp_directories=cleanup_tmp,   # the run's owner: half-written steps of a killed run are removed
        async_options=ocp.AsyncOptions(post_finalization_callback=self._seal_pending) if async_save else None)
    super().__init__(directory, options=options, item_names=ITEMS)
    _silence_closed_loop_callbacks()   # once per process (the first Manager), never again per Manager

  def _seal_pending(self):
    step = self._sealing_step
    if step is None or jax.process_index() != 0:
      return
    tmp = self.directory / f"{step}{TMP_SUFFIX}"
    integrity.seal_step(tmp if tmp.exists() else self.directory / str(step))

  def save(self, step, *args, **kwargs):   # pylint: disable=arguments-differ
    super().wait_until_finished()   # the previous save's callback must not see the new step
    self._sealing_step = int(step)
    out = super().save(step, *args, **kwargs)
    if not self._async and jax.process_index() == 0:
      integrity.seal_step(self.directory / str(step))
    return out

  def step_dir(self, step: int) -> epath.Path:
    return self.directory / str(step)


def make_manager(workdir: str, *, keep: int, async_save: bool = True, cleanup_tmp: bool = False) -> Manager:
  """The run's checkpoint manager. ``cleanup_tmp``: remove half-written ``<step>.orbax-checkpoint-tmp`` directories
  at start (the trainer only: a reader opening a live run's workdir must not delete the step being written)."""
  return Manager(os.path.join(os.path.abspath(workdir), "checkpoints"), keep=keep, async_save=async_save,
                 cleanup_tmp=cleanup_tmp)


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter, config_json: str) -> bool:
  """Starts an (async) save of ``state`` + iterator position + config at ``step``.

  Raises ``CheckpointWriteError`` (one line: path, errno) when this save or the previous async one failed.
  """
  args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=IteratorSave(data_iter),
                            meta=ocp.args.JsonSave({"config": json.loads(config_json)}))
  pending = getattr(mngr, "_sealing_step", None)
  try:
    with quiet_orbax():
      mngr.wait_until_finished()
  except Exception as e:  # noqa: BLE001 - the previous async save failed (disk full, I/O error, ...)
    raise _write_error(mngr, pending if pending is not None else step, e) from None
  try:
    with quiet_orbax():
      return mngr.save(step, args=args, force=True)
  except Exception as e:  # noqa: BLE001
    raise _write_error(mngr, step, e) from None


def wait(mngr: ocp.CheckpointManager) -> None:
  """Blocks until pending saves are committed; ``CheckpointWriteError`` if one failed."""
  try:
    with quiet_orbax():
      mngr.wait_until_finished()
  except Exception as e:  # noqa: BLE001
    raise _write_error(mngr, getattr(mngr, "_sealing_step", None), e) from None


def _is_closed_loop_callback(exc_type, exc, tb) -> bool:
  """True for orbax/tensorstore's late "Event loop is closed" callbacks (asyncio ``_check_closed``)."""
  if exc_type is not RuntimeError or str(exc) != "Event loop is closed":
    return False
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and tb.tb_frame.f_code.co_name == "_check_closed"


@functools.cache   # installed once per process (the first Manager); later Managers and error paths leave them alone
def _silence_closed_loop_callbacks() -> None:
  """After a failed save or restore, tensorstore completes the remaining I/O futures into orbax's already closed
  asyncio loop; each prints a "RuntimeError: Event loop is closed" traceback (through ``sys.unraisablehook`` or
  ``sys.excepthook``: hundreds of lines burying the real error). Drops exactly those; anything else prints as
  before."""
  prev_hook, prev_unraisable = sys.excepthook, sys.unraisablehook

  def hook(exc_type, exc, tb):
    if not _is_closed_loop_callback(exc_type, exc, tb):
      prev_hook(exc_type, exc, tb)

  def unraisable(u):
    if not _is_closed_loop_callback(u.exc_type, u.exc_value, u.exc_traceback):
      prev_unraisable(u)

  sys.excepthook, sys.unraisablehook = hook, unraisable
  std_logging.getLogger("asyncio").addFilter(_drop_orbax_orphan_tasks)


def _drop_orbax_orphan_tasks(record) -> bool:
  """Drops asyncio's "Task / _GatheringFuture exception was never retrieved" records of orbax's writes that failed
  after the first failure (re-raised to ``wait``/``save``, reported there in one line); keeps all others."""
  msg, tb = record.getMessage(), (record.exc_info[2] if record.exc_info else None)
  files = []
  while tb is not None:
    files, tb = files + [tb.tb_frame.f_code.co_filename], tb.tb_next
  return not ("exception was never retrieved" in msg.split("\n", 1)[0] and "orbax" in msg + "".join(files))


@contextlib.contextmanager
def quiet_orbax():
  """orbax logs a failed save thread / restore with its traceback (``logging.exception``) before raising; the
  caller reports the error in one line instead."""
  quiet = [std_logging.getLogger(n) for n in ("absl", "orbax", "asyncio")]
  levels = [q.level for q in quiet]
  for q in quiet:
    q.setLevel(std_logging.CRITICAL)
  try:
    yield
  except BaseException:
    _silence_closed_loop_callbacks()
    raise
  finally:
    for q, lv in zip(quiet, levels):
      q.setLevel(lv)


def close_quietly(mngr: ocp.CheckpointManager | None) -> None:
  """Stops orbax's background threads without raising or printing their tracebacks (error paths)."""
  if mngr is None:
    return
  _silence_closed_loop_callbacks()
  with quiet_orbax():
    try:
      mngr.close()
    except BaseException:  # noqa: BLE001 - the error was already reported in one line by the caller
      pass


def _write_error(mngr, step, exc: BaseException) -> CheckpointWriteError:
  """The one-line error of a failed save: the OSError's path and errno when there is one in the chain."""
  err_no, path = None, None
  seen, e = set(), exc
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno:
      err_no, path = e.errno, e.filename
      break
    e = e.__cause__ or e.__context__
  text = f"{type(exc).__name__}: {exc}"
  if err_no is None:
    m = re.search(r"\[Errno (\d+)\]|errno[ =:]+(\d+)", text, re.I)
    if m:
      err_no = int(m.group(1) or m.group(2))
    else:
      for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
        if os.strerror(code).lower() in text.lower():
          err_no = code
          break
  if path is None:
    m = re.search(re.escape(str(mngr.directory)) + r"/[^\s'\"\]\),]*", text)
    path = m.group(0) if m else str(mngr.directory / f"{step}{TMP_SUFFIX}")
  return CheckpointWriteError(-1 if step is None else int(step), str(path), err_no, text)


def restore_verified(path, restore_fn, *, what: str = "checkpoint", verify: bool = True):
  """``restore_fn()`` for an orbax checkpoint directory outside a manager (a converted ``init_from`` checkpoint,
  a training step's ``<step>/state`` item, e.g. for inference): verified first when it carries an integrity record (``integrity.json``; without one a
  warning says it is unverified); any failure -> ``CheckpointCorrupt`` in one line, orbax's threads quiet.
  ``verify=False``: the caller has just verified the same path (a second read of one checkpoint)."""
  path = epath.Path(path)
  step_dir = path.parent if path.name in ITEMS and (path.parent / integrity.INTEGRITY_FILE).exists() else path
  if not verify:
    pass
  elif (step_dir / integrity.INTEGRITY_FILE).exists():   # a training step's item: the whole step is verified
    verify_step(step_dir, integrity.step_of(step_dir) if step_dir != path else None)
  else:
    logging.warning("%s %s has no integrity record (written before records existed): not verified", what, path)
  try:
    with quiet_orbax():
      return restore_fn()
  except Exception as e:  # noqa: BLE001 - tensorstore / orbax errors: one line
    _silence_closed_loop_callbacks()
    raise CheckpointCorrupt(None, path, f"{what} does not restore ({type(e).__name__}: {e})") from None


def latest_step(mngr: ocp.CheckpointManager) -> int | None:
  return mngr.latest_step()


def last_good_step(mngr: ocp.CheckpointManager) -> int | None:
  """The newest step that verifies against its integrity record (pending saves must be finished), or None."""
  for step in sorted(mngr.all_steps(), reverse=True):
    if integrity.is_sealed_and_intact(mngr.directory / str(step)):
      return step
  return None


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, data_iter):
  """Verifies ``step`` then restores each item (state onto ``abstract_state``'s shardings, the iterator, the
  config); any failure raises ``CheckpointCorrupt`` naming the step and the file (or item directory)."""
  step_dir = mngr.directory / str(step)
  verify_step(step_dir, step)
  items = (("state", ocp.args.StandardRestore(abstract_state)), ("data", IteratorRestore(data_iter)),
           ("meta", ocp.args.JsonRestore()))
  out = {}
  for name, arg in items:
    try:
      with quiet_orbax():
        out[name] = mngr.restore(step, args=ocp.args.Composite(**{name: arg}))[name]
    except Exception as e:  # noqa: BLE001 - tensorstore / json / orbax errors: one line naming the file
      text = f"{type(e).__name__}: {e}"
      m = re.search(re.escape(str(step_dir)) + r"/[^\s'\"\]\),]+", text)
      raise CheckpointCorrupt(step, m.group(0) if m else step_dir / name, f"{name} does not restore ({text})") from None
  return out["state"]


def restore_newest_good(mngr: ocp.CheckpointManager, abstract_state, data_iter, *, log=None):
  """``(step, state)`` of the newest step that verifies and restores, or ``(None, None)`` when there is none at
  all. Each step that fails is reported in one line (``log``, default absl warning) and moved aside to
  ``<step>.corrupt``; ``NoGoodCheckpoint`` when steps existed but every one failed."""
  log = log or logging.warning
  failed = []
  while True:
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
      break
    step = steps[0]
    try:
      return step, restore(mngr, step, abstract_state, data_iter)
    except CheckpointCorrupt as e:
      failed.append(step)
      if jax.process_index() == 0:
        moved = integrity.quarantine(mngr.directory / str(step))
      else:
        moved = f"{step}{integrity.CORRUPT_SUFFIX}"
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"v2w_quarantine_{step}")
      log("%s; moved aside to %s, trying the previous checkpoint", e, moved)
      mngr.reload()
  quarantined = sorted(p.name for p in mngr.directory.iterdir() if integrity.CORRUPT_SUFFIX in p.name)
  if quarantined and not failed:
    raise NoGoodCheckpoint(f"no checkpoint in {mngr.directory} restores and verifies, only damaged ones moved aside "
                           f"({', '.join(quarantined[:5])}); to start from scratch move them out of that directory")
  if failed:
    raise NoGoodCheckpoint(f"no checkpoint in {mngr.directory} restores and verifies (steps {failed} were moved "
                           f"aside as <step>{integrity.CORRUPT_SUFFIX}); see README, Reliability, to recover")
  return None, None


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


def restore_params(state_dir: str, abstract_params, *, use_ema: bool = True):
  """The trainable parameters of a trainer checkpoint's ``state`` item, nothing else (no optimizer state).

  ``abstract_params``: the model's parameter pure dict as ``jax.ShapeDtypeStruct`` leaves carrying the target
  dtype (the stored float32 values are cast on restore, e.g. to bfloat16) and sharding. Restores the ``ema``
  entry when ``use_ema`` and the checkpoint has one, else ``params``. Returns ``(params, name of the entry)``.
  The step is verified against its integrity record first (``restore_verified``): damage is one
  ``CheckpointCorrupt`` line naming the file, never silently restored values."""
  ckptr = ocp.PyTreeCheckpointer()
  meta = restore_verified(state_dir, lambda: ckptr.metadata(state_dir).item_metadata, what="checkpoint")
  stored = meta.tree if hasattr(meta, "tree") else meta
  name = "ema" if use_ema and "ema" in stored else "params"
  if name not in stored:
    raise ValueError(f"{state_dir} holds no 'params' (keys: {sorted(stored)})")
  param_tree.check_params_tree(abstract_params, stored[name], f"checkpoint {state_dir} parameters")
  target = {name: _str_keys(abstract_params)}
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, dtype=x.dtype), target)
  out = restore_verified(state_dir, lambda: ckptr.restore(
      state_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)),
      what="checkpoint", verify=False)
  return _rekey_like(abstract_params, out[name]), name
