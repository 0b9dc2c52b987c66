r"""The paper's ablations on the embedded data, written as one table.

  python -m vid2world_jax.demo.ablations --config=configs/demo.py --workdir=/tmp/v2w_demo

Runs in the demo's workdir and reuses its cached stages (the pretrained model, the default fine-tune and its
evaluation). Variants (``config.demo.ablations``), all fine-tuned for the same number of steps on the same data
and scored on the same held-out clips from their first frame:

  (i)   from scratch vs from the pretrained tiny VDM;
  (ii)  temporal-conv weight transfer shift vs mask vs mixed (extrapolative);
  (iii) guidance-scale sweep including no guidance (s = 1);
  (iv)  autoregressive vs non-autoregressive sampling;
  plus the action-sensitivity check (same rollouts with the actions of another clip) and copy-last-frame.

Writes ``<workdir>/report/ablations.md`` and ``ablations.json`` and prints the table.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from vid2world_jax import inference, tree_store

from vid2world_jax.training import recipe
from vid2world_jax.demo import evaluation, pipeline, report, training
from vid2world_jax.demo import quality_bar as qb


def _row(name, init, transfer, sampler, guidance, ph, delta=None):
  return {"variant": name, "init": init, "transfer": transfer, "sampler": sampler, "guidance": guidance,
          "delta_psnr": None if delta is None else delta["mean"], "delta_psnr_se": None if delta is None else delta["se"],
          "psnr_mean": float(np.mean(ph["psnr"])), "ssim_mean": float(np.mean(ph["ssim"])),
          "psnr_h1": float(ph["psnr"][0]), "psnr_last": float(ph["psnr"][-1]),
          "ssim_h1": float(ph["ssim"][0]), "ssim_last": float(ph["ssim"][-1]),
          "per_horizon": ph}


def run_ablations(config, workdir: str) -> dict:
  """Runs (or loads) every variant; returns ``{"rows": [...], "quality_bar": {...}}`` and writes the table."""
  cfg = pipeline.with_demo(config)
  pipeline.check_demo_config(cfg)
  d = cfg.demo
  a = d.ablations
  steps = int(a.finetune_steps or d.finetune_steps)
  t0 = time.time()
  pre = training.pretrain(cfg, workdir)
  clips = evaluation.load_eval_clips(cfg)
  s_main = inference.default_guidance(cfg)
  rows = []

  def variant(init, transfer):
    if init == "pretrained" and transfer == d.weight_transfer and steps == int(d.finetune_steps) \
        and d.init == "pretrained":
      name = "finetune"  # the default run's model
    else:
      name = f"ablation_{init}" + (f"_{transfer}" if init == "pretrained" else "")
    ft = training.finetune(cfg, workdir, name=name, init=init, transfer=transfer, steps=steps, pretrained=pre)
    return name, ft

  def scored(name, params, **kw):
    path = os.path.join(workdir, "ablations", name + ".json")
    if os.path.exists(path):
      with open(path) as f:
        cached = json.load(f)
      if "delta_psnr" in cached:  # older caches lack Delta-t-PSNR: re-evaluated below
        return cached
    ev = evaluation.evaluate(cfg, params, clips=clips, tag=f" [{name}]", **kw)
    out = {"per_horizon": ev["per_horizon"], "guidance_sweep": ev.get("guidance_sweep"), "horizons": ev["horizons"],
           "per_clip_psnr": ev["per_clip_psnr"], "delta_psnr": ev.get("delta_psnr")}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(out, f)
    return out

  # Variants first (the reference may still be training in the default run sharing this workdir).
  later = []
  for tr in a.transfers:
    if tr == d.weight_transfer:
      continue
    name, ft = variant("pretrained", tr)
    e = scored(name, ft["params"], sweep=False, shuffled=True)
    later.append(_row(f"pretrained + {tr}", "pretrained", tr, "AR", f"{s_main:g}", e["per_horizon"]["world_model"],
                      e["delta_psnr"]))
  scratch = scratch_clips = None
  if a.scratch:
    name, ft = variant("scratch", d.weight_transfer)
    e = scored(name, ft["params"], sweep=False, shuffled=True)
    scratch = e["per_horizon"]["world_model"]
    scratch_clips = e["per_clip_psnr"]["world_model"]
    later.append(_row("from scratch (no pretraining)", "scratch", "-", "AR", f"{s_main:g}", scratch,
                      e["delta_psnr"]))
  # The reference model: pretrained + configured transfer, with every sampler-side ablation.
  ref_name, ref = variant("pretrained", d.weight_transfer)
  main_eval = os.path.join(workdir, "eval", "rollouts")
  if ref_name == "finetune" and tree_store.exists(main_eval):  # the default run's evaluation (same clips/settings)
    ev0 = recipe.load(main_eval)
    ev = {"per_horizon": dict(ev0["per_horizon"]), "guidance_sweep": ev0.get("guidance_sweep"),
          "horizons": ev0["horizons"], "per_clip_psnr": ev0.get("per_clip_psnr"), "delta_psnr": ev0.get("delta_psnr")}
  else:
    ev = scored(ref_name + "_full", ref["params"], sweep=True, shuffled=True)
  ph = ev["per_horizon"]
  nar_delta = None
  if a.nar:
    path = os.path.join(workdir, "ablations", ref_name + "_nar_v2.json")
    if os.path.exists(path):
      with open(path) as f:
        nar = json.load(f)
    else:
      nar = evaluation.nar_metrics(cfg, ref["params"], clips)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        json.dump(nar, f)
    ph["non_autoregressive"], nar_delta = nar["per_horizon"], nar["delta_psnr"]
  rows.append(_row("copy-last-frame baseline", "-", "-", "-", "-", ph["copy_last_frame"]))
  rows.append(_row(f"pretrained + {d.weight_transfer} (default)", "pretrained", d.weight_transfer, "AR",
                   f"{s_main:g}", ph["world_model"], ev.get("delta_psnr")))
  rows.append(_row("  shuffled actions (action sensitivity)", "pretrained", d.weight_transfer, "AR", f"{s_main:g}",
                   ph["shuffled_actions"]))
  if "non_autoregressive" in ph:
    rows.append(_row("  non-autoregressive sampling (NAR)", "pretrained", d.weight_transfer, "NAR", f"{s_main:g}",
                     ph["non_autoregressive"], nar_delta))
  for g in ev["guidance_sweep"] or []:
    if g["scale"] != s_main:
      rows.append({"variant": f"  guidance s={g['label']}", "init": "pretrained", "transfer": d.weight_transfer,
                   "sampler": "AR", "guidance": f"{g['scale']:g}", "psnr_mean": g["psnr"], "ssim_mean": g["ssim"],
                   "delta_psnr": g.get("delta_psnr"), "delta_psnr_se": g.get("delta_psnr_se"),
                   "psnr_h1": None, "psnr_last": None, "ssim_h1": None, "ssim_last": None})
  rows += later
  per_clip = dict(ev.get("per_clip_psnr") or {})
  if "world_model" in per_clip and scratch_clips is not None:
    per_clip.update(pretrained=per_clip["world_model"], scratch=scratch_clips)
  bar = qb.check_action_following(ev.get("delta_psnr"), None)
  bar = {k: v for k, v in bar.items() if "Delta" in k}
  bar.update(qb.check_copy_last(ph))
  if scratch is not None:
    bar.update(qb.check_pretrained_vs_scratch(ph["world_model"], scratch, per_clip))
  out = {"rows": rows, "quality_bar": bar, "finetune_steps": steps,
         "pretrain_steps": int(pre.get("steps", d.pretrain_steps)) if pre else 0,
         "eval_clips": len(clips["names"]), "horizons": ev["horizons"], "seconds": time.time() - t0}
  write_table(os.path.join(workdir, "report"), out)
  return out


def table_markdown(out: dict) -> str:
  header = ["variant", "init", "transfer", "sampler", "guidance s", "PSNR mean", "SSIM mean",
            "Delta-t-PSNR (true - shuffled)", "PSNR h=1", f"PSNR h={out['horizons'][-1]}", "SSIM h=1",
            f"SSIM h={out['horizons'][-1]}"]
  fmt_delta = lambda r: ("-" if r.get("delta_psnr") is None
                         else f"{r['delta_psnr']:+.2f} +- {r['delta_psnr_se']:.2f}")
  rows = [[r["variant"], r["init"], r["transfer"], r["sampler"], r["guidance"], r["psnr_mean"], r["ssim_mean"],
           fmt_delta(r), r["psnr_h1"], r["psnr_last"], r["ssim_h1"], r["ssim_last"]] for r in out["rows"]]
  bar = [[k, v["holds"], v["detail"]] for k, v in out["quality_bar"].items()]
  return "\n".join([
      f"# Ablations ({out['pretrain_steps']} pretrain steps, {out['finetune_steps']} fine-tune steps per variant, "
      f"{out['eval_clips']} held-out clips, horizons 1..{out['horizons'][-1]})", "",
      report.markdown_table(header, rows), "", "## Quality bar", "",
      report.markdown_table(["check", "holds", "numbers"], bar), ""])


def write_table(out_dir: str, out: dict) -> str:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "ablations.json"), "w") as f:
    json.dump(out, f, indent=1, default=report.json_default)
  path = os.path.join(out_dir, "ablations.md")
  with open(path, "w") as f:
    f.write(table_markdown(out))
  return path


def main(cfg, workdir):
  if not workdir:
    sys.exit("error: --workdir is required")
  out = run_ablations(cfg, workdir)
  print(table_markdown(out), flush=True)
  print(f"table: {os.path.abspath(os.path.join(workdir, 'report', 'ablations.md'))}", flush=True)


if __name__ == "__main__":
  from absl import app

  from vid2world_jax import logging_utils, run_flags, user_input
  _CONFIG, _WORKDIR = run_flags.define_config_and_workdir()
  app.run(logging_utils.quiet_main(lambda argv: main(_CONFIG.value, _WORKDIR.value), lambda: _WORKDIR.value),
          flags_parser=user_input.parse_flags)
