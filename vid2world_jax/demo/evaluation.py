"""Stage (c) of the demo: held-out embedded episodes rolled out from their first frame and real actions (causal
action guidance, ``inference.InferenceSession``), a guidance-scale sweep, a shuffled-actions control, long-horizon
sliding-window rollouts, non-autoregressive sampling (ablation iv), and the policy evaluation (paper §5.1
analogue): closed loop on Breakout (``breakout_eval``), open-loop replay on Meta-World (``metaworld_eval``).

Autoregressive rollouts run on the cached fast path whenever the UNet is strictly causal
(``config.eval.cached_rollout`` "auto", the sessions' default) and on the full-window path otherwise; either way the
guidance scale is a traced value and every scale of the sweep shares one compilation.
"""

from __future__ import annotations

import functools
import time

import ml_collections
import numpy as np

from vid2world_jax import inference, pixels, world_model
from vid2world_jax.demo import out_of_family as oof
from vid2world_jax.metrics import world_model_metrics as wmm


def log(msg: str) -> None:
  print(f"[demo] {msg}", flush=True)


def _tqdm(total, desc, enabled):
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def make_session(cfg, params: dict, *, window: int | None = None, ddim_steps: int | None = None
                 ) -> inference.InferenceSession:
  """The inference session of ``params`` with the run's sampler (``config.sampler``; ``ddim_steps`` / ``window``
  override it; the cached fast path by default for a strictly causal UNet, ``config.eval.cached_rollout``)."""
  scfg = inference.sampler_config(cfg, ddim_steps=ddim_steps, window=window or None)
  return inference.InferenceSession.from_params(cfg, params, sampler=scfg)


def to_uint8(frames_pm1: np.ndarray) -> np.ndarray:
  """Frames in [-1, 1] (the data pipeline's) -> uint8 (exact for frames that came from uint8)."""
  return pixels.to_uint8(np.asarray(frames_pm1, np.float32))


def load_eval_clips(cfg) -> dict:
  """Held-out clips: ``{"frames" [N, T, H, W, 3] in [-1, 1], "actions" [N, T, A], "names" [N]}``."""
  from vid2world_jax import data
  clips = data.make_eval_clips(cfg.data, int(cfg.demo.eval_clips), split="test")
  frames, actions, names = [], [], []
  for k in range(len(clips)):
    c = clips[k]
    if c is None:
      continue
    frames.append(c["frames"])
    actions.append(c["actions"])
    names.append(f"{clips.specs[k].name}_t{int(c['start'])}")
  return {"frames": np.stack(frames).astype(np.float32), "actions": np.stack(actions).astype(np.float32),
          "names": names}


frame_metrics = wmm.frame_metrics
per_horizon = wmm.per_horizon


def per_clip_psnr(m: dict) -> list:
  """``[N]`` PSNR per clip, averaged over horizons 1..T-1 (for paired comparisons across clips)."""
  return wmm.per_clip(m["psnr"])


def sample_videos(session: inference.InferenceSession, clips: dict, scale: float, *, seed: int, batch: int,
                  shuffle_actions: bool = False, nar: bool = False, progress: bool = False, desc: str = "",
                  actions: np.ndarray | None = None) -> np.ndarray:
  """Rollouts of all eval clips from their first frame (autoregressive, or ``nar``: non-autoregressive), ``batch``
  per sampler call (the last call padded to the same shape: one compilation): ``[N, T, H, W, 3]`` in [0, 1].
  ``actions``: other actions than the clips' own (``[N, T, A]``); ``shuffle_actions``: another clip's."""
  frames = clips["frames"]
  actions = clips["actions"] if actions is None else np.asarray(actions, np.float32)
  if shuffle_actions:  # the actions of another clip (a derangement: roll by one)
    actions = np.roll(actions, 1, axis=0)
  n, t = frames.shape[:2]
  bsz = int(batch)
  outs = []
  with _tqdm(n, desc, progress) as bar:
    for s in range(0, n, bsz):
      fb, ab = frames[s:s + bsz], actions[s:s + bsz]
      m = fb.shape[0]
      if m < bsz:  # pad to the fixed batch (one compilation)
        fb = np.concatenate([fb, np.repeat(fb[-1:], bsz - m, 0)])
        ab = np.concatenate([ab, np.repeat(ab[-1:], bsz - m, 0)])
      z = session.encode(to_uint8(fb[:, :1]))
      if nar:
        lat = session.nar_latents(z[:, 0], ab, guidance_scale=scale, seed=seed + s, frames=t)
      else:
        lat = session.latent_rollout(z, ab, guidance_scale=scale, seed=seed + s, horizon=t - 1)
      outs.append((session.decode(lat, as_uint8=False)[:m] + 1.0) / 2.0)
      bar.update(m)
  return np.concatenate(outs)


def _sampler(cfg, session, clips, progress, seed=None):
  """``sample(scale, **kw)``: ``sample_videos`` of these clips with the demo's seed and batch."""
  d = cfg.demo
  return functools.partial(sample_videos, session, clips, seed=int(d.seed) if seed is None else seed,
                           batch=int(d.eval_batch), progress=progress)


def evaluate(cfg, params: dict, *, clips: dict | None = None, sweep: bool = True, shuffled: bool = True,
             nar: bool = False, progress: bool | None = None, tag: str = "") -> dict:
  """Stage (c) on the held-out clips. Returns metrics (per horizon) and the arrays for the report."""
  d = cfg.demo
  progress = bool(d.progress) if progress is None else progress
  clips = load_eval_clips(cfg) if clips is None else clips
  session = make_session(cfg, params)
  gt01 = (clips["frames"] + 1.0) / 2.0
  from vid2world_jax.demo import baselines
  base01 = baselines.copy_last_frame(gt01, 1)
  out = {"names": clips["names"], "gt": gt01, "copy_last": base01}
  scale = inference.default_guidance(cfg)
  sample = _sampler(cfg, session, clips, progress)
  pred = sample(scale, desc=f"(c) rollouts{tag} s={scale:g}")
  out["pred"] = pred
  fm = frame_metrics(pred, gt01)
  ph = {"world_model": per_horizon(fm), "copy_last_frame": per_horizon(frame_metrics(base01, gt01))}
  out["per_clip_psnr"] = {"world_model": per_clip_psnr(fm)}
  if shuffled:
    sh = sample(scale, shuffle_actions=True, desc=f"(c) shuffled actions{tag}")
    fs = frame_metrics(sh, gt01)
    ph["shuffled_actions"] = per_horizon(fs)
    out["per_clip_psnr"]["shuffled_actions"] = per_clip_psnr(fs)
    out["delta_psnr"] = wmm.delta_psnr(fm["psnr"], fs["psnr"])
    det = position_detector(cfg)
    if det is not None:
      from vid2world_jax.demo import breakout_eval  # pylint: disable=import-outside-toplevel
      pos_gt = breakout_eval.paddle_positions(det, gt01)
      out["paddle_error"] = {"true": wmm.position_error(breakout_eval.paddle_positions(det, pred), pos_gt),
                             "shuffled": wmm.position_error(breakout_eval.paddle_positions(det, sh), pos_gt)}
      ball_gt = oof.ball_positions(det, gt01)
      out["ball_error"] = {"true": oof.ball_error(oof.ball_positions(det, pred), ball_gt),
                           "shuffled": oof.ball_error(oof.ball_positions(det, sh), ball_gt)}
      out["shuffled"] = sh
  if nar:
    nv = sample(scale, nar=True, desc=f"(c) non-AR sampling{tag}")
    ph["non_autoregressive"] = per_horizon(frame_metrics(nv, gt01))
  out["per_horizon"] = ph
  out["horizons"] = list(range(1, gt01.shape[1]))
  if sweep:
    rows = []
    for s in d.guidance_sweep:
      s = float(s)
      if s == scale:
        m, dp = ph["world_model"], out.get("delta_psnr")
      else:
        fv = frame_metrics(sample(s, desc=f"(c) guidance s={s:g}"), gt01)
        m, dp = per_horizon(fv), None
        if shuffled:  # Delta-t-PSNR at this scale (point 5: does guidance change action following?)
          fsh = frame_metrics(sample(s, shuffle_actions=True, desc=f"(c) guidance s={s:g}, shuffled"), gt01)
          dp = wmm.delta_psnr(fv["psnr"], fsh["psnr"])
      rows.append({"scale": s, "label": f"{s:g}" + (" (no guidance)" if s == 1.0 else ""),
                   **{k: float(np.mean(m[k])) for k in ("psnr", "ssim", "mse")},
                   "delta_psnr": None if dp is None else dp["mean"],
                   "delta_psnr_se": None if dp is None else dp["se"]})
    out["guidance_sweep"] = rows
  return out


def _subset_metrics(det, pred01, other01, gt01, copy01, idx) -> dict:
  """Metrics of the clips ``idx``: per horizon (model, copy-last-frame), Delta-t-PSNR against ``other01`` (the same
  contexts under other actions), paddle and ball position errors under the true and the other actions."""
  fm, fo = frame_metrics(pred01[idx], gt01[idx]), frame_metrics(other01[idx], gt01[idx])
  from vid2world_jax.demo import breakout_eval  # pylint: disable=import-outside-toplevel
  pad_gt, ball_gt = breakout_eval.paddle_positions(det, gt01[idx]), oof.ball_positions(det, gt01[idx])
  return {"clips": int(len(idx)),
          "per_horizon": {"world_model": per_horizon(fm), "other_actions": per_horizon(fo),
                          "copy_last_frame": per_horizon(frame_metrics(copy01[idx], gt01[idx]))},
          "delta_psnr": wmm.delta_psnr(fm["psnr"], fo["psnr"]),
          "paddle_error": {"true": wmm.position_error(breakout_eval.paddle_positions(det, pred01[idx]), pad_gt),
                           "other": wmm.position_error(breakout_eval.paddle_positions(det, other01[idx]), pad_gt)},
          "ball_error": {"true": oof.ball_error(oof.ball_positions(det, pred01[idx]), ball_gt),
                         "other": oof.ball_error(oof.ball_positions(det, other01[idx]), ball_gt)}}


def evaluate_out_of_family(cfg, params: dict, progress: bool | None = None) -> dict | None:
  """The out-of-family split (``demo.out_of_family``; ``out_of_family.make_clips``): mid-game contexts from unseen
  seeds under action families no recording policy produces, and the tracker's actions from the same contexts (the
  in-family control). Metrics of the out-of-family clips together, per family and of the control."""
  d, o = cfg.demo, cfg.demo.out_of_family
  det = position_detector(cfg)
  if not o.enabled or det is None:   # Breakout only (the split is made with its simulator)
    return None
  progress = bool(d.progress) if progress is None else progress
  clips = oof.make_clips(int(o.contexts), int(cfg.data.clip_length), first_seed=int(o.first_seed))
  session = make_session(cfg, params)
  gt01 = (clips["frames"] + 1.0) / 2.0
  from vid2world_jax.demo import baselines  # pylint: disable=import-outside-toplevel
  copy01 = baselines.copy_last_frame(gt01, 1)
  sample = _sampler(cfg, session, clips, progress, seed=int(d.seed) + 13)
  scale = inference.default_guidance(cfg)
  pred = sample(scale, desc="(c) out-of-family rollouts")
  other = sample(scale, actions=oof.other_family_actions(clips), desc="(c) out-of-family, other family's actions")
  fam = clips["family"]
  idx_oof = np.flatnonzero(fam != oof.CONTROL)
  out = {"out_of_family": _subset_metrics(det, pred, other, gt01, copy01, idx_oof),
         "families": {f: _subset_metrics(det, pred, other, gt01, copy01, np.flatnonzero(fam == f))
                      for f in dict.fromkeys(fam.tolist())},
         "contexts": int(o.contexts), "first_seed": int(o.first_seed), "horizons": list(range(1, gt01.shape[1])),
         "missed_real": {f: float(np.mean(clips["missed"][fam == f])) for f in dict.fromkeys(fam.tolist())},
         "protocol": (f"{int(o.contexts)} mid-game contexts (seeds {int(o.first_seed)}.., tracker warm-up 4-16 steps) "
                      f"x families {list(oof.FAMILIES)} + the tracker control; Delta-t-PSNR against the same context "
                      f"under the next family's actions; guidance {scale:g}")}
  keep = [i for f in dict.fromkeys(fam.tolist()) for i in np.flatnonzero(fam == f)[:1]]   # one clip per family
  out["_videos"] = (gt01[keep], pred[keep], copy01[keep], other[keep], [clips["names"][i] for i in keep])
  return out


def is_breakout(cfg) -> bool:
  return cfg.data.source == "embedded" and cfg.data.get("embedded", {}).get("env", "breakout") == "breakout"


def position_detector(cfg):
  """The controlled object's detector for the embedded simulator (fit on its real recorded frames), or None."""
  if not is_breakout(cfg):
    return None
  from vid2world_jax.data import breakout_recording  # pylint: disable=import-outside-toplevel
  from vid2world_jax.data import pipeline as data_pipeline  # pylint: disable=import-outside-toplevel
  return breakout_recording.fit_detector(cfg.data.path or data_pipeline.embedded_path(cfg.data))


def long_horizon(cfg, params: dict, progress: bool | None = None) -> dict | None:
  """Rollouts to ``demo.long_horizon`` x the training window with a sliding window, on held-out episodes long
  enough for it: PSNR/SSIM vs horizon beside copy-last-frame, and the frames' statistics vs the ground truth's."""
  d = cfg.demo
  factor = int(d.long_horizon)
  if factor <= 0:
    return None
  progress = bool(d.progress) if progress is None else progress
  length = int(world_model.model_config(cfg).unet.temporal_length)   # horizon unit: the training window
  window = inference.window_length(cfg)   # the sampler's window (the student's may be shorter than the UNet's)
  lcfg = ml_collections.ConfigDict(cfg.to_dict())
  lcfg.data.clip_length = factor * length + 1
  lcfg.data.on_bad_data = "skip"   # only episodes long enough for the long clip
  lcfg.demo.eval_clips = int(d.long_horizon_clips)
  try:
    clips = load_eval_clips(lcfg)
  except Exception as e:  # noqa: BLE001 - no episode long enough
    log(f"long-horizon evaluation skipped: {type(e).__name__}: {e}")
    return None
  session = make_session(cfg, params, window=window)
  gt01 = (clips["frames"] + 1.0) / 2.0
  from vid2world_jax.demo import baselines  # pylint: disable=import-outside-toplevel
  pred = _sampler(cfg, session, clips, progress, seed=int(d.seed) + 7)(
      inference.default_guidance(cfg), desc=f"(c) long horizon ({gt01.shape[1] - 1} frames)")
  ph = {"world_model": per_horizon(frame_metrics(pred, gt01)),
        "copy_last_frame": per_horizon(frame_metrics(baselines.copy_last_frame(gt01, 1), gt01))}
  out = {"per_horizon": ph, "horizons": list(range(1, gt01.shape[1])), "frames": int(gt01.shape[1] - 1),
         "clips": int(gt01.shape[0]), "window": window, "frame_statistics": wmm.frame_statistics(pred, gt01),
         "names": clips["names"], "gt": gt01, "pred": pred}
  vl = very_long_horizon(cfg, session, progress)
  if vl is not None:
    out["very_long"] = vl
  return out


def very_long_horizon(cfg, session, progress: bool) -> dict | None:
  """Breakout: ``demo.very_long_horizon`` frames (longer than any recorded episode) from unseen initial states
  (seeds 9500..), the ground truth played by the tracker in the simulator; the same metrics as ``long_horizon``."""
  d = cfg.demo
  frames = int(d.get("very_long_horizon", 0))
  if frames <= 0 or not is_breakout(cfg):   # the ground truth comes from the Breakout simulator
    return None
  from vid2world_jax.data import breakout  # pylint: disable=import-outside-toplevel
  from vid2world_jax.demo import baselines  # pylint: disable=import-outside-toplevel
  runs = [breakout.run_policy("tracker", 9500 + k, steps=frames) for k in range(int(d.very_long_horizon_clips))]
  runs = [r for r in runs if len(r["frames"]) == frames + 1]   # the tracker never misses; checked, not assumed
  if not runs:
    return None
  clips = {"frames": pixels.from_uint8(np.stack([r["frames"] for r in runs])),
           "actions": np.stack([r["actions"] for r in runs]), "names": [f"tracker_seed{9500 + k}" for k in
                                                                      range(len(runs))]}
  gt01 = (clips["frames"] + 1.0) / 2.0
  pred = sample_videos(session, clips, inference.default_guidance(cfg), seed=int(d.seed) + 11, batch=len(runs),
                       progress=progress, desc=f"(c) very long horizon ({frames} frames)")
  ph = {"world_model": per_horizon(frame_metrics(pred, gt01)),
        "copy_last_frame": per_horizon(frame_metrics(baselines.copy_last_frame(gt01, 1), gt01))}
  return {"per_horizon": ph, "frames": frames, "clips": len(runs), "frame_statistics": wmm.frame_statistics(pred, gt01)}


def nar_metrics(cfg, params: dict, clips: dict, progress: bool | None = None) -> dict:
  """Non-autoregressive sampling (ablation iv) at the main guidance scale, with true and shuffled actions:
  ``{"per_horizon": {...}, "delta_psnr": {...}}``."""
  d = cfg.demo
  progress = bool(d.progress) if progress is None else progress
  session = make_session(cfg, params)
  gt01 = (clips["frames"] + 1.0) / 2.0
  sample = _sampler(cfg, session, clips, progress)
  fm = {}
  for shuffle in (False, True):
    v = sample(inference.default_guidance(cfg), nar=True, shuffle_actions=shuffle,
               desc="(c) non-AR sampling" + (", shuffled" if shuffle else ""))
    fm[shuffle] = frame_metrics(v, gt01)
  return {"per_horizon": per_horizon(fm[False]), "delta_psnr": wmm.delta_psnr(fm[False]["psnr"], fm[True]["psnr"])}


# =============================================================================================================
# Policy evaluation (paper §5.1 analogue): closed loop on Breakout (breakout_eval), open-loop replay on Meta-World
# (metaworld_eval).


def policy_evaluation(cfg, params: dict) -> dict:
  """Real vs world-model policy ranking for the embedded simulator."""
  pe = cfg.demo.policy_eval
  if cfg.data.get("embedded", {}).get("env", "breakout") == "metaworld":
    from vid2world_jax.demo import metaworld_eval  # pylint: disable=import-outside-toplevel
    out = metaworld_eval.policy_evaluation(cfg, make_session(cfg, params, ddim_steps=int(pe.ddim_steps)))
  else:
    from vid2world_jax.inference import envs  # pylint: disable=import-outside-toplevel
    from vid2world_jax.demo import breakout_eval  # pylint: disable=import-outside-toplevel
    session = make_session(cfg, params, ddim_steps=int(pe.ddim_steps))
    n = len(pe.policies) * int(pe.episodes)
    venv = envs.WorldModelVectorEnv(session, num_envs=n, guidance_scale=inference.default_guidance(cfg))
    t0 = time.time()
    out = breakout_eval.policy_evaluation(venv, pe.policies, int(pe.episodes), int(pe.first_seed), int(pe.horizon),
                                          position_detector(cfg), seed=int(cfg.demo.seed) + 99,
                                          bootstrap=int(pe.get("bootstrap", 1000)))
    log(f"policy evaluation: {n} closed-loop episodes of {int(pe.horizon)} frames in {time.time() - t0:.0f} s")
  return out
