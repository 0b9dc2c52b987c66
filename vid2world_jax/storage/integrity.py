"""Integrity records of checkpoint directories: seal (sha256 of every file) after writing, verify before trusting.

  seal_step(step_dir)          writes ``<step_dir>/integrity.json``: size and sha256 of every other file under it
  verify_step(step_dir)        None, or raises ``CheckpointCorrupt(step, path, reason)`` naming the first bad file
  quarantine(step_dir)         renames ``<step>`` to ``<step>.corrupt`` (never deletes; ``.corrupt-2`` ... if taken)

A directory without ``integrity.json`` is *unsealed* and does not verify: the trainer seals each step inside orbax's
commit (``checkpointing.Manager``), so a committed training step always carries its record; only checkpoints written
before records existed (or by other tools) lack one; ``seal_step`` blesses such a directory after the user has
checked it (README, Reliability). Pure file I/O (``etils.epath``: local paths and gs:// alike); no JAX, no orbax.
"""

from __future__ import annotations

import hashlib
import json
import re

from etils import epath

INTEGRITY_FILE = "integrity.json"
CORRUPT_SUFFIX = ".corrupt"
# Not recorded: the record itself, and the two files orbax rewrites when it commits the step (after the record
# is written): the commit marker and the step metadata (commit timestamp). Damage to those is caught by restore.
_SKIP = (INTEGRITY_FILE, "commit_success.txt", "_CHECKPOINT_METADATA")
_CHUNK = 8 << 20


class CheckpointCorrupt(Exception):
  """A checkpoint step that does not restore or does not match its integrity record (message: one line)."""

  def __init__(self, step: int | None, path: str, reason: str):
    self.step, self.path, self.reason = step, str(path), " ".join(str(reason).split())[:400]
    where = "checkpoint" if step is None else f"checkpoint step {step}"
    super().__init__(f"{where} is damaged: {self.path}: {self.reason}")


def step_of(step_dir) -> int | None:
  """The step number of ``.../<step>`` (or an orbax ``<step>.orbax-checkpoint-tmp`` directory), else None."""
  m = re.match(r"^(\d+)", epath.Path(step_dir).name)
  return int(m.group(1)) if m else None


def _files(root: epath.Path, rel: str = ""):
  for p in sorted(root.iterdir(), key=lambda q: q.name):
    r = f"{rel}{p.name}"
    if p.is_dir():
      yield from _files(p, r + "/")
    elif r not in _SKIP:
      yield r, p


def file_digest(path) -> tuple[int, str]:
  """(size in bytes, sha256 hex) of one file, streamed in 8 MiB chunks."""
  h, n = hashlib.sha256(), 0
  with epath.Path(path).open("rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
      n += len(chunk)
  return n, h.hexdigest()


def seal_step(step_dir) -> dict:
  """Writes the integrity record of ``step_dir`` (every file but the record) and returns it."""
  root = epath.Path(step_dir)
  files = {}
  for rel, p in _files(root):
    size, digest = file_digest(p)
    files[rel] = {"size": size, "sha256": digest}
  record = {"version": 1, "algorithm": "sha256", "files": files}
  tmp = root / (INTEGRITY_FILE + ".tmp")
  tmp.write_text(json.dumps(record, indent=0, sort_keys=True))
  tmp.rename(root / INTEGRITY_FILE)
  return record


def verify_step(step_dir, step: int | None = None) -> None:
  """Raises ``CheckpointCorrupt`` unless every file of the record exists with its recorded size and sha256."""
  root = epath.Path(step_dir)
  step = step_of(root) if step is None else step
  if not root.is_dir():
    raise CheckpointCorrupt(step, root, "checkpoint directory not found")
  rec_path = root / INTEGRITY_FILE
  if not rec_path.exists():
    raise CheckpointCorrupt(step, rec_path, "no integrity record (unsealed: written before integrity records "
                            "or by another tool; see README, Reliability)")
  try:
    record = json.loads(rec_path.read_text())
    files = record["files"]
    if record.get("algorithm") != "sha256" or not isinstance(files, dict) or not files:
      raise ValueError("unknown algorithm or empty file list")
  except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
    raise CheckpointCorrupt(step, rec_path, f"unreadable integrity record ({type(e).__name__}: {e})") from None
  for item in sorted({r.split("/")[0] for r in files if "/" in r}):   # a removed item: named as such
    if not (root / item).is_dir():
      raise CheckpointCorrupt(step, root / item, "item directory missing")
  for rel in sorted(files, key=lambda r: -int(files[r]["size"])):   # the largest (array data) first
    want = files[rel]
    p = root / rel
    if not p.exists():
      raise CheckpointCorrupt(step, p, "file missing")
    try:
      size, digest = file_digest(p)
    except OSError as e:
      raise CheckpointCorrupt(step, p, f"unreadable ({e})") from None
    if size != int(want["size"]):
      raise CheckpointCorrupt(step, p, f"size {size} bytes, recorded {want['size']} (truncated or overwritten)")
    if digest != want["sha256"]:
      raise CheckpointCorrupt(step, p, "sha256 differs from the integrity record (damaged contents)")


def is_sealed_and_intact(step_dir) -> bool:
  try:
    verify_step(step_dir)
    return True
  except CheckpointCorrupt:
    return False


def quarantine(step_dir) -> epath.Path:
  """Moves ``step_dir`` aside as ``<name>.corrupt`` (``.corrupt-2``, ... when taken); returns the new path."""
  src = epath.Path(step_dir)
  dst, k = src.parent / (src.name + CORRUPT_SUFFIX), 1
  while dst.exists():
    k += 1
    dst = src.parent / f"{src.name}{CORRUPT_SUFFIX}-{k}"
  src.rename(dst)
  return dst
