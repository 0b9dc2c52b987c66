"""The default run as a recipe of stages (``vid2world_jax.training.recipe``), each cached in the workdir.

  python -m vid2world_jax.train --config=configs/demo.py --workdir=/tmp/v2w_demo

``configs/demo.py`` lists the stages as data (``config.recipe``, ``default_recipe_config``); the generic runner
executes them in order and skips a stage whose output file exists:

  pretrain      ``pretrain/output``: the bidirectional video-only VDM (``training``; trainer in pretrain/) or
                the shipped pretrained file (``demo.pretrain = "shipped"``)
  causalize     ``causalize/output``: the causal world model initialised from it (temporal-conv weight transfer)
  finetune      ``finetune/output``: Diffusion-Forcing fine-tuning (``training``; trainer in finetune/, whose orbax
                checkpoints ``finetune/checkpoints/<step>`` are the run's model: ``<workdir>/model.json`` names
                that folder, so ``inference.InferenceSession.load(workdir)`` and ``--checkpoint=<workdir>`` load it)
  distill       ``student/output``: the few-step student (``student``; trainer in student/, loadable as
                ``InferenceSession.load(<workdir>/student)``; ``demo.student.enabled``)
  evaluate      ``eval/rollouts``: guided rollouts of held-out clips, guidance sweep, shuffled actions
                (``evaluation``)
  out_of_family ``eval/out_of_family``: mid-game contexts from unseen seeds under action families no recording
                policy produces (``out_of_family``; Breakout)
  long_horizon  ``eval/long_horizon``: sliding-window rollouts to several training windows
  policy_eval   ``eval/policy_eval``: real vs world-model policy ranking (``demo.policy_eval.enabled``)
  student_eval  ``eval/student``: the student on the same clips and both models' batch-1 frame rates
  report        ``report/``: GIFs ``ground truth | prediction | copy-last-frame``, metrics.md/json, plots and a
                one-screen summary (always re-written)

``run(config, workdir)`` fills in the demo defaults and calls the runner (tests and the ablation driver use it).
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from vid2world_jax import inference
from vid2world_jax.training import recipe
from vid2world_jax.demo import evaluation, student, training

from vid2world_jax.demo.defaults import STAGES, default_demo_config, default_recipe_config  # noqa: F401

# =============================================================================================================
# Config.


def with_demo(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` with a complete ``demo`` block (defaults filled in for missing fields)."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  full = default_demo_config()
  if "demo" in cfg and cfg.demo is not None:
    _merge(full, cfg.demo)
  cfg.demo = full
  return cfg


def _merge(dst, src):
  for k, v in src.items():
    if isinstance(v, ml_collections.ConfigDict) and k in dst and isinstance(dst[k], ml_collections.ConfigDict):
      _merge(dst[k], v)
    else:
      dst[k] = v


def check_demo_config(cfg) -> None:
  d = cfg.demo
  if d.init not in ("pretrained", "scratch"):
    raise ValueError(f"demo.init must be 'pretrained' or 'scratch', got {d.init!r}")
  from vid2world_jax.models import weight_transfer
  weight_transfer.canonical_mode(d.weight_transfer)
  if d.eval_clips < 1 or d.eval_batch < 1:
    raise ValueError("demo.eval_clips and demo.eval_batch must be >= 1")
  if cfg.data.clip_length < 2:
    raise ValueError("data.clip_length must be >= 2 (context frame + at least one predicted frame)")
  e = cfg.data.get("embedded", {})
  if cfg.data.source == "embedded" and e.get("env", "breakout") == "breakout" and \
      int(e.get("miss_hold", 0)) > int(cfg.data.clip_length) - 2:
    raise ValueError(f"data.embedded.miss_hold={e.get('miss_hold')} must be <= data.clip_length - 2 = "
                     f"{int(cfg.data.clip_length) - 2}: a clip of frozen frames only makes copy-last-frame exact")
  if not d.guidance_sweep:
    raise ValueError("demo.guidance_sweep must list at least one scale")
  if int(d.finetune_steps) < 1 or (d.init == "pretrained" and d.pretrain == "run" and int(d.pretrain_steps) < 1):
    raise ValueError("demo.finetune_steps (and demo.pretrain_steps with demo.pretrain='run') must be >= 1")




def prepare_config(config) -> ml_collections.ConfigDict:
  """The recipe's ``prepare`` hook: the demo defaults filled in, the demo and trainer configs checked."""
  from vid2world_jax.training import config as train_config  # pylint: disable=import-outside-toplevel
  cfg = with_demo(config)
  check_demo_config(cfg)
  train_config.validate_config(cfg, jax.device_count(), jax.process_count())
  return cfg


bidirectional_model_config = training.bidirectional_model_config

# =============================================================================================================
# Stages: ``fn(cfg, ctx)`` with the earlier stages' outputs in ``ctx.outputs``.


def _pretrain(cfg, ctx):
  if cfg.demo.init != "pretrained":   # fine-tuned from scratch: nothing to pretrain
    return None
  return training.run_pretrain(cfg, ctx.workdir)


def _causalize(cfg, ctx):
  d = cfg.demo
  return training.causalize(cfg, ctx.outputs.get("pretrain"), init=d.init, transfer=d.weight_transfer)


# The fine-tune trainer's workdir under the run's: the run's world model. ``<workdir>/model.json`` names it
# (``inference.write_model_pointer``), so ``InferenceSession.load(<workdir>)`` finds it without knowing this layout.
MODEL_DIR = "finetune"


def _finetune(cfg, ctx):
  out = training.run_finetune(cfg, os.path.join(ctx.workdir, MODEL_DIR), ctx.outputs["causalize"],
                              int(cfg.demo.finetune_steps))
  inference.write_model_pointer(ctx.workdir, MODEL_DIR)
  return out


def _distill(cfg, ctx):
  return student.run_distill(cfg, ctx.workdir, ctx.outputs["finetune"])


def _student_eval(cfg, ctx):
  return student.evaluate_student(cfg, ctx.outputs.get("distill"), ctx.outputs["finetune"])


def _evaluate(cfg, ctx):
  return evaluation.evaluate(cfg, ctx.outputs["finetune"]["params"])


def _out_of_family(cfg, ctx):
  return evaluation.evaluate_out_of_family(cfg, ctx.outputs["finetune"]["params"])


def _long_horizon(cfg, ctx):
  if ctx.outputs.get("distill") is not None:   # the very long row is the run's final model's (the student's)
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.demo.very_long_horizon = 0
  return evaluation.long_horizon(cfg, ctx.outputs["finetune"]["params"])


def _policy_eval(cfg, ctx):
  """Policy evaluation of the run's final world model: the student when the run made one, else the teacher."""
  if not cfg.demo.policy_eval.enabled:
    return None
  if ctx.outputs.get("distill") is not None:
    return dict(student.policy_evaluation(cfg, ctx.outputs["distill"]), model="student")
  return dict(evaluation.policy_evaluation(cfg, ctx.outputs["finetune"]["params"]), model="teacher")


PRETRAIN = recipe.Stage(_pretrain, "pretrain/output", "(a) pretrain")
CAUSALIZE = recipe.Stage(_causalize, "causalize/output", "(b) causalize")
FINETUNE = recipe.Stage(_finetune, "finetune/output", "(b) finetune")
DISTILL = recipe.Stage(_distill, "student/output", "(b'') distill")
STUDENT_EVAL = recipe.Stage(_student_eval, "eval/student", "(c'') student beside the teacher")
EVALUATE = recipe.Stage(_evaluate, "eval/rollouts", "(c) evaluate")
OUT_OF_FAMILY = recipe.Stage(_out_of_family, "eval/out_of_family", "(c) out-of-family split")
LONG_HORIZON = recipe.Stage(_long_horizon, "eval/long_horizon", "(c) long horizon")
POLICY_EVAL = recipe.Stage(_policy_eval, "eval/policy_eval", "(c') policy evaluation")


class QualityBarNotMet(SystemExit):
  """``demo.strict``: the run finished but points of the quality bar fell short (exit status 3)."""


def _report(cfg, ctx) -> dict:
  """Stage (d): the report folder and the one-screen summary; returns the metrics dict."""
  from vid2world_jax.demo import quality_bar as qb  # pylint: disable=import-outside-toplevel
  from vid2world_jax.demo import report  # pylint: disable=import-outside-toplevel
  d = cfg.demo
  t0, c0 = time.time(), time.process_time()
  pre, ft = ctx.outputs.get("pretrain"), ctx.outputs["finetune"]
  ev, lh, pe = dict(ctx.outputs["evaluate"]), ctx.outputs.get("long_horizon"), ctx.outputs.get("policy_eval")
  ood, st = ctx.outputs.get("out_of_family"), ctx.outputs.get("student_eval")
  ev["long_horizon"] = lh
  timing, cpu = dict(ctx.timing), dict(ctx.cpu)  # wall / process CPU seconds per stage
  rdir = os.path.join(ctx.workdir, "report")
  inference.write_model_pointer(ctx.workdir, MODEL_DIR)   # also for workdirs whose fine-tune predates the pointer
  if st is not None:   # the quality bar of the run's final world model (the student), and student vs teacher
    final = "student"
    bar = qb.quality_bar(dict(st["evaluate"], long_horizon=st["long_horizon"]), pe, st["out_of_family"])
  else:
    final = "teacher"
    bar = qb.quality_bar(ev, pe, ood)
  if bool(d.student.enabled) and "student_eval" in cfg.recipe.stages:
    bar.update(qb.check_student(ev, ood, st))
  sc = inference.sampler_config(cfg)   # the run's sampler (config.sampler) as the evaluation used it
  metrics = {
      "setup": {"data": f"embedded {cfg.data.get('embedded', {}).get('env', 'breakout')} test split, "
                        f"{len(ev['names'])} clips of {cfg.data.clip_length} frames at {tuple(cfg.data.resolution)}",
                "pretrain_steps": int(pre.get("steps", d.pretrain_steps)) if pre is not None else 0,
                "pretrain_source": pre.get("source", "run") if pre is not None else None,
                "finetune_steps": int(ft["steps"]), "init": ft["init"], "weight_transfer": ft["transfer"],
                "ddim_steps": int(sc.ddim_steps), "eta": float(sc.eta),
                "guidance_scale": inference.default_guidance(cfg),
                "guidance_rescale": float(sc.guidance_rescale), "history_noise": sc.history_noise,
                "devices": [str(x) for x in jax.devices()][:2],
                "final_pretrain_loss": (float(np.mean(pre["losses"][-20:])) if pre and pre["losses"]
                                        else (pre or {}).get("final_loss")),
                "final_finetune_loss": float(np.mean(ft["losses"][-20:])) if ft["losses"] else None},
      "horizons": ev["horizons"], "per_horizon": ev["per_horizon"], "guidance_sweep": ev.get("guidance_sweep"),
      "delta_psnr": ev.get("delta_psnr"), "paddle_error": ev.get("paddle_error"), "ball_error": ev.get("ball_error"),
      "out_of_family": None if ood is None else {k: v for k, v in ood.items() if not k.startswith("_")},
      "long_horizon": None if lh is None else {k: v for k, v in lh.items() if k not in ("gt", "pred", "names")},
      "quality_bar": bar,
      "unavailable": {"LPIPS / FID / FVD": "need user-supplied network weight files (vid2world_jax.metrics.weights); "
                                           "the demo reports PSNR, SSIM and MSE"},
  }
  if pe is not None:
    metrics["policy_eval"] = {k: v for k, v in pe.items() if not k.startswith("_")}
  metrics["quality_bar_model"] = final
  if st is not None:
    metrics["student"] = {k: v for k, v in st.items() if not k.startswith("_")}
  os.makedirs(os.path.join(rdir, "plots"), exist_ok=True)
  scale = int(d.video_scale)
  vdir = os.path.join(rdir, "videos")
  report.write_videos(vdir, ev["gt"], ev["pred"], ev["names"], baseline=ev["copy_last"],
                      max_videos=int(d.num_videos), scale=scale,
                      extra=None if "shuffled" not in ev else ev["shuffled"])
  if ood is not None:
    gt, pred, copy, other, names = ood["_videos"]
    report.write_videos(os.path.join(vdir, "out_of_family"), gt, pred, list(names), baseline=copy, extra=other,
                        max_videos=len(names), scale=scale)
  if st is not None:
    gt, spred, names = st["_videos"]
    report.write_videos(os.path.join(vdir, "student"), gt, spred, list(names), baseline=ev["pred"],
                        max_videos=int(d.num_videos), scale=scale)
  if lh is not None:
    report.write_videos(os.path.join(vdir, "long_horizon"), lh["gt"], lh["pred"], lh["names"],
                        max_videos=min(4, int(d.num_videos)), scale=scale)
  if pe is not None and "_videos" in pe:
    real, imagined = pe["_videos"]
    names = [f"{p}_seed{s}" for p, s in zip(pe["per_episode"]["policy"], pe["per_episode"]["seed"])]
    keep = [i for i in range(len(names)) if i % int(d.policy_eval.episodes) == 0]  # one episode per policy
    report.write_videos(os.path.join(vdir, "policy_eval"), real[keep], imagined[keep], [names[i] for i in keep],
                        max_videos=len(keep), scale=scale)
  elif pe is not None and "_last_frames" in pe:
    report.write_gif(os.path.join(vdir, "policy_eval_last_frames_real_vs_model.gif"),
                     report.side_by_side([pe["_last_frames"]], scale=2), fps=1.0)
  report.plot_horizon(os.path.join(rdir, "plots", "error_vs_horizon.png"), metrics)
  if lh is not None:
    report.plot_horizon(os.path.join(rdir, "plots", "long_horizon.png"),
                        {"horizons": lh["horizons"], "per_horizon": lh["per_horizon"]},
                        title=f"long horizon: {lh['frames']} frames, sliding window {lh['window']}")
  if ev.get("guidance_sweep"):
    report.plot_guidance(os.path.join(rdir, "plots", "metric_vs_guidance.png"), ev["guidance_sweep"])
  timing["report"] = time.time() - t0
  cpu["report"] = time.process_time() - c0
  timing["total"] = time.time() - ctx.wall0
  cpu["total"] = time.process_time() - ctx.cpu0
  metrics["timing"] = timing
  metrics["cpu_seconds"] = cpu
  # Training stages loaded from the workdir cache keep the wall time of the invocation that computed them.
  metrics["computed_seconds"] = {"pretrain": pre["seconds"] if pre is not None else 0.0, "finetune": ft["seconds"]}
  if ctx.outputs.get("distill") is not None:
    metrics["computed_seconds"]["distill"] = ctx.outputs["distill"]["seconds"]
  report.write_metrics(rdir, metrics)
  print(report.summary_text(metrics, rdir), flush=True)
  short = qb.shortfalls(bar)
  if d.strict and short:
    print("demo.strict: the quality bar was not met:\n" + "\n".join(f"  - {x}" for x in short), flush=True)
    raise QualityBarNotMet(3)
  return metrics


REPORT = recipe.Stage(_report, None, "(d) report")


def run(config, workdir: str) -> dict:
  """The default run's stages (``config.recipe``, default ``default_recipe_config``) in ``workdir``; returns the
  metrics dict of the report stage (also written to ``<workdir>/report/metrics.json``)."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  if "recipe" not in cfg:
    cfg.recipe = default_recipe_config()
  ctx = recipe.run(cfg, workdir)
  return ctx.outputs.get("report")
