"""Fuzz corpus, checkpoint folders users point the tools at: a converted checkpoint (convert_torch_weights.py's
``config.json`` + ``params/``, read by init_from) and a training step (``--checkpoint`` of the rollout CLI and
the play page: ``state/`` + ``meta/metadata``), each file damaged by the seeded mutator (tests/_fuzz.py).
Rule (docs/reliability.md): the load succeeds with the same values, or fails with one line naming the folder or
the file (CheckpointCorrupt / UserInputError / FileNotFoundError), never a traceback of orbax or json."""

import json
import os
import shutil

import ml_collections
import numpy as np
import pytest

import _fuzz
from vid2world_jax import inference, user_input
from vid2world_jax.storage import integrity as checkpoint_integrity
from vid2world_jax.conversion import dynamicrafter

PARAMS = {"unet": {("conv", "kernel"): np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                   ("conv", "bias"): np.ones(4, np.float32)}}


def _files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _expect(fn, entry, names):
  """Rule 1: ``fn()`` or a one-line user error naming one of ``names``."""
  try:
    out = fn()
  except user_input.user_errors() as e:
    _fuzz.assert_one_line(e)
    assert any(n in str(e) for n in names), (names, str(e))
    _fuzz.record(entry, "refused")
    return None
  _fuzz.record(entry, "read")
  return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("conv") / "converted")
  dynamicrafter.save_converted(d, "256", {"unet": ml_collections.ConfigDict({"channels": 8})}, PARAMS)
  return d


def test_fuzz_converted_checkpoint_config_json(tmp_path, converted):
  with open(os.path.join(converted, "config.json"), "rb") as f:
    valid = f.read()
  variants = _fuzz.byte_variants(valid, "config.json")
  variants.update({"list": b"[1, 2]", "null": b"null", "nested": b"[" * 100000 + b"]" * 100000,
                   "nan": b'{"variant": NaN}', "utf16": valid.decode().encode("utf-16")})
  for name, data in variants.items():
    d = tmp_path / name
    shutil.copytree(converted, d)
    _fuzz.write_bytes(d, "config.json", data)
    out = _expect(lambda: dynamicrafter.load_converted(str(d)), "init_from config.json", [str(d)])
    if out is not None:
      assert isinstance(out[0], dict)
  os.remove(d / "config.json")
  assert _expect(lambda: dynamicrafter.load_converted(str(d)), "init_from config.json", [str(d)]) is None


def test_fuzz_converted_checkpoint_params_files(tmp_path, converted):
  files = [f for f in _files(os.path.join(converted, "params")) if f != checkpoint_integrity.INTEGRITY_FILE]
  assert files
  for i, rel in enumerate(files):
    with open(os.path.join(converted, "params", rel), "rb") as f:
      data = f.read()
    for name in ("zero_length", "truncated_half", "random_bytes_0", "flipped_bytes_0", "deleted"):
      d = tmp_path / f"{i}_{name}"
      shutil.copytree(converted, d)
      target = d / "params" / rel
      if name == "deleted":
        os.remove(target)
      else:
        target.write_bytes(_fuzz.byte_variants(data, rel)[name])
      out = _expect(lambda: dynamicrafter.load_converted(str(d)), "init_from params/", [str(d)])
      if out is not None:   # damage the record does not cover (orbax's commit files) still restores the values
        np.testing.assert_array_equal(out[1]["unet"]["conv"]["kernel"], PARAMS["unet"][("conv", "kernel")])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  import _rollout_helpers as h
  d = tmp_path_factory.mktemp("run") / "work"
  cfg = h.write_toy_checkpoint(d)
  step = d / "checkpoints" / "5"
  os.makedirs(step / "meta")
  (step / "meta" / "metadata").write_text(json.dumps({"config": cfg.to_dict()}))
  checkpoint_integrity.seal_step(step)
  return d, cfg


def test_fuzz_training_checkpoint_meta_and_state(tmp_path, run_dir):
  src, cfg = run_dir
  meta_rel = os.path.join("checkpoints", "5", "meta", "metadata")
  with open(src / meta_rel, "rb") as f:
    valid = f.read()
  variants = _fuzz.byte_variants(valid, "metadata", n_random=1)
  variants.update({"no_config": b'{"other": 1}', "config_list": b'{"config": [1]}', "list": b"[]"})
  for name, data in variants.items():
    d = tmp_path / f"meta_{name}"
    shutil.copytree(src, d)
    _fuzz.write_bytes(d / "checkpoints" / "5" / "meta", "metadata", data)
    state = inference.find_state_dir(str(d))
    _expect(lambda: inference.read_config(state), "--checkpoint meta/metadata", [str(d)])
  state_files = [f for f in _files(src / "checkpoints" / "5" / "state")]
  r = _fuzz.rng("state")
  picks = [state_files[int(j)] for j in r.choice(len(state_files), size=min(3, len(state_files)), replace=False)]
  for i, rel in enumerate(picks):
    d = tmp_path / f"state_{i}"
    shutil.copytree(src, d)
    target = d / "checkpoints" / "5" / "state" / rel
    target.write_bytes(target.read_bytes()[: max(0, target.stat().st_size // 2)] + b"\x00garbage")
    sess = _expect(lambda: inference.InferenceSession.load(str(d), cfg), "--checkpoint state/", [str(d)])
    assert sess is None   # sealed: any damaged file is named, never restored
  for name in ("empty_folder", "no_state"):
    d = tmp_path / name
    os.makedirs(d / "checkpoints" / "5" / ("meta" if name == "no_state" else "x"))
    _expect(lambda: inference.InferenceSession.load(str(d), cfg), "--checkpoint state/", [str(d)])
