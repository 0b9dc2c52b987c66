"""The training loop: validate config -> mesh -> data -> sharded init (or resume, or init_from) -> AOT-compiled
step -> loop (log, injected evaluators, checkpoint, preemption, non-finite guard).

Flag-free: the command line lives in ``vid2world_jax/train.py``. Evaluators that need the inference stack (sample
rollouts) are passed in by the caller, so this package imports nothing above it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from vid2world_jax import logging_utils, sharding
from vid2world_jax.storage import checkpointing
from vid2world_jax.training.config import init_checkpoint, validate_config
from vid2world_jax.training.setup import Setup, make_data_iterator


class NonFiniteLoss(RuntimeError):
  pass


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be written, or no checkpoint that restores and verifies (message: one line)."""


@dataclasses.dataclass(frozen=True)
class StepView:
  """What an evaluator sees after a step: the step number (1-based), the run's ``Setup``, the sharded state,
  the non-trainable parts, the frozen encoders' state, this host's batch and the metric writer."""
  step: int
  setup: Any
  state: dict
  rest: Any
  frozen: Any
  batch: dict
  writer: Any


Evaluator = Callable[[StepView], None]


# =============================================================================================================
# Preemption.

class Preemption:
  """SIGTERM sets a flag; the loop saves and exits at the next step boundary (all processes agree)."""

  def __init__(self):
    self.flag = False
    self._prev = None

  def __enter__(self):
    try:
      self._prev = signal.signal(signal.SIGTERM, self._handler)
    except ValueError:  # not the main thread: preemption handled by the caller
      self._prev = None
    return self

  def _handler(self, signum, frame):
    self.flag = True

  def __exit__(self, *exc):
    if self._prev is not None:
      signal.signal(signal.SIGTERM, self._prev)

  def reached(self) -> bool:
    if jax.process_count() == 1:
      return self.flag
    return bool(multihost_utils.process_allgather(np.int32(self.flag)).max())


# =============================================================================================================
# The loop.

def train_and_evaluate(cfg, workdir: str, *, step_callback=None, init_params: dict | None = None,
                       evaluators: Sequence[Evaluator] = ()) -> dict:
  """Runs (or resumes) training; returns ``{"losses": {step: loss}, "last_step", "preempted", "state", ...}``.

  ``step_callback(step, metrics)`` (tests): called after each step on every process. ``init_params`` (a pure
  dict): the trainable parameters of a fresh start (``Setup.init``); ignored when resuming from a checkpoint.
  ``evaluators``: called after each step with a ``StepView`` (each decides when to act, e.g. the sample rollouts
  of ``inference.train_samples`` every ``train.sample_every`` steps); the trainer itself never samples.
  """
  t_setup = time.time()
  mesh_shape = validate_config(cfg, jax.device_count(), jax.process_count())
  mesh = sharding.make_mesh(mesh_shape)
  logging.info("process %d/%d, %d devices (%d local), mesh %s", jax.process_index(), jax.process_count(),
               jax.device_count(), jax.local_device_count(), dict(mesh.shape))
  data_iter = make_data_iterator(cfg.data)   # before the model: bad data is reported in seconds
  setup = Setup(cfg, mesh)
  writer = logging_utils.MetricWriter(workdir)
  config_json = cfg.to_json_best_effort()
  if writer.enabled:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config_json)
    writer.text("config", "```\n" + cfg.to_yaml() + "\n```" if hasattr(cfg, "to_yaml") else config_json)
  logging.info("trainable parameters: %d", setup.num_params)

  mngr = checkpointing.make_manager(workdir, keep=int(cfg.train.keep_checkpoints), cleanup_tmp=True)
  abs_state = setup.abstract_args()[0]
  try:  # newest step that verifies and restores; damaged ones are moved aside to <step>.corrupt (one line each)
    latest, state = checkpointing.restore_newest_good(mngr, abs_state, data_iter)
  except checkpointing.NoGoodCheckpoint as e:
    checkpointing.close_quietly(mngr)
    raise CheckpointError(str(e)) from None
  if latest is not None:
    logging.info("resumed from step %d in %s", latest, mngr.directory)
    _, rest, frozen = setup._create()   # non-trainable parts (RNG streams, frozen encoders)
    if init_checkpoint(cfg):  # frozen parts (VAE / CLIP) are not in the checkpoint: reload them
      from vid2world_jax.conversion import init_from  # pylint: disable=import-outside-toplevel
      _, frozen = init_from.load(cfg, setup.mcfg, None, frozen, None, setup.frozen_sh)
  else:
    state, rest, frozen = setup.init(init_params)
  start = int(jax.device_get(state["step"]))
  skipped = log_skip_counts(data_iter, "resumed with" if latest is not None else "at start", None)

  # Compile ahead of time (cost analysis -> MFU).
  t0 = time.time()
  compiled = setup.step.lower(*setup.abstract_args()).compile()
  flops = logging_utils.compiled_flops(compiled)
  peak = logging_utils.peak_flops_per_device(cfg.train.get("peak_flops_per_device", 0.0))
  logging.info("step compiled in %.1fs (setup %.1fs); flops/step/device %s", time.time() - t0, t0 - t_setup, flops)

  frames_per_step = int(cfg.data.batch_size) * int(cfg.data.clip_length)
  progress = logging_utils.Progress(start, int(cfg.total_steps), enabled=bool(cfg.train.progress_bar))
  losses, acc = {}, _Accum()
  preempted = False
  stop_at = int(cfg.train.get("stop_after", 0))
  last_saved = start if latest is not None else None
  t_last = time.time()
  with Preemption() as pre:
    for i in range(start, int(cfg.total_steps)):
      local = next(data_iter)
      batch = sharding.to_global({k: local[k] for k in setup.abs_batch}, mesh)
      state, metrics = compiled(state, frozen, rest, batch)
      m = jax.device_get(metrics)
      done = i + 1
      loss = float(m["loss"])
      # Non-finite loss, gradients or updated parameters: this state is never saved.
      if not all(math.isfinite(float(m[k])) for k in ("loss", "grad_norm", "param_norm")):
        _wait_or_stop(mngr, progress, writer)
        good = checkpointing.last_good_step(mngr)   # verified against its integrity record
        checkpointing.close_quietly(mngr)
        progress.close()
        writer.close()
        vals = ", ".join(f"{k}={float(m[k]):.4g}" for k in ("loss", "grad_norm", "param_norm"))
        where = (f"the last good checkpoint is step {good} in {mngr.directory}" if good is not None
                 else "no checkpoint was saved yet")
        raise NonFiniteLoss(f"non-finite training values ({vals}) at step {done}: stopping; {where}")
      losses[done] = loss
      acc.add(m)
      now = time.time()
      dt, t_last = now - t_last, now
      progress.update(1, loss=loss, steps_s=1.0 / max(dt, 1e-9), frames_s=frames_per_step / max(dt, 1e-9))
      if done % int(cfg.train.log_every) == 0 or done == int(cfg.total_steps):
        scalars = acc.result()
        sps = scalars.pop("_steps") / max(now - acc.t0, 1e-9)
        scalars.update(steps_per_sec=sps, frames_per_sec=sps * frames_per_step)
        if flops:
          scalars["model_tflops_per_sec_per_device"] = flops * sps / 1e12
          if peak:
            scalars["mfu"] = flops * sps / peak
        writer.scalars(done, scalars)
        acc = _Accum()
        skipped = log_skip_counts(data_iter, f"step {done}", skipped)
      if evaluators:
        view = StepView(done, setup, state, rest, frozen, local, writer)
        for evaluate in evaluators:
          evaluate(view)
      if step_callback is not None:
        step_callback(done, m)
      if done % int(cfg.train.ckpt_every) == 0 or done == int(cfg.total_steps):
        _save_or_stop(mngr, done, state, data_iter, config_json, progress, writer)
        last_saved = done
      if pre.reached() or (stop_at and done >= stop_at):
        preempted = True
        if last_saved != done:
          _save_or_stop(mngr, done, state, data_iter, config_json, progress, writer)
        logging.warning("preempted: saved step %d, exiting", done)
        break
  _wait_or_stop(mngr, progress, writer)
  mngr.close()
  progress.close()
  writer.close()
  skipped = getattr(data_iter, "skip_counts", lambda: None)()
  return {"data_skipped": skipped,
          "losses": losses, "last_step": max(losses) if losses else start, "preempted": preempted,
          "start_step": start, "flops_per_step_per_device": flops, "num_params": setup.num_params,
          "state": state}


def log_skip_counts(data_iter, when: str, previous):
  """One log line with the bad data skipped so far, by reason (``data.on_bad_data="skip"``; the counts are part
  of the iterator state, so a resumed run continues them); only when they changed. Returns the counts."""
  counts = getattr(data_iter, "skip_counts", lambda: None)()
  if counts is None or counts == previous:
    return counts
  read, index = counts["read"], counts["index"]
  if read or index or previous is not None:
    total = sum((read or {}).values()) + sum(index.values())
    logging.warning("data: skipped so far (%s): %d = clips read %s + episodes at indexing %s", when, total,
                    "not tracked (worker processes)" if read is None else dict(sorted(read.items())),
                    dict(sorted(index.items())))
  return counts


def _stop_on_write_error(mngr, err, progress, writer):
  """A failed save: orbax's threads stopped quietly, the half-written step left uncommitted; one-line error."""
  checkpointing.close_quietly(mngr)
  good = checkpointing.last_good_step(mngr)
  progress.close()
  writer.close()
  where = (f"the last good checkpoint is step {good} in {mngr.directory}" if good is not None
           else "no good checkpoint was saved")
  return CheckpointError(f"{err}; stopping; {where}")


def _save_or_stop(mngr, step, state, data_iter, config_json, progress, writer):
  try:
    checkpointing.save(mngr, step, state, data_iter, config_json)
  except checkpointing.CheckpointWriteError as e:
    raise _stop_on_write_error(mngr, e, progress, writer) from None


def _wait_or_stop(mngr, progress, writer):
  try:
    checkpointing.wait(mngr)
  except checkpointing.CheckpointWriteError as e:
    raise _stop_on_write_error(mngr, e, progress, writer) from None


class _Accum:
  """Running sums of step metrics between log points (bucket losses: sum of sums / sum of counts)."""

  def __init__(self):
    self.n, self.sums, self.t0 = 0, {}, time.time()
    self.bsum = self.bcnt = None

  def add(self, m):
    self.n += 1
    for k in ("loss", "grad_norm", "param_norm", "lr"):
      self.sums[k] = self.sums.get(k, 0.0) + float(m[k])
    bs, bc = np.asarray(m["bucket_loss_sum"]), np.asarray(m["bucket_count"])
    self.bsum = bs if self.bsum is None else self.bsum + bs
    self.bcnt = bc if self.bcnt is None else self.bcnt + bc

  def result(self):
    out = {k: v / max(self.n, 1) for k, v in self.sums.items()}
    if self.bsum is not None:
      nb = len(self.bsum)
      for j in range(nb):
        if self.bcnt[j] > 0:
          out[f"loss_t{j * 1000 // nb:03d}_{(j + 1) * 1000 // nb:03d}"] = float(self.bsum[j] / self.bcnt[j])
    out["_steps"] = self.n
    return out
