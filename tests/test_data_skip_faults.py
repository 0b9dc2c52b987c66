"""Bad data mid-run under data.on_bad_data="skip": counts by reason in the logs and in the checkpoint's data state;
a run stopped and resumed reports the same totals as an uninterrupted one (grain prefetch is not counted twice)."""

import glob
import json
import logging
import os

import numpy as np

from _train_helpers import tiny_config
from vid2world_jax.training import loop
from vid2world_jax.data import episodes


def _write_episodes(d):
  """6 readable episodes, 2 whose frames are uint16 (found only when a clip is read: 'corrupt_file' at read
  time, every time they are drawn) and 1 too short for a clip (dropped when the source is indexed)."""
  os.makedirs(d)
  r = np.random.default_rng(0)
  for i in range(6):
    frames = r.integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    actions = r.uniform(-1, 1, (10, 2)).astype(np.float32)
    episodes.write_episode(os.path.join(d, f"ep{i}.npz"), frames, actions)
  for i in (6, 7):
    np.savez(os.path.join(d, f"ep{i}.npz"), frames=r.integers(0, 255, (10, 16, 16, 3)).astype(np.uint16),
             actions=r.uniform(-1, 1, (10, 2)).astype(np.float32))
  episodes.write_episode(os.path.join(d, "ep8.npz"), np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 2), np.float32))


def _cfg(path, **kw):
  return tiny_config(**{"total_steps": 6, "train.ckpt_every": 100, "train.log_every": 3, "data.source": "episodes",
                        "data.path": path, "data.on_bad_data": "skip", "data.batch_size": 8,
                        "data.prefetch_buffer_size": 16, **kw})


def _skip_lines(caplog):
  return [r.getMessage() for r in caplog.records if r.getMessage().startswith("data: skipped so far")]


def test_bad_data_fault_skip_counts_logged_checkpointed_and_equal_after_resume(tmp_path, caplog):
  data = str(tmp_path / "eps")
  _write_episodes(data)
  caplog.set_level(logging.WARNING)
  full = loop.train_and_evaluate(_cfg(data), str(tmp_path / "full"))
  read = full["data_skipped"]["read"]
  assert full["data_skipped"]["index"] == {"short_episode": 1}
  assert set(read) == {"corrupt_file"} and read["corrupt_file"] >= 2, read
  final_line = _skip_lines(caplog)[-1]
  assert final_line.startswith(f"data: skipped so far (step 6): {read['corrupt_file'] + 1} = clips read "
                               f"{{'corrupt_file': {read['corrupt_file']}}}"), final_line

  caplog.clear()
  work = str(tmp_path / "resumed")
  first = loop.train_and_evaluate(_cfg(data, **{"train.stop_after": 3}), work)
  assert first["preempted"] and first["last_step"] == 3
  (state_file,) = glob.glob(os.path.join(work, "checkpoints", "3", "data", "process_0-of-1.json"))
  saved = json.load(open(state_file))["state"]
  assert saved["skipped"] == first["data_skipped"]["read"]   # the counts travel with the iterator position

  caplog.clear()
  second = loop.train_and_evaluate(_cfg(data), work)
  assert second["start_step"] == 3
  assert second["data_skipped"] == full["data_skipped"]   # same totals as the uninterrupted run
  lines = _skip_lines(caplog)
  assert lines[0].startswith("data: skipped so far (resumed with): "
                             f"{saved['skipped']['corrupt_file'] + 1} = clips read {saved['skipped']}"), lines
  assert lines[-1] == final_line
