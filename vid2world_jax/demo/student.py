"""Stage (b''): the few-step student of the fine-tuned world model, and its evaluation beside the teacher.

  distill        ``student/output`` (trainer workdir ``student/``): the student, initialised from the fine-tuned
                 world model and trained with ``train.objective = "student"`` (``diffusion.student``) for the
                 sampler it will run with: ``demo.student.ddim_steps`` DDIM steps, the conditional pass only
                 (``sampler.guidance = "none"``). Its trainer workdir is an ordinary checkpoint whose saved config
                 carries that sampler block, so ``InferenceSession.load("<workdir>/student")``, the rollout CLI, the
                 gym envs, policy evaluation and play run it as the student with no extra flag.
  student_eval   ``eval/student``: the student on the teacher's clips (held-out clips with true and shuffled
                 actions, the out-of-family split, the long-horizon rollouts) and both models' frame rates at
                 batch 1 (play's per-frame call), for the report's side-by-side table.
"""

from __future__ import annotations

import os
import time

import ml_collections
import numpy as np

from vid2world_jax.demo import evaluation, training


def log(msg: str) -> None:
  print(f"[demo] {msg}", flush=True)


def sampling_config(cfg) -> ml_collections.ConfigDict:
  """``cfg`` with the student's sampler block: ``demo.student.ddim_steps`` steps, no guidance pass, a window of
  ``demo.student.window`` frames."""
  c = ml_collections.ConfigDict(cfg.to_dict())
  c.sampler.ddim_steps = int(cfg.demo.student.ddim_steps)
  c.sampler.guidance = "none"
  c.sampler.window = int(cfg.demo.student.get("window", 0))
  return c


def student_config(cfg) -> ml_collections.ConfigDict:
  """The trainer config of the distillation stage (``demo.student``)."""
  s = cfg.demo.student
  c = training.stage_config(sampling_config(cfg), int(s.steps))
  c.train.objective = "student"
  c.train.action_dropout_prob = 0.0      # no guidance pass to train an unconditional branch for
  c.data.batch_size = int(s.batch_size)
  c.optim.lr, c.optim.warmup_steps = float(s.lr), int(s.warmup)
  c.init_from = ""
  return c


def run_distill(cfg, workdir: str, teacher: dict) -> dict | None:
  """Trains the student in ``<workdir>/student`` from the teacher's parameters (``finetune`` output)."""
  s = cfg.demo.student
  if not s.enabled:
    return None
  t0 = time.time()
  sdir = os.path.join(workdir, "student")
  log(f"stage (b'') distill: a {int(s.ddim_steps)}-step student without guidance pass, {int(s.steps)} steps "
      f"from the fine-tuned world model in {sdir}")
  out = training.train_stage(student_config(cfg), sdir, init_params=teacher["params"])
  return dict(out, seconds=time.time() - t0, steps=int(s.steps), ddim_steps=int(s.ddim_steps))


def policy_evaluation(cfg, student: dict) -> dict:
  """The policy evaluation (``evaluation.policy_evaluation``) in the student: its own sampler, every frame one
  UNet pass (``demo.policy_eval.ddim_steps`` is the teacher's)."""
  scfg = sampling_config(cfg)
  scfg.demo.policy_eval.ddim_steps = int(cfg.demo.student.ddim_steps)
  return evaluation.policy_evaluation(scfg, student["params"])


def frame_rate(session, context_u8: np.ndarray, frames: int, guidance_scale: float) -> float:
  """Frames per second of ``session.step`` at batch 1 (play's per-frame call), after one compiling step."""
  state = session.start(context_u8[None], seed=0)
  action = np.zeros((1, session.action_dim), np.float32)
  action[:, 0] = 1.0
  _, state = session.step(state, action, guidance_scale=guidance_scale)   # compile
  t0 = time.perf_counter()
  for _ in range(frames):
    frame, state = session.step(state, action, guidance_scale=guidance_scale)
  np.asarray(frame)
  return frames / (time.perf_counter() - t0)


def evaluate_student(cfg, student: dict | None, teacher: dict, progress: bool | None = None) -> dict | None:
  """The student on the teacher's evaluation clips, and both frame rates at batch 1."""
  if student is None:
    return None
  scfg = sampling_config(cfg)
  params = student["params"]
  ev = evaluation.evaluate(scfg, params, sweep=False, progress=progress, tag=" student")
  ood = evaluation.evaluate_out_of_family(scfg, params, progress=progress)
  lh = evaluation.long_horizon(scfg, params, progress=progress)
  ctx = evaluation.to_uint8(ev["gt"][0, :1] * 2.0 - 1.0)   # the first held-out frame ([0, 1] -> [-1, 1] -> uint8)
  session = evaluation.make_session(scfg, params)          # the frame rate's and the catch test's
  n = int(cfg.demo.student.fps_frames)
  fps = {}
  if n > 0:
    from vid2world_jax import inference  # pylint: disable=import-outside-toplevel
    fps["teacher"] = frame_rate(evaluation.make_session(cfg, teacher["params"]), ctx, n,
                                inference.default_guidance(cfg))
    fps["student"] = frame_rate(session, ctx, n, inference.default_guidance(scfg))
    log(f"batch-1 frame rate ({n} frames, each on its default path): teacher {fps['teacher']:.1f} /s, student {fps['student']:.1f} /s")
  catches = catch_test(cfg, session, scfg)
  keep = ("delta_psnr", "paddle_error", "ball_error", "per_horizon")
  return {"evaluate": {k: ev[k] for k in keep if k in ev},
          "out_of_family": None if ood is None else {k: v for k, v in ood.items() if not k.startswith("_")},
          "long_horizon": None if lh is None else {k: lh[k] for k in ("frame_statistics", "per_horizon", "frames",
                                                                     "clips", "window", "horizons", "very_long")
                                                   if k in lh},
          "catch_test": catches, "frames_per_second": fps, "ddim_steps": int(student["ddim_steps"]), "train_steps": int(student["steps"]),
          "train_seconds": float(student["seconds"]),
          "_videos": (ev["gt"], ev["pred"], ev["names"])}


def catch_test(cfg, session, scfg) -> dict | None:
  """``breakout_eval.catch_test`` of the student's ``session`` (``scfg``: its sampling config; Breakout only;
  ``demo.catch_test.episodes`` 0 skips it)."""
  ct = cfg.demo.get("catch_test")
  if ct is None or int(ct.episodes) <= 0 or not evaluation.is_breakout(cfg):
    return None
  from vid2world_jax import inference  # pylint: disable=import-outside-toplevel
  from vid2world_jax.demo import breakout_eval  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  det = evaluation.position_detector(cfg)
  frames = breakout_eval.deciding_frames(cfg.demo.policy_eval.policies, int(ct.episodes),
                                         int(cfg.demo.policy_eval.first_seed), det, steps=int(ct.steps))
  if frames is None:
    log(f"catch test: no deciding frame in {int(ct.episodes)} episodes per policy; not run")
    return None
  out = breakout_eval.catch_test(session, frames, det, guidance_scale=inference.default_guidance(scfg),
                                 seed=int(cfg.demo.seed))
  log(f"catch test: {out['events']} deciding frames in {time.time() - t0:.0f} s; catches drawn as misses "
      f"{out['catch_drawn_as_miss']}/{out['catches']} (the trackers' catch {out['lag_catches_wrong']}/"
      f"{out['lag_catches']}, the others {out['other_catches_wrong']}/{out['other_catches']}), misses drawn as "
      f"catches {out['miss_drawn_as_catch']}/{out['misses']}")
  return out
