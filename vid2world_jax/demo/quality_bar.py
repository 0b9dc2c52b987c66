"""The embedded default's quality bar (issue 12, points 1-4), measured from the run's own metrics.

Each check returns ``{"holds": bool, "detail": str}``; a check whose inputs were not computed is reported as not
holding (never as passing). ``shortfalls`` lists what fell short, for ``--config.demo.strict=True``.

1. action following: Delta-t-PSNR (true minus shuffled actions) >= 1 dB on average and >= 0 at every horizon,
   with its paired standard error; and the paddle-position error under true actions at most half of that under
   shuffled actions.
2. better than doing nothing: world model > copy-last-frame in PSNR at every horizon from 2 on (SSIM reported).
3. policy evaluation: Pearson r >= 0.8 and MMRV <= 0.1 (>= 4 policies, >= 8 initial states each).
4. long horizon (4x the training window): the frames' mean and std stay within 10% of the ground truth's.
Plus the comparisons the paper claims (pretrained > scratch), when the ablation driver supplies them.
"""

from __future__ import annotations

import numpy as np

from vid2world_jax.metrics import world_model_metrics as wmm

MIN_DELTA_PSNR = 1.0
MAX_POSITION_ERROR_RATIO = 0.5
MIN_PEARSON = 0.8
MAX_MMRV = 0.1
MIN_POLICIES = 4
MIN_EPISODES = 8
MAX_REL_STAT_DEV = 0.10


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
  return {"world model > copy-last-frame, PSNR, every horizon from 2": {
      "holds": bool(wins) and all(wins),
      "detail": f"PSNR model {_seq(wm['psnr'])} vs copy {_seq(cl['psnr'])}; SSIM model "
                f"{_seq(wm['ssim'], 3)} vs copy {_seq(cl['ssim'], 3)}"}}


def check_policy_eval(pe: dict | None) -> dict:
  key = f"policy evaluation: Pearson r >= {MIN_PEARSON:g} and MMRV <= {MAX_MMRV:g} (>= {MIN_POLICIES} policies x >= {MIN_EPISODES} states)"
  if pe is None:
    return {key: {"holds": False, "detail": "not run (demo.policy_eval.enabled=False)"}}
  enough = len(pe["policies"]) >= MIN_POLICIES and int(pe["episodes_per_policy"]) >= MIN_EPISODES
  r, m = pe.get("pearson_r"), pe.get("mmrv")
  holds = enough and r is not None and np.isfinite(r) and r >= MIN_PEARSON and m <= MAX_MMRV
  return {key: {"holds": bool(holds),
                "detail": f"Pearson r {r:.3f}, MMRV {m:.3f}; real / world model mean return: " + ", ".join(
                    f"{p} {pe['real'][p]:.2f}/{pe['world_model'][p]:.2f}" for p in pe["policies"])
                + f" ({len(pe['policies'])} policies x {pe['episodes_per_policy']} states)"}}


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


def quality_bar(ev: dict, policy_eval: dict | None = None) -> dict:
  """Points 1-4 from the evaluation dict of ``evaluation.evaluate`` (+ the policy evaluation)."""
  bar = {}
  bar.update(check_action_following(ev.get("delta_psnr"), ev.get("paddle_error")))
  bar.update(check_copy_last(ev["per_horizon"]))
  bar.update(check_policy_eval(policy_eval))
  bar.update(check_long_horizon(ev.get("long_horizon")))
  return bar


def shortfalls(bar: dict) -> list[str]:
  return [f"{k}: {v['detail']}" for k, v in bar.items() if not v["holds"]]
