"""The demo's report folder: side-by-side videos, metrics table (markdown + JSON) and plots.

Videos are animated GIFs (``video_io.write_video``) of ``ground truth | prediction [| copy-last-frame]`` strips, upscaled by an
integer factor. Plots use matplotlib's non-interactive Agg backend. Frames are float arrays in ``[0, 1]``,
``[B, T, H, W, 3]`` (channels last).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np


def to_uint8(frames01: np.ndarray) -> np.ndarray:
  x = np.asarray(frames01, np.float32)
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def side_by_side(columns: list[np.ndarray], scale: int = 2, gap: int = 2) -> np.ndarray:
  """``[T, H, W, 3]`` videos in [0, 1] -> one uint8 video ``[T, H*scale, n*(W*scale)+gaps, 3]`` (white gaps)."""
  if not columns:
    raise ValueError("side_by_side needs at least one video")
  t = columns[0].shape[0]
  if any(c.shape != columns[0].shape for c in columns):
    raise ValueError(f"videos must share one shape, got {[c.shape for c in columns]}")
  up = [np.repeat(np.repeat(to_uint8(c), scale, axis=1), scale, axis=2) for c in columns]
  h = up[0].shape[1]
  sep = np.full((t, h, gap, 3), 255, np.uint8)
  parts = []
  for i, u in enumerate(up):
    if i:
      parts.append(sep)
    parts.append(u)
  return np.concatenate(parts, axis=2)


def write_gif(path: str, video_uint8: np.ndarray, fps: float = 4.0) -> str:
  from vid2world_jax import video_io  # pylint: disable=import-outside-toplevel
  return video_io.write_video(path, np.asarray(video_uint8), fps=fps)


def write_videos(out_dir: str, gt: np.ndarray, pred: np.ndarray, names: list[str] | None = None,
                 baseline: np.ndarray | None = None, max_videos: int = 8, scale: int = 2,
                 extra: np.ndarray | None = None) -> list[str]:
  """One GIF per clip: ``ground truth | prediction`` (``| copy-last-frame`` when given, ``| extra`` (e.g. the
  rollout with shuffled actions) when given), upscaled ``scale`` times. Returns the paths."""
  gt, pred = np.asarray(gt), np.asarray(pred)
  if gt.shape != pred.shape or gt.ndim != 5:
    raise ValueError(f"gt and pred must be equal [B, T, H, W, 3], got {gt.shape} and {pred.shape}")
  paths = []
  for i in range(min(gt.shape[0], max_videos)):
    cols = [gt[i], pred[i]] + ([np.asarray(baseline)[i]] if baseline is not None else [])
    cols += [np.asarray(extra)[i]] if extra is not None else []
    name = names[i] if names else f"clip{i:02d}"
    paths.append(write_gif(os.path.join(out_dir, f"{i:02d}_{name}.gif"), side_by_side(cols, scale)))
  return paths


# ------------------------------------------------------------------------------------------------------------
# Tables.

def _fmt(x, nd=3):
  if x is None:
    return "-"
  if isinstance(x, bool):
    return "yes" if x else "NO"
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  if isinstance(x, (float, np.floating)):
    return "nan" if math.isnan(float(x)) else f"{float(x):.{nd}f}"
  return str(x)


def markdown_table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
  return "\n".join(lines)


def horizon_table(metrics: dict) -> str:
  """Per-horizon PSNR / SSIM / MSE of every method in ``metrics["per_horizon"]``."""
  hz = metrics["horizons"]
  methods = list(metrics["per_horizon"])
  header = ["horizon"] + [f"{m} {k}" for k in ("PSNR", "SSIM") for m in methods]
  rows = []
  for i, h in enumerate(hz):
    rows.append([h] + [metrics["per_horizon"][m][k.lower()][i] for k in ("PSNR", "SSIM") for m in methods])
  rows.append(["mean"] + [float(np.mean(metrics["per_horizon"][m][k.lower()])) for k in ("PSNR", "SSIM")
                          for m in methods])
  return markdown_table(header, rows)


def out_of_family_section(metrics: dict) -> list[str]:
  """metrics.md lines of the out-of-family split: per family and together, beside the in-distribution clips."""
  o = metrics["out_of_family"]
  rows = []

  def row(name, m):
    wm, cp = m["per_horizon"]["world_model"], m["per_horizon"]["copy_last_frame"]
    rows.append([name, m["clips"], m["delta_psnr"]["mean"], m["delta_psnr"]["se"], min(m["delta_psnr"]["per_horizon"]),
                 m["paddle_error"]["true"]["mean"], m["paddle_error"]["other"]["mean"], m["ball_error"]["true"]["mean"],
                 float(np.mean(wm["psnr"])), float(np.mean(cp["psnr"])), float(np.mean(wm["ssim"])),
                 float(np.mean(cp["ssim"]))])

  if metrics.get("delta_psnr") and metrics.get("paddle_error") and metrics.get("ball_error"):
    ph = metrics["per_horizon"]
    rows.append(["in-distribution clips (test split)", metrics["delta_psnr"]["n"], metrics["delta_psnr"]["mean"],
                 metrics["delta_psnr"]["se"], min(metrics["delta_psnr"]["per_horizon"]),
                 metrics["paddle_error"]["true"]["mean"], metrics["paddle_error"]["shuffled"]["mean"],
                 metrics["ball_error"]["true"]["mean"], float(np.mean(ph["world_model"]["psnr"])),
                 float(np.mean(ph["copy_last_frame"]["psnr"])), float(np.mean(ph["world_model"]["ssim"])),
                 float(np.mean(ph["copy_last_frame"]["ssim"]))])
  row("**out of family (all families)**", o["out_of_family"])
  for f, m in o["families"].items():
    row(f"family {f}" + (" (in-family control)" if f == "tracker" else ""), m)
  d = o["out_of_family"]["delta_psnr"]
  ph_rows = [[h, x, se, a, b, c, e] for h, x, se, a, b, c, e in zip(
      o["horizons"], d["per_horizon"], d["se_per_horizon"], o["out_of_family"]["per_horizon"]["world_model"]["psnr"],
      o["out_of_family"]["per_horizon"]["copy_last_frame"]["psnr"],
      o["out_of_family"]["per_horizon"]["world_model"]["ssim"],
      o["out_of_family"]["per_horizon"]["copy_last_frame"]["ssim"])]
  return ["## Out-of-family split (actions no recording policy produces, from unseen mid-game states)", "",
          o.get("protocol", ""), "",
          markdown_table(["clips", "n", "Delta-t-PSNR", "paired SE", "min over horizons", "paddle err (true)",
                          "paddle err (other)", "ball err (true)", "PSNR model", "PSNR copy", "SSIM model",
                          "SSIM copy"], rows), "",
          "Out-of-family clips per horizon:", "",
          markdown_table(["horizon", "Delta-t-PSNR", "paired SE", "PSNR model", "PSNR copy", "SSIM model",
                          "SSIM copy"], ph_rows), ""]


def student_section(metrics: dict) -> list[str]:
  """metrics.md lines: the few-step student beside the teacher (same clips, same metrics)."""
  st = metrics["student"]
  rows = []

  def row(split, t, s):
    for name, m in (("teacher", t), ("student", s)):
      rows.append([split, name, m["delta_psnr"]["mean"], m["delta_psnr"]["se"],
                   float(np.mean(m["per_horizon"]["world_model"]["psnr"])),
                   float(np.mean(m["per_horizon"]["world_model"]["ssim"])), m["paddle_error"]["true"]["mean"],
                   m["ball_error"]["true"]["mean"]])

  row("held-out clips", metrics, st["evaluate"])
  if metrics.get("out_of_family") and st.get("out_of_family"):
    row("out of family", metrics["out_of_family"]["out_of_family"], st["out_of_family"]["out_of_family"])
  lines = [f"## Few-step student ({st['ddim_steps']} DDIM step(s), no guidance pass) beside the teacher "
           f"({metrics['setup']['ddim_steps']} steps x 2 passes)", "",
           f"Trained {st['train_steps']} steps from the fine-tuned world model in {st['train_seconds']:.0f} s "
           "(demo/student.py); the same clips, seeds and metrics as the teacher's.", "",
           markdown_table(["clips", "model", "Delta-t-PSNR", "paired SE", "PSNR", "SSIM", "paddle err", "ball err"],
                          rows), ""]
  t_lh, s_lh = metrics.get("long_horizon"), st.get("long_horizon")
  if t_lh and s_lh:
    ts, ss = t_lh["frame_statistics"], s_lh["frame_statistics"]
    lines += [f"Long horizon ({s_lh['frames']} frames): max relative deviation of the frame mean teacher "
              f"{_fmt(ts['max_rel_mean_dev'])} / student {_fmt(ss['max_rel_mean_dev'])}, of the std "
              f"{_fmt(ts['max_rel_std_dev'])} / {_fmt(ss['max_rel_std_dev'])}; mean PSNR teacher "
              f"{_fmt(float(np.mean(t_lh['per_horizon']['world_model']['psnr'])))} / student "
              f"{_fmt(float(np.mean(s_lh['per_horizon']['world_model']['psnr'])))}.", ""]
  fps = st.get("frames_per_second") or {}
  if fps:
    lines += [f"Frames per second at batch 1 (cached, inside this run): teacher {fps['teacher']:.1f}, student "
              f"{fps['student']:.1f} ({fps['student'] / fps['teacher']:.1f}x). `benchmarks/play_fps.py` measures "
              "both on an idle machine.", ""]
  ct = st.get("catch_test")
  if ct:
    lines += [f"Catch test ({ct['protocol']}): {ct['events']} deciding frames; catches drawn as misses "
              f"{ct['catch_drawn_as_miss']}/{ct['catches']} (the trackers' catch {ct['lag_catches_wrong']}/"
              f"{ct['lag_catches']}, every other catch {ct['other_catches_wrong']}/{ct['other_catches']}); misses "
              f"drawn as catches {ct['miss_drawn_as_catch']}/{ct['misses']}.", "",
              markdown_table(["paddle - ball, move (along the ball)", "frames", "catches", "outcome wrong"],
                             [[k, v["n"], v["catches"], v["wrong"]] for k, v in ct["by_configuration"].items()]),
              ""]
  lines += ["GIFs: `videos/student/`: ground truth | student | teacher.", ""]
  return lines


def write_metrics(out_dir: str, metrics: dict, extra_sections: list[tuple[str, str]] = ()) -> tuple[str, str]:
  """``metrics.json`` (everything) and ``metrics.md`` (tables). Returns both paths."""
  os.makedirs(out_dir, exist_ok=True)
  jpath = os.path.join(out_dir, "metrics.json")
  with open(jpath, "w") as f:
    json.dump(metrics, f, indent=1, default=_json_default)
  md = ["# Vid2World demo report", ""]
  if "setup" in metrics:
    md += ["## Setup", "", "```", json.dumps(metrics["setup"], indent=1, default=_json_default), "```", ""]
  md += ["## Prediction quality vs rollout horizon (held-out episodes)", "",
         "Frames in [0, 1]; PSNR in dB (higher is better), SSIM 11x11 Gaussian (higher is better). "
         "`copy_last_frame` repeats the given context frame; `shuffled_actions` is the same rollout with the "
         "actions of another clip.", "", horizon_table(metrics), ""]
  if metrics.get("guidance_sweep"):
    rows = [[g["label"], g["psnr"], g["ssim"], g["mse"], g.get("delta_psnr"), g.get("delta_psnr_se")]
            for g in metrics["guidance_sweep"]]
    md += ["## Guidance scale sweep (mean over horizons)", "",
           markdown_table(["guidance scale", "PSNR", "SSIM", "MSE", "Delta-t-PSNR", "paired SE"], rows), ""]
  if metrics.get("delta_psnr"):
    dp = metrics["delta_psnr"]
    rows = [[h, x, se] for h, x, se in zip(metrics["horizons"], dp["per_horizon"], dp["se_per_horizon"])]
    rows.append(["mean", dp["mean"], dp["se"]])
    md += ["## Action following: Delta-t-PSNR (true minus shuffled actions, paired over clips)", "",
           markdown_table(["horizon", "Delta PSNR (dB)", "paired SE"], rows), ""]
  if metrics.get("paddle_error"):
    pe_ = metrics["paddle_error"]
    rows = [[h, a, b] for h, a, b in zip(metrics["horizons"], pe_["true"]["per_horizon"],
                                         pe_["shuffled"]["per_horizon"])]
    rows.append(["mean", pe_["true"]["mean"], pe_["shuffled"]["mean"]])
    md += ["## Action following: paddle position in generated frames (|column error| in cells; 1 cell = 3 px)",
           "", markdown_table(["horizon", "true actions", "shuffled actions"], rows), ""]
  if metrics.get("long_horizon"):
    lh = metrics["long_horizon"]
    st = lh["frame_statistics"]
    rows = [[h, a, b, c, d_, e, f] for h, a, b, c, d_, e, f in zip(
        lh["horizons"], lh["per_horizon"]["world_model"]["psnr"], lh["per_horizon"]["copy_last_frame"]["psnr"],
        st["pred_mean"], st["gt_mean"], st["pred_std"], st["gt_std"])]
    md += [f"## Long horizon ({lh['frames']} frames = {lh['frames'] // lh['window']}x the window, sliding window)",
           "", markdown_table(["horizon", "world_model PSNR", "copy_last_frame PSNR", "model mean", "gt mean",
                               "model std", "gt std"], rows), ""]
  if metrics.get("long_horizon") and metrics["long_horizon"].get("very_long"):
    vl = metrics["long_horizon"]["very_long"]
    st, ph = vl["frame_statistics"], vl["per_horizon"]
    at = sorted({0, 7, 31, 63, len(st["pred_mean"]) - 1} & set(range(len(st["pred_mean"]))))
    rows = [[h + 1, ph["world_model"]["psnr"][h], ph["copy_last_frame"]["psnr"][h], st["pred_mean"][h],
             st["gt_mean"][h], st["pred_std"][h], st["gt_std"][h]] for h in at]
    md += [f"## Very long horizon ({vl['frames']} frames, {vl['clips']} simulator episodes of the tracker)", "",
           markdown_table(["horizon", "world_model PSNR", "copy_last_frame PSNR", "model mean", "gt mean",
                           "model std", "gt std"], rows), "",
           f"max relative deviation of the mean {_fmt(st['max_rel_mean_dev'])}, of the std "
           f"{_fmt(st['max_rel_std_dev'])}", ""]
  if metrics.get("out_of_family"):
    md += out_of_family_section(metrics)
  if metrics.get("student"):
    md += student_section(metrics)
  if metrics.get("quality_bar"):
    rows = [[k, v["holds"], v["detail"]] for k, v in metrics["quality_bar"].items()]
    md += ["## Quality bar", "", markdown_table(["check", "holds", "numbers"], rows), ""]
  if metrics.get("policy_eval"):
    pe = metrics["policy_eval"]
    kind = "success" if "verifier_accuracy" in pe else "mean return"
    mr = pe.get("miss_rate")
    rows = [[p, pe["real"][p], pe["world_model"][p]] + ([mr["real"][p], mr["world_model"][p]] if mr else [])
            for p in pe["policies"]]
    md += ["## Policy evaluation (real simulator vs world model)", "", pe.get("protocol", ""), "",
           markdown_table(["policy", f"real {kind}", f"world-model {kind}"]
                          + (["real miss rate", "world-model miss rate"] if mr else []), rows), "",
           f"Pearson r = {_fmt(pe.get('pearson_r'))}, MMRV = {_fmt(pe.get('mmrv'))}"
           + (f" (bootstrap {pe['bootstrap']['level']:.0%} intervals over states: r {_fmt(pe['bootstrap']['pearson_r'][0])}"
              f"..{_fmt(pe['bootstrap']['pearson_r'][1])}, MMRV {_fmt(pe['bootstrap']['mmrv'][0])}.."
              f"{_fmt(pe['bootstrap']['mmrv'][1])})" if "bootstrap" in pe else "")
           + (f", verifier accuracy on real final frames = {_fmt(pe.get('verifier_accuracy'))}"
              if "verifier_accuracy" in pe else ""), ""]
  if metrics.get("unavailable"):
    md += ["## Not computed", ""] + [f"* {k}: {v}" for k, v in metrics["unavailable"].items()] + [""]
  for title, body in extra_sections:
    md += [f"## {title}", "", body, ""]
  mpath = os.path.join(out_dir, "metrics.md")
  with open(mpath, "w") as f:
    f.write("\n".join(md))
  return mpath, jpath


def _json_default(o):
  if isinstance(o, (np.floating, np.integer)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, np.bool_):
    return bool(o)
  return str(o)


# ------------------------------------------------------------------------------------------------------------
# Plots.

def _plt():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def plot_horizon(path: str, metrics: dict, title: str = "prediction quality vs horizon (held-out episodes)") -> str:
  """PSNR and SSIM vs rollout horizon for every method (one PNG, two panels)."""
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  hz = metrics["horizons"]
  for name, m in metrics["per_horizon"].items():
    for ax, k in zip(axes, ("psnr", "ssim")):
      ax.plot(hz, m[k], marker="o", label=name)
  for ax, k in zip(axes, ("PSNR (dB)", "SSIM")):
    ax.set_xlabel("rollout horizon (frames after the context frame)")
    ax.set_ylabel(k)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_guidance(path: str, sweep: list[dict]) -> str:
  """Mean PSNR / SSIM vs guidance scale."""
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  s = [g["scale"] for g in sweep]
  for ax, k, lab in zip(axes, ("psnr", "ssim"), ("PSNR (dB)", "SSIM")):
    ax.plot(s, [g[k] for g in sweep], marker="o")
    ax.set_xlabel("guidance scale s (1 = no guidance)")
    ax.set_ylabel(lab)
    ax.grid(alpha=0.3)
  fig.suptitle("causal action guidance: metric vs scale")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def summary_text(metrics: dict, report_dir: str) -> str:
  """One screen of text: headline numbers, quality-bar verdicts, where the report is."""
  ph = metrics["per_horizon"]
  lines = ["=" * 78, "Vid2World demo: summary", "=" * 78]
  if metrics.get("student"):
    lines.append(f"teacher ({metrics['setup']['ddim_steps']} DDIM steps x 2 passes) on the held-out clips; the quality "
                 f"bar below is the run's final world model's ({metrics.get('quality_bar_model', 'student')}):")
  for name, m in ph.items():
    lines.append(f"{name:>20s}: PSNR {np.mean(m['psnr']):6.2f} dB  SSIM {np.mean(m['ssim']):.3f}  "
                 f"(horizon 1: {m['psnr'][0]:.2f} / {m['ssim'][0]:.3f}; last: {m['psnr'][-1]:.2f} / "
                 f"{m['ssim'][-1]:.3f})")
  if metrics.get("guidance_sweep"):
    lines.append("guidance sweep (PSNR / SSIM / Delta-t-PSNR): " + ", ".join(
        f"{g['label']}: {g['psnr']:.2f}/{g['ssim']:.3f}/{_fmt(g.get('delta_psnr'), 2)}"
        for g in metrics["guidance_sweep"]))
  for k, v in (metrics.get("quality_bar") or {}).items():
    lines.append(f"[{'PASS' if v['holds'] else 'FAIL'}] {k}: {v['detail']}")
  o = metrics.get("out_of_family")
  if o:
    m = o["out_of_family"]
    lines.append(f"out of family ({m['clips']} clips): Delta-t-PSNR {m['delta_psnr']['mean']:+.2f} +- "
                 f"{m['delta_psnr']['se']:.2f} dB, paddle error {m['paddle_error']['true']['mean']:.3f}, ball error "
                 f"{m['ball_error']['true']['mean']:.3f} cells; PSNR {np.mean(m['per_horizon']['world_model']['psnr']):.2f}"
                 f" vs copy {np.mean(m['per_horizon']['copy_last_frame']['psnr']):.2f}")
  st = metrics.get("student")
  if st:
    fps = st.get("frames_per_second") or {}
    lines.append(f"student ({st['ddim_steps']} step, no guidance pass): Delta-t-PSNR "
                 f"{st['evaluate']['delta_psnr']['mean']:+.2f} vs teacher {metrics['delta_psnr']['mean']:+.2f} dB, PSNR "
                 f"{np.mean(st['evaluate']['per_horizon']['world_model']['psnr']):.2f} vs "
                 f"{np.mean(ph['world_model']['psnr']):.2f}"
                 + (f"; {fps['student']:.1f} vs {fps['teacher']:.1f} frames/s at batch 1" if fps else ""))
    ct = st.get("catch_test")
    if ct:
      lines.append(f"catch test (student, {ct['events']} frames): catches drawn as misses {ct['catch_drawn_as_miss']}/"
                   f"{ct['catches']} (tracker-style {ct['lag_catches_wrong']}/{ct['lag_catches']}, others "
                   f"{ct['other_catches_wrong']}/{ct['other_catches']}), misses drawn as catches "
                   f"{ct['miss_drawn_as_catch']}/{ct['misses']}")
  pe = metrics.get("policy_eval")
  if pe:
    lines.append("policy eval, real / world model: " + ", ".join(
        f"{p}: {pe['real'][p]:.2f}/{pe['world_model'][p]:.2f}" for p in pe["policies"])
                 + f"; Pearson r {_fmt(pe.get('pearson_r'))}, MMRV {_fmt(pe.get('mmrv'))}")
  if metrics.get("timing"):
    lines.append("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in metrics["timing"].items()))
  lines += [f"report: {os.path.abspath(report_dir)}  (metrics.md, metrics.json, plots/*.png, videos/*.gif)",
            "=" * 78]
  return "\n".join(lines)


json_default = _json_default   # public: the demo's other JSON outputs (ablations) are written with it
