"""Damaged checkpoints and failing saves: the trainer CLI (a subprocess, as a user runs it) on real files.

One tiny run (toy denoiser, steps 2/4/6 saved) is trained once per module; each test copies its workdir, damages
it (4 KiB zeroed inside the newest step's largest array file, a truncated file, a removed item, every step, a
file-size limit during the save), reruns the same command and checks the exit code, the one-line messages and the
step it resumed from.
"""

import errno
import os
import re
import shutil
import subprocess
import sys

import pytest

from _train_helpers import REPO, tiny_config
from vid2world_jax.storage import integrity as checkpoint_integrity, checkpointing
from vid2world_jax.training import loop

CKPT_EVERY, FIRST_RUN_STEPS = 2, 6


def _train(workdir, total_steps, *, max_file_bytes=None, timeout=420):
  """Runs the trainer CLI; returns (exit code, stdout + stderr)."""
  cmd = [sys.executable, "-m", "vid2world_jax.train", "--config=configs/test_tiny.py:toy", f"--workdir={workdir}",
         f"--config.total_steps={total_steps}", f"--config.train.ckpt_every={CKPT_EVERY}",
         "--config.train.keep_checkpoints=3"]

  if max_file_bytes:   # a real write error from the kernel (EFBIG) for every file above the limit; set in a small
    # launcher that then execs the trainer (no preexec_fn: forking this multithreaded JAX process is unsafe)
    launcher = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({max_file_bytes}, {max_file_bytes})); "
                "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
    cmd = [sys.executable, "-c", launcher] + cmd[1:]
  p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  return p.returncode, p.stdout + p.stderr


def _ckpt(workdir):
  return os.path.join(workdir, "checkpoints")


def _steps(workdir):
  return sorted(int(n) for n in os.listdir(_ckpt(workdir)) if n.isdigit())


def _resumed_from(work):
  """The step the last run resumed from, from the trainer's log file (INFO lines stay off the console)."""
  log = os.path.join(work, "log.txt")
  m = re.findall(r"resumed from step (\d+)", open(log).read() if os.path.exists(log) else "")
  return int(m[-1]) if m else None


def _damage_lines(out):
  return [l for l in out.splitlines() if "is damaged:" in l]


def _error_lines(out):
  return [l for l in out.splitlines() if l.startswith("error:")]


def _largest_array_file(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
  return max(files, key=os.path.getsize)


def _no_noise(out):
  assert "Traceback" not in out and "Event loop is closed" not in out, out[-3000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  work = str(tmp_path_factory.mktemp("faults") / "run")
  rc, out = _train(work, FIRST_RUN_STEPS)
  assert rc == 0, out[-3000:]
  assert _steps(work) == [2, 4, 6]
  for s in (2, 4, 6):
    checkpoint_integrity.verify_step(os.path.join(_ckpt(work), str(s)))
  return work


@pytest.fixture
def work(trained, tmp_path):
  dst = str(tmp_path / "run")
  shutil.copytree(trained, dst)
  return dst


def _assert_resumed_from_4_after(out, rc, work, bad_file, reason):
  assert rc == 0, out[-3000:]
  lines = _damage_lines(out)
  assert len(lines) == 1, lines
  assert "checkpoint step 6 is damaged:" in lines[0] and bad_file in lines[0] and reason in lines[0], lines[0]
  assert "6.corrupt" in lines[0]
  assert _resumed_from(work) == 4
  assert os.path.isdir(os.path.join(_ckpt(work), "6.corrupt"))   # moved aside, never deleted
  assert _steps(work) == [4, 6, 8]   # 6 and 8 written again by the resumed run, both sealed
  for s in (6, 8):
    checkpoint_integrity.verify_step(os.path.join(_ckpt(work), str(s)))
  _no_noise(out)


def test_corrupt_zeroed_4k_in_newest_array_file_resumes_from_previous(work):
  path = _largest_array_file(os.path.join(_ckpt(work), "6"))
  size = os.path.getsize(path)
  assert size > 3 * 4096
  with open(path, "r+b") as f:
    f.seek(size // 2)
    f.write(b"\0" * 4096)
  assert os.path.getsize(path) == size
  rc, out = _train(work, 8)
  rel = os.path.relpath(path, os.path.join(_ckpt(work), "6"))
  _assert_resumed_from_4_after(out, rc, work, rel, "sha256 differs")


def test_corrupt_truncated_file_resumes_from_previous(work):
  path = _largest_array_file(os.path.join(_ckpt(work), "6"))
  os.truncate(path, os.path.getsize(path) // 3)
  rc, out = _train(work, 8)
  rel = os.path.relpath(path, os.path.join(_ckpt(work), "6"))
  _assert_resumed_from_4_after(out, rc, work, rel, "truncated")


def test_corrupt_removed_item_resumes_from_previous(work):
  shutil.rmtree(os.path.join(_ckpt(work), "6", "data"))   # the data-iterator item
  rc, out = _train(work, 8)
  _assert_resumed_from_4_after(out, rc, work, "/6/data:", "item directory missing")


def test_corrupt_every_step_exits_with_one_error_and_keeps_them(work):
  ck = _ckpt(work)
  shutil.rmtree(os.path.join(ck, "2", "meta"))                      # removed item
  os.truncate(_largest_array_file(os.path.join(ck, "4")), 100)      # truncated array file
  with open(_largest_array_file(os.path.join(ck, "6")), "r+b") as f:  # zeroed block
    f.seek(4096)
    f.write(b"\0" * 4096)
  rc, out = _train(work, 8)
  assert rc == 1, out[-3000:]
  assert [re.search(r"checkpoint step (\d+)", l).group(1) for l in _damage_lines(out)] == ["6", "4", "2"]
  errors = _error_lines(out)
  assert len(errors) == 1 and "no checkpoint" in errors[0] and "restores and verifies" in errors[0], errors
  assert sorted(os.listdir(ck)) == ["2.corrupt", "4.corrupt", "6.corrupt"]
  _no_noise(out)
  # The same command again does not silently start from scratch over the damaged run.
  rc, out = _train(work, 8)
  assert rc == 1 and len(_error_lines(out)) == 1 and "only damaged ones moved aside" in _error_lines(out)[0], out[-2000:]
  assert _resumed_from(work) is None


def test_corrupt_newest_step_is_not_named_last_good(work):
  """The NaN guard's 'last good checkpoint' is the newest step that verifies (train.py: last_good_step)."""
  with open(_largest_array_file(os.path.join(_ckpt(work), "6")), "r+b") as f:
    f.seek(0)
    f.write(b"\0" * 4096)
  mngr = checkpointing.make_manager(work, keep=3)
  try:
    assert mngr.latest_step() == 6
    assert checkpointing.last_good_step(mngr) == 4
    with pytest.raises(checkpointing.CheckpointCorrupt, match=r"^checkpoint step 6 is damaged: .*sha256 differs"):
      checkpointing.verify_step(mngr.directory / "6")
  finally:
    mngr.close()


def test_corrupt_unsealed_step_is_not_trusted_until_sealed(work):
  os.remove(os.path.join(_ckpt(work), "6", checkpoint_integrity.INTEGRITY_FILE))
  with pytest.raises(checkpointing.CheckpointCorrupt, match="no integrity record"):
    checkpointing.verify_step(os.path.join(_ckpt(work), "6"))
  checkpoint_integrity.seal_step(os.path.join(_ckpt(work), "6"))   # README: blessing a pre-integrity checkpoint
  checkpointing.verify_step(os.path.join(_ckpt(work), "6"))


def test_disk_write_error_during_save_stops_cleanly_and_keeps_last_good(work):
  # Every file the run writes is limited to 64 KiB: the step-8 array file cannot be written (EFBIG from the kernel).
  assert os.path.getsize(_largest_array_file(os.path.join(_ckpt(work), "6"))) > 64 * 1024
  rc, out = _train(work, 8, max_file_bytes=64 * 1024)
  assert rc == 1, out[-3000:]
  errors = _error_lines(out)
  assert len(errors) == 1, errors
  assert errors[0].startswith("error: checkpoint save of step 8 failed: " + _ckpt(work)), errors[0]
  assert f"errno {errno.EFBIG}" in errors[0] and "the last good checkpoint is step 6" in errors[0], errors[0]
  assert _resumed_from(work) == 6
  _no_noise(out)
  assert _steps(work) == [2, 4, 6]   # nothing of step 8 committed
  checkpoint_integrity.verify_step(os.path.join(_ckpt(work), "6"))
  rc, out = _train(work, 8)   # the space is back: resumes from the last good step, the half-written 8 is gone
  assert rc == 0 and _resumed_from(work) == 6 and not _damage_lines(out), out[-3000:]
  assert _steps(work) == [4, 6, 8]
  assert not [n for n in os.listdir(_ckpt(work)) if "tmp" in n]


def test_disk_full_enospc_in_save_is_one_line_error(tmp_path, monkeypatch):
  """ENOSPC raised by a checkpoint writer (here the data-iterator item) -> loop.CheckpointError with path+errno."""
  target = str(tmp_path / "checkpoints")

  def full(self, directory, args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(str(directory), "process_0-of-1.json"))

  monkeypatch.setattr(checkpointing.IteratorHandler, "save", full)
  cfg = tiny_config(**{"total_steps": 2, "train.ckpt_every": 1})
  with pytest.raises(loop.CheckpointError) as info:
    loop.train_and_evaluate(cfg, str(tmp_path))
  msg = str(info.value)
  assert "\n" not in msg
  assert re.match(r"checkpoint save of step [12] failed: " + re.escape(target) + r"/\S*process_0-of-1.json: "
                  r"errno 28 \(No space left on device\)", msg), msg
  assert "no good checkpoint was saved" in msg
  assert not [n for n in os.listdir(target) if n.isdigit()]


def _converted(tmp_path):
  """A small converted checkpoint (convert_torch_weights.py's format), sealed by save_converted."""
  import numpy as np
  from ml_collections import ConfigDict
  from vid2world_jax.conversion import dynamicrafter
  rng = np.random.default_rng(0)
  flat = {("conv", "kernel"): rng.normal(size=(64, 64, 8)).astype(np.float32),
          ("conv", "bias"): rng.normal(size=(8,)).astype(np.float32)}
  out = str(tmp_path / "conv")
  dynamicrafter.save_converted(out, "256", {"unet": ConfigDict({"x": 1})}, {"unet": flat})
  params = os.path.join(out, "params")
  assert os.path.exists(os.path.join(params, checkpoint_integrity.INTEGRITY_FILE))
  return out, params, flat


def _restore_init_from(params):
  from vid2world_jax import sharding
  from vid2world_jax.conversion import init_from
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1})
  return init_from._restore_sharded(params, mesh, [], 2 ** 30)


def test_corrupt_init_from_checkpoint_is_one_line_naming_the_file(tmp_path, capfd):
  import numpy as np
  from vid2world_jax.conversion import dynamicrafter
  out, params, flat = _converted(tmp_path)
  tree = _restore_init_from(params)   # intact: verifies and restores
  np.testing.assert_array_equal(np.asarray(tree["unet"]["conv"]["kernel"]), flat[("conv", "kernel")])
  path = max((os.path.join(d, f) for d, _, fs in os.walk(params) for f in fs), key=os.path.getsize)
  with open(path, "r+b") as f:
    f.seek(4096)
    f.write(b"\0" * 4096)
  with pytest.raises(checkpointing.CheckpointCorrupt) as info:
    _restore_init_from(params)
  msg = str(info.value)
  assert msg == f"checkpoint is damaged: {path}: sha256 differs from the integrity record (damaged contents)", msg
  with pytest.raises(checkpointing.CheckpointCorrupt, match=r"^checkpoint is damaged: .*sha256 differs"):
    dynamicrafter.load_converted(out)
  # Without a record (converted before records existed) a truncated file still fails in one line, quietly.
  os.remove(os.path.join(params, checkpoint_integrity.INTEGRITY_FILE))
  os.truncate(path, 100)
  capfd.readouterr()
  with pytest.raises(checkpointing.CheckpointCorrupt) as info:
    _restore_init_from(params)
  assert "\n" not in str(info.value) and "does not restore" in str(info.value), str(info.value)
  err = capfd.readouterr().err
  assert "Traceback" not in err and "Event loop is closed" not in err, err[-2000:]


def test_corrupt_checkpoint_refused_by_inference_loading(work, tmp_path):
  """The rollout CLI / InferenceSession never run a damaged step: one line naming the step and the file."""
  import numpy as np
  from vid2world_jax import inference
  step_dir = os.path.join(_ckpt(work), "6")
  bad = _largest_array_file(step_dir)
  with open(bad, "r+b") as f:
    f.seek(os.path.getsize(bad) // 2)
    f.write(b"\0" * 4096)
  with pytest.raises(checkpointing.CheckpointCorrupt, match=r"checkpoint step 6 is damaged: .*") as e:
    inference.InferenceSession.load(step_dir)
  assert "\n" not in str(e.value) and os.path.basename(bad) in str(e.value)
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "ctx.npz", frames=rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8))
  np.save(tmp_path / "acts.npy", rng.uniform(-1, 1, size=(3, 2)).astype(np.float32))
  p = subprocess.run([sys.executable, "-m", "vid2world_jax.rollout", f"--checkpoint={work}",
                      f"--context={tmp_path / 'ctx.npz'}", f"--actions={tmp_path / 'acts.npy'}",
                      f"--out={tmp_path / 'out.npz'}", "--context_frames=1", "--ddim_steps=2"],
                     cwd=REPO, capture_output=True, text=True, timeout=300)
  assert p.returncode != 0
  assert "checkpoint step 6 is damaged:" in p.stderr, p.stderr[-3000:]
  _no_noise(p.stdout + p.stderr)
  assert not os.path.exists(tmp_path / "out.npz")


def test_orbax_orphan_future_records_dropped_others_kept():
  """The asyncio filter installed after a failed save drops the "... exception was never retrieved" records of
  orbax's tasks AND gathering futures (which one asyncio logs depends on the garbage collector: the gather's
  record once reached a CI log with its traceback), and keeps every other record."""
  import logging  # pylint: disable=import-outside-toplevel

  def record(msg, exc_info=None):
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, exc_info)

  path = '"/tmp/run/checkpoints/8.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/"'
  gather = ("_GatheringFuture exception was never retrieved\nfuture: <_GatheringFuture finished exception="
            f"ValueError('OUT_OF_RANGE: Error writing in OCDBT database at local file {path}')>")
  task = "Task exception was never retrieved\nfuture: <Task finished coro=<orbax.write() done>>"
  assert not checkpointing._drop_orbax_orphan_tasks(record(gather))   # pylint: disable=protected-access
  assert not checkpointing._drop_orbax_orphan_tasks(record(task))     # pylint: disable=protected-access
  other = "Task exception was never retrieved\nfuture: <Task finished coro=<my_job() done>>"
  assert checkpointing._drop_orbax_orphan_tasks(record(other))        # pylint: disable=protected-access
  assert checkpointing._drop_orbax_orphan_tasks(record("some orbax message"))   # pylint: disable=protected-access
