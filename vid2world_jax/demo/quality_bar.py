"""The embedded default's quality bar (issue 12, points 1-4), measured from the run's own metrics.

Each check returns ``{"holds": bool, "detail": str}``; a check whose inputs were not computed is reported as not
holding (never as passing). ``shortfalls`` lists what fell short, for ``--config.demo.strict=True``.

1. action following: Delta-t-PSNR (true minus shuffled actions) >= 1 dB on average and >= 0 at every horizon,
   with its paired standard error; and the paddle-position error under true actions at most half of that under
   shuffled actions.
1'. out of family (issue 21; Breakout): on the out-of-family split, Delta-t-PSNR >= 3 dB on average and > 0 at
   every horizon, paddle error <= 0.2 cells, ball error <= 1.5x the in-distribution clips'; in distribution,
   Delta-t-PSNR >= 4 dB.
2. better than doing nothing: world model > copy-last-frame in PSNR at every horizon from 2 on, and in SSIM at
   every horizon.
3. policy evaluation: Pearson r >= 0.9 and MMRV <= 0.1 (>= 6 policies, 2 of them outside the recorded family,
   >= 16 initial states each; bootstrap intervals reported); Breakout: every policy's imagined mean return within
   0.5 bricks and imagined miss rate within 0.15 of the real ones.
4. long horizon (4x the training window): the frames' mean and std stay within 10% of the ground truth's.
5. few-step student (issue 22): Delta-t-PSNR and PSNR within 0.5 dB of the teacher's on the held-out clips and the
   out-of-family split, long-horizon frame statistics no worse, >= 30 frames/s at batch 1.
Plus the comparisons the paper claims (pretrained > scratch), when the ablation driver supplies them.
"""

from __future__ import annotations

import numpy as np

from vid2world_jax.metrics import world_model_metrics as wmm

MIN_DELTA_PSNR = 4.0           # in-distribution clips (issue 21: no regression from the 4.6-4.8 dB measured)
MAX_POSITION_ERROR_RATIO = 0.5
MIN_PEARSON = 0.9
MAX_MMRV = 0.1
MIN_POLICIES = 6
MIN_EPISODES = 16
MAX_RETURN_GAP = 0.5           # bricks: |imagined - real| mean return of every policy
MAX_MISS_RATE_GAP = 0.15       # |imagined - real| miss rate of every policy
MAX_REL_STAT_DEV = 0.10
OOF_MIN_DELTA_PSNR = 3.0       # out-of-family split: Delta-t-PSNR mean (and > 0 at every horizon)
OOF_MAX_PADDLE_ERROR = 0.2     # cells
OOF_MAX_BALL_ERROR_RATIO = 1.5 # x the in-distribution clips' ball error
STUDENT_MAX_DB_GAP = 0.5       # few-step student: Delta-t-PSNR and PSNR at most this far below the teacher's
STUDENT_MIN_FPS = 30.0         # ... and at least this many frames/s at batch 1 (measured in the stage)


def _seq(xs, nd=2):
  return "/".join(f"{x:.{nd}f}" for x in xs)


def check_action_following(delta: dict | None, position: dict | None) -> dict:
  out = {}
  key = f"action following: Delta-t-PSNR (true - shuffled actions) >= {MIN_DELTA_PSNR:g} dB mean, >= 0 every horizon"
  if delta is None:
    out[key] = {"holds": False, "detail": "not measured (shuffled-actions rollouts were not run)"}
  else:
    holds = delta["mean"] >= MIN_DELTA_PSNR and all(x >= 0 for x in delta["per_horizon"])
    out[key] = {"holds": bool(holds),
                "detail": f"mean {delta['mean']:+.2f} +- {delta['se']:.2f} dB (paired SE, {delta['n']} clips); "
                          f"per horizon {_seq(delta['per_horizon'])} (SE {_seq(delta['se_per_horizon'])})"}
  key = f"action following: paddle-position error, true actions <= {MAX_POSITION_ERROR_RATIO:g} x shuffled"
  if position is None:
    out[key] = {"holds": False, "detail": "not measured (no position detector for this simulator)"}
  else:
    t, s = position["true"]["mean"], position["shuffled"]["mean"]
    out[key] = {"holds": bool(t <= MAX_POSITION_ERROR_RATIO * s),
                "detail": f"mean |column error| {t:.3f} (true) vs {s:.3f} (shuffled) cells; ratio "
                          f"{t / max(s, 1e-9):.2f}; per horizon true {_seq(position['true']['per_horizon'])}"}
  return out


def check_copy_last(ph: dict) -> dict:
  wm, cl = ph["world_model"], ph["copy_last_frame"]
  wins = [a > b for a, b in zip(wm["psnr"][1:], cl["psnr"][1:])]
  ssim_wins = [a > b for a, b in zip(wm["ssim"], cl["ssim"])]
  return {"world model > copy-last-frame, PSNR, every horizon from 2": {
      "holds": bool(wins) and all(wins),
      "detail": f"PSNR model {_seq(wm['psnr'])} vs copy {_seq(cl['psnr'])}"},
          "world model > copy-last-frame, SSIM, every horizon": {
      "holds": bool(ssim_wins) and all(ssim_wins),
      "detail": f"SSIM model {_seq(wm['ssim'], 3)} vs copy {_seq(cl['ssim'], 3)}"}}


def check_out_of_family(ood: dict | None, in_dist_ball: dict | None) -> dict:
  """Out-of-family split: Delta-t-PSNR, paddle error, ball error against the in-distribution clips'."""
  keys = (f"out of family: Delta-t-PSNR >= {OOF_MIN_DELTA_PSNR:g} dB mean, > 0 every horizon",
          f"out of family: paddle error <= {OOF_MAX_PADDLE_ERROR:g} cells",
          f"out of family: ball error <= {OOF_MAX_BALL_ERROR_RATIO:g} x the in-distribution clips'")
  if ood is None:
    return {k: {"holds": False, "detail": "not run (demo.out_of_family.enabled=False or not Breakout)"} for k in keys}
  m = ood["out_of_family"]
  d, pad, ball = m["delta_psnr"], m["paddle_error"]["true"]["mean"], m["ball_error"]["true"]["mean"]
  fam = "; ".join(f"{f} {v['delta_psnr']['mean']:+.2f} dB / paddle {v['paddle_error']['true']['mean']:.2f} / ball "
                  f"{v['ball_error']['true']['mean']:.2f}" for f, v in ood["families"].items())
  out = {keys[0]: {"holds": bool(d["mean"] >= OOF_MIN_DELTA_PSNR and all(x > 0 for x in d["per_horizon"])),
                   "detail": f"mean {d['mean']:+.2f} +- {d['se']:.2f} dB ({d['n']} clips); per horizon "
                             f"{_seq(d['per_horizon'])}; per family (Delta / paddle / ball): {fam}"},
         keys[1]: {"holds": bool(pad <= OOF_MAX_PADDLE_ERROR),
                   "detail": f"{pad:.3f} cells (under the other family's actions {m['paddle_error']['other']['mean']:.3f})"}}
  if in_dist_ball is None:
    out[keys[2]] = {"holds": False, "detail": f"{ball:.3f} cells; in-distribution ball error not measured"}
  else:
    ref = in_dist_ball["true"]["mean"]
    out[keys[2]] = {"holds": bool(ball <= OOF_MAX_BALL_ERROR_RATIO * ref),
                    "detail": f"{ball:.3f} vs {ref:.3f} cells in distribution (ratio {ball / max(ref, 1e-9):.2f})"}
  return out


def check_policy_eval(pe: dict | None) -> dict:
  key = f"policy evaluation: Pearson r >= {MIN_PEARSON:g} and MMRV <= {MAX_MMRV:g} (>= {MIN_POLICIES} policies x >= {MIN_EPISODES} states)"
  if pe is None:
    return {key: {"holds": False, "detail": "not run (demo.policy_eval.enabled=False)"}}
  enough = len(pe["policies"]) >= MIN_POLICIES and int(pe["episodes_per_policy"]) >= MIN_EPISODES
  r, m = pe.get("pearson_r"), pe.get("mmrv")
  holds = enough and r is not None and np.isfinite(r) and r >= MIN_PEARSON and m <= MAX_MMRV
  bs = pe.get("bootstrap")
  ci = "" if not bs else (f" (bootstrap {bs['level']:.0%}: r {bs['pearson_r'][0]:.3f}..{bs['pearson_r'][1]:.3f}, "
                          f"MMRV {bs['mmrv'][0]:.3f}..{bs['mmrv'][1]:.3f})")
  out = {key: {"holds": bool(holds),
               "detail": f"Pearson r {r:.3f}, MMRV {m:.3f}{ci}; real / world model mean return: " + ", ".join(
                   f"{p} {pe['real'][p]:.2f}/{pe['world_model'][p]:.2f}" for p in pe["policies"])
               + f" ({len(pe['policies'])} policies x {pe['episodes_per_policy']} states)"}}
  if "world_model" in pe and "miss_rate" in pe:   # Breakout (returns in bricks, misses seen in the frames)
    gaps = {p: abs(pe["world_model"][p] - pe["real"][p]) for p in pe["policies"]}
    out[f"policy evaluation: every policy's imagined mean return within {MAX_RETURN_GAP:g} bricks of the real one"] = {
        "holds": bool(enough and max(gaps.values()) <= MAX_RETURN_GAP),
        "detail": ", ".join(f"{p} {g:.2f}" for p, g in gaps.items())}
    mr = pe["miss_rate"]
    mg = {p: abs(mr["world_model"][p] - mr["real"][p]) for p in pe["policies"]}
    out[f"policy evaluation: every policy's imagined miss rate within {MAX_MISS_RATE_GAP:g} of the real one"] = {
        "holds": bool(enough and max(mg.values()) <= MAX_MISS_RATE_GAP),
        "detail": ", ".join(f"{p} {mr['real'][p]:.2f}/{mr['world_model'][p]:.2f}" for p in pe["policies"])
                  + " (real / imagined)"}
  return out


def check_long_horizon(lh: dict | None) -> dict:
  key = f"long horizon: frame mean and std within {MAX_REL_STAT_DEV:.0%} of the ground truth's at every horizon"
  if lh is None:
    return {key: {"holds": False, "detail": "not run (no test episode long enough, or demo.long_horizon=0)"}}
  st = lh["frame_statistics"]
  holds = st["max_rel_mean_dev"] <= MAX_REL_STAT_DEV and st["max_rel_std_dev"] <= MAX_REL_STAT_DEV
  model, copy = lh["per_horizon"]["world_model"]["psnr"], lh["per_horizon"]["copy_last_frame"]["psnr"]
  at = (0, len(model) // 2 - 1, len(model) - 1)   # first, middle and last horizon
  return {key: {"holds": bool(holds),
                "detail": f"{lh['frames']} frames ({lh['clips']} clips, window {lh['window']}): max relative "
                          f"deviation of mean {st['max_rel_mean_dev']:.3f}, of std {st['max_rel_std_dev']:.3f}; "
                          f"PSNR at h={'/'.join(str(i + 1) for i in at)}: model "
                          f"{'/'.join(f'{model[i]:.2f}' for i in at)} vs copy {'/'.join(f'{copy[i]:.2f}' for i in at)}"}}


def check_pretrained_vs_scratch(pretrained: dict, scratch: dict, per_clip: dict | None = None) -> dict:
  """Pretrained > scratch in mean PSNR and SSIM, measurably (paired per-clip PSNR difference > 2 SE) when
  per-clip values are given."""
  a, b = float(np.mean(pretrained["psnr"])), float(np.mean(scratch["psnr"]))
  a2, b2 = float(np.mean(pretrained["ssim"])), float(np.mean(scratch["ssim"]))
  detail = f"PSNR {a:.3f} vs {b:.3f} dB; SSIM {a2:.4f} vs {b2:.4f}"
  per_clip = per_clip or {}
  if "pretrained" in per_clip and "scratch" in per_clip:
    m, se, n = wmm.paired_difference(per_clip["pretrained"], per_clip["scratch"])
    holds = m > 2.0 * se and a2 > b2
    detail += f"; paired per-clip PSNR difference {m:+.3f} +- {se:.3f} dB (SE, {n} clips)"
  else:
    holds = a > b and a2 > b2
  return {"pretrained > from-scratch fine-tune (mean PSNR and SSIM)": {"holds": bool(holds), "detail": detail}}


def _psnr(ev: dict) -> float:
  return float(np.mean(ev["per_horizon"]["world_model"]["psnr"]))


def check_student(ev: dict, out_of_family: dict | None, student: dict | None) -> dict:
  """Issue 22: the student's Delta-t-PSNR and PSNR within ``STUDENT_MAX_DB_GAP`` of the teacher's on the held-out
  clips and on the out-of-family split, its long-horizon frame statistics no worse, its batch-1 frame rate."""
  keys = {"clips": f"student: Delta-t-PSNR and PSNR within {STUDENT_MAX_DB_GAP} dB of the teacher's (held-out clips)",
          "oof": f"student: Delta-t-PSNR and PSNR within {STUDENT_MAX_DB_GAP} dB of the teacher's (out of family)",
          "long": "student: long-horizon frame mean and std deviations no worse than the teacher's",
          "fps": f"student: >= {STUDENT_MIN_FPS:g} frames/s at batch 1"}
  if student is None:
    return {k: {"holds": False, "detail": "not run (demo.student.enabled=False)"} for k in keys.values()}

  def gap(t_ev, s_ev):
    dt_t, dt_s = t_ev["delta_psnr"]["mean"], s_ev["delta_psnr"]["mean"]
    p_t, p_s = _psnr(t_ev), _psnr(s_ev)
    holds = dt_s >= dt_t - STUDENT_MAX_DB_GAP and p_s >= p_t - STUDENT_MAX_DB_GAP
    return {"holds": bool(holds), "detail": f"Delta-t-PSNR student {dt_s:+.2f} vs teacher {dt_t:+.2f} dB; PSNR "
                                            f"student {p_s:.2f} vs teacher {p_t:.2f} dB"}

  bar = {keys["clips"]: gap(ev, student["evaluate"])}
  so = student.get("out_of_family")
  bar[keys["oof"]] = (gap(out_of_family["out_of_family"], so["out_of_family"]) if so and out_of_family else
                      {"holds": False, "detail": "no out-of-family split (Breakout only)"})
  t_lh, s_lh = ev.get("long_horizon"), student.get("long_horizon")
  if t_lh is None or s_lh is None:
    bar[keys["long"]] = {"holds": False, "detail": "no long-horizon rollouts"}
  else:
    t, s = t_lh["frame_statistics"], s_lh["frame_statistics"]
    holds = (s["max_rel_mean_dev"] <= t["max_rel_mean_dev"] and s["max_rel_std_dev"] <= t["max_rel_std_dev"])
    bar[keys["long"]] = {"holds": bool(holds), "detail": f"{s_lh['frames']} frames: max relative deviation of the "
                         f"mean student {s['max_rel_mean_dev']:.3f} vs teacher {t['max_rel_mean_dev']:.3f}, of the std "
                         f"{s['max_rel_std_dev']:.3f} vs {t['max_rel_std_dev']:.3f}"}
  fps = student.get("frames_per_second") or {}
  bar[keys["fps"]] = ({"holds": False, "detail": "not measured (demo.student.fps_frames=0)"} if "student" not in fps
                      else {"holds": bool(fps["student"] >= STUDENT_MIN_FPS),
                            "detail": f"student {fps['student']:.1f} vs teacher {fps['teacher']:.1f} frames/s "
                                      "(measured inside the run, not on an idle machine)"})
  return bar


def quality_bar(ev: dict, policy_eval: dict | None = None, out_of_family: dict | None = None) -> dict:
  """Points 1-4 from the evaluation dict of ``evaluation.evaluate`` (+ the policy evaluation), and the
  out-of-family split's points when ``out_of_family`` is given (Breakout). Point 5 (the student against its
  teacher) is ``check_student``."""
  bar = {}
  bar.update(check_action_following(ev.get("delta_psnr"), ev.get("paddle_error")))
  if out_of_family is not None or ev.get("ball_error") is not None:
    bar.update(check_out_of_family(out_of_family, ev.get("ball_error")))
  bar.update(check_copy_last(ev["per_horizon"]))
  bar.update(check_policy_eval(policy_eval))
  bar.update(check_long_horizon(ev.get("long_horizon")))
  return bar


def shortfalls(bar: dict) -> list[str]:
  return [f"{k}: {v['detail']}" for k, v in bar.items() if not v["holds"]]
