"""Policy evaluation inside the world model (the paper's Real2Sim experiment, spec §8.4, after SIMPLER).

A set of policies is run from given initial frames inside the world model (``envs.WorldModelVectorEnv``: all
episodes of a policy in one batch, policy acting on the imagined frames), each episode is scored by a success
function on its frames, and the per-policy success rates are compared with the policies' real success rates:

* Pearson correlation ``r = sum(dx dy) / sqrt(sum(dx^2) sum(dy^2))`` with ``dx = sim - mean(sim)``,
  ``dy = real - mean(real)``; NaN when either vector is constant (undefined).
* MMRV, mean maximum rank violation (SIMPLER, Li et al. 2024, "Evaluating Real-World Robot Manipulation Policies
  in Simulation", §4): for policies i, j with real rates R and world-model rates S,
  ``RV(i, j) = |R_i - R_j| * 1[(S_i > S_j) != (R_i > R_j)]`` and ``MMRV = (1/N) sum_i max_j RV(i, j)``.
  Comparisons are strict, as in SIMPLER's reference implementation, so a tie in one ranking and a strict order
  in the other counts as a violation (weighted by the real gap). 0 = the world model ranks every pair like reality;
  lower is better. Pearson: higher is better.

Policies: callables ``policy(frames uint8 [B, H, W, 3], step int) -> actions [B, A]`` (closed loop on the imagined
frames), or ``ReplayPolicy`` (open-loop action sequences, e.g. recorded in a real simulator). Success functions:
``success_fn(frames uint8 [t, H, W, 3]) -> bool`` per episode (the paper used human annotation of the last frame);
``NearestFrameVerifier`` is an automatic stand-in: the label of the nearest labelled reference frame.

CLI::

  python -m vid2world_jax.policy_eval --config=configs/test_tiny.py --checkpoint=/tmp/run/checkpoints \\
      --episodes=eval_set.npz --out=report.json [--guidance=2.5 --ddim_steps=50 --success=pkg.mod:fn]

or ``--recording=<dir>`` (a ``data.simulator.record_dataset`` recording: Real2Sim against the real simulator's
success rates, see ``eval_set_from_recording``); ``--policy=name=pkg.mod:fn`` adds closed-loop policies.

``eval_set.npz``: ``contexts`` uint8 ``[N, k, H, W, 3]``; per policy P ``actions__P`` float32 ``[N, steps, A]``
(replayed open loop) and optionally ``real__P`` (scalar real success rate); optionally ``verifier_frames`` uint8
``[M, H, W, 3]`` + ``verifier_labels`` bool ``[M]`` (used when no ``--success`` is given). The last printed line
is one JSON object with the success rates, Pearson r and MMRV.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np

Policy = Callable[[np.ndarray, int], np.ndarray]
SuccessFn = Callable[[np.ndarray], bool]


# ------------------------------------------------------------------------------------------------------------
# Metrics.

def _pair(sim: Sequence[float], real: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  s = np.asarray(sim, np.float64)
  r = np.asarray(real, np.float64)
  if s.ndim != 1 or s.shape != r.shape:
    raise ValueError(f"sim and real must be 1-D and of equal length, got {s.shape} and {r.shape}")
  if len(s) < 2:
    raise ValueError("need at least two policies to compare rankings")
  return s, r


def pearson(sim: Sequence[float], real: Sequence[float]) -> float:
  """Pearson correlation between world-model and real success rates (NaN if either is constant)."""
  s, r = _pair(sim, real)
  ds, dr = s - s.mean(), r - r.mean()
  den = np.sqrt(np.sum(ds * ds) * np.sum(dr * dr))
  if den == 0.0:
    return float("nan")
  return float(np.sum(ds * dr) / den)


def rank_violations(sim: Sequence[float], real: Sequence[float]) -> np.ndarray:
  """``RV [N, N]``: ``|R_i - R_j|`` where the strict orders of (S_i, S_j) and (R_i, R_j) disagree, else 0."""
  s, r = _pair(sim, real)
  disagree = (s[:, None] > s[None, :]) != (r[:, None] > r[None, :])
  return np.where(disagree, np.abs(r[:, None] - r[None, :]), 0.0)


def mmrv(sim: Sequence[float], real: Sequence[float]) -> float:
  """Mean maximum rank violation (SIMPLER): ``mean_i max_j RV(i, j)``."""
  return float(rank_violations(sim, real).max(axis=1).mean())


def compare_to_real(sim_rates: Mapping[str, float], real_rates: Mapping[str, float]) -> dict:
  """Pearson r and MMRV over the policies present in both mappings (sorted by name)."""
  names = sorted(set(sim_rates) & set(real_rates))
  missing = sorted(set(real_rates) - set(sim_rates))
  if missing:
    raise ValueError(f"real success rates given for policies that were not evaluated: {missing}")
  if len(names) < 2:
    raise ValueError(f"need real success rates for at least two evaluated policies, got {names}")
  s = [float(sim_rates[n]) for n in names]
  r = [float(real_rates[n]) for n in names]
  return {"policies": names, "sim": s, "real": r, "pearson": pearson(s, r), "mmrv": mmrv(s, r)}


# ------------------------------------------------------------------------------------------------------------
# Policies and verifiers.

class ReplayPolicy:
  """Open-loop policy: ``actions [N, steps, A]``, episode b of a batch replays row ``rows[b]``."""

  def __init__(self, actions: np.ndarray):
    self.actions = np.asarray(actions, np.float32)
    if self.actions.ndim != 3:
      raise ValueError(f"replay actions must be [N, steps, A], got shape {self.actions.shape}")
    self.rows = np.arange(self.actions.shape[0])

  def __call__(self, frames: np.ndarray, step: int) -> np.ndarray:
    if step >= self.actions.shape[1]:
      raise ValueError(f"replay policy has {self.actions.shape[1]} steps, asked for step {step}")
    if len(frames) != len(self.rows):
      raise ValueError(f"replay policy holds {len(self.rows)} episodes, got a batch of {len(frames)}")
    return self.actions[self.rows, step]


class NearestFrameVerifier:
  """Success iff the episode's LAST frame is nearest (mean squared pixel distance) to a frame labelled success."""

  def __init__(self, frames: np.ndarray, labels: np.ndarray):
    self.frames = np.asarray(frames, np.float32)
    self.labels = np.asarray(labels, bool)
    if self.frames.ndim != 4 or self.labels.shape != self.frames.shape[:1]:
      raise ValueError(f"verifier needs frames [M, H, W, 3] and labels [M], got {self.frames.shape} and "
                       f"{self.labels.shape}")

  def __call__(self, episode_frames: np.ndarray) -> bool:
    last = np.asarray(episode_frames[-1], np.float32)
    if last.shape != self.frames.shape[1:]:
      raise ValueError(f"frame shape {last.shape} != verifier frames {self.frames.shape[1:]}")
    d = ((self.frames - last[None]) ** 2).mean(axis=(1, 2, 3))
    return bool(self.labels[int(np.argmin(d))])


# ------------------------------------------------------------------------------------------------------------
# Evaluation loop.

def run_policy_in_world_model(venv, policy: Policy, contexts: np.ndarray, steps: int, success_fn: SuccessFn,
                              seed: int = 0) -> dict:
  """Runs ``policy`` for ``steps`` steps from each context (one batch = ``venv.num_envs`` episodes).

  Returns ``{"successes": bool [N], "success_rate": float, "frames": uint8 [N, k + steps, H, W, 3]}``; an episode
  is scored once, on its full frame sequence, after the last step (as the paper's verifier looks at the end)."""
  contexts = np.asarray(contexts)
  if contexts.shape[0] != venv.num_envs:
    raise ValueError(f"{contexts.shape[0]} contexts for a vector env of {venv.num_envs} envs")
  obs, _ = venv.reset(seed=seed, options={"context": contexts})
  for t in range(steps):
    actions = np.asarray(policy(obs, t), np.float32)
    obs, *_ = venv.step(actions)
  frames = venv.episode_frames()
  successes = np.asarray([bool(success_fn(f)) for f in frames])
  return {"successes": successes, "success_rate": float(successes.mean()), "frames": frames}


def evaluate(venv, policies: Mapping[str, Policy], contexts: np.ndarray, steps: int, success_fn: SuccessFn,
             real_rates: Mapping[str, float] | None = None, seed: int = 0) -> dict:
  """Success rate per policy in the world model (+ Pearson / MMRV against ``real_rates`` when given)."""
  rates, per_episode = {}, {}
  for i, (name, pol) in enumerate(sorted(policies.items())):
    res = run_policy_in_world_model(venv, pol, contexts, steps, success_fn, seed=seed + i)
    rates[name] = res["success_rate"]
    per_episode[name] = res["successes"].tolist()
  report = {"success_rates": rates, "successes": per_episode, "episodes": int(len(contexts)), "steps": int(steps)}
  if real_rates:
    report["comparison"] = compare_to_real(rates, real_rates)
  return report


# ------------------------------------------------------------------------------------------------------------
# CLI.

def _import(path: str):
  if ":" not in path:
    raise ValueError(f"expected 'package.module:name', got {path!r}")
  mod, name = path.split(":", 1)
  return getattr(importlib.import_module(mod), name)


def load_eval_set(path: str) -> dict:
  """Reads the ``.npz`` eval set described in the module doc."""
  with np.load(path) as z:
    data = {k: z[k] for k in z.files}
  if "contexts" not in data:
    raise ValueError(f"{path}: missing 'contexts' (uint8 [N, k, H, W, 3])")
  ctx = data["contexts"]
  if ctx.ndim != 5 or ctx.dtype != np.uint8:
    raise ValueError(f"{path}: contexts must be uint8 [N, k, H, W, 3], got {ctx.dtype} {ctx.shape}")
  policies = {k[len("actions__"):]: ReplayPolicy(v) for k, v in data.items() if k.startswith("actions__")}
  if not policies:
    raise ValueError(f"{path}: no policies (arrays named actions__<policy>)")
  for name, p in policies.items():
    if p.actions.shape[0] != ctx.shape[0]:
      raise ValueError(f"{path}: actions__{name} has {p.actions.shape[0]} episodes, contexts {ctx.shape[0]}")
  real = {k[len("real__"):]: float(v) for k, v in data.items() if k.startswith("real__")}
  verifier = None
  if "verifier_frames" in data:
    verifier = NearestFrameVerifier(data["verifier_frames"], data["verifier_labels"])
  return {"contexts": ctx, "policies": policies, "real": real, "verifier": verifier}


def eval_set_from_recording(dataset_dir: str, *, context_frames: int = 1, steps: int | None = None,
                            split: str = "all") -> dict:
  """Real2Sim eval set from a recorded simulator dataset (``data.simulator.record_dataset`` layout: episode
  ``.npz`` files with frames / actions / success, ``meta.json`` listing each episode's policy and seed).

  Per policy: the recorded action sequences are replayed open loop in the world model from the episodes' first
  ``context_frames`` frames; the real success rate is the recorded one; the verifier is
  ``NearestFrameVerifier`` over the recorded last frames and their success flags. Policies must share the
  initial states (same seeds, as ``record_dataset`` records them); episodes are matched by seed."""
  import os
  with open(os.path.join(dataset_dir, "meta.json")) as f:
    meta = json.load(f)
  names = None
  if split != "all":
    with open(os.path.join(dataset_dir, "splits.json")) as f:
      names = set(json.load(f)[split])
  by_policy: dict[str, dict[int, dict]] = {}
  for e in meta["episodes"]:
    if names is not None and e["name"] not in names:
      continue
    with np.load(os.path.join(dataset_dir, e["name"] + ".npz")) as z:
      by_policy.setdefault(e["policy"], {})[int(e["seed"])] = {k: z[k] for k in z.files}
  if len(by_policy) < 2:
    raise ValueError(f"{dataset_dir}: need episodes of at least two policies, got {sorted(by_policy)}")
  seeds = sorted(set.intersection(*(set(v) for v in by_policy.values())))
  if not seeds:
    raise ValueError(f"{dataset_dir}: the policies share no initial state (seed)")
  k = int(context_frames)
  first = by_policy[sorted(by_policy)[0]]
  contexts = np.stack([first[s]["frames"][:k] for s in seeds])
  t_max = min(ep["actions"].shape[0] for eps in by_policy.values() for ep in eps.values())
  steps = int(steps or (t_max - k))
  if k - 1 + steps > t_max:
    raise ValueError(f"{k} context frames + {steps} steps need {k - 1 + steps} recorded actions, have {t_max}")
  policies, real, last, labels = {}, {}, [], []
  for p, eps in sorted(by_policy.items()):
    policies[p] = ReplayPolicy(np.stack([eps[s]["actions"][k - 1:k - 1 + steps] for s in seeds]))
    real[p] = float(np.mean([bool(eps[s]["success"]) for s in seeds]))
    for ep in eps.values():
      last.append(ep["frames"][-1])
      labels.append(bool(ep["success"]))
  return {"contexts": contexts, "policies": policies, "real": real,
          "verifier": NearestFrameVerifier(np.stack(last), np.asarray(labels)), "steps": steps}


def main(argv):
  del argv
  from absl import flags
  from vid2world_jax.inference import envs
  from vid2world_jax.inference import flags as model_flags
  f = flags.FLAGS
  if bool(f.episodes) == bool(f.recording):
    raise SystemExit("give exactly one of --episodes (eval-set .npz) or --recording (simulator dataset dir)")
  es = load_eval_set(f.episodes) if f.episodes else eval_set_from_recording(
      f.recording, context_frames=f.context_frames, steps=f.steps or None)
  for spec in f.policy:  # closed-loop policies: name=package.module:callable
    if "=" not in spec:
      raise SystemExit(f"--policy must be name=package.module:callable, got {spec!r}")
    name, path = spec.split("=", 1)
    es["policies"][name] = _import(path)
  if f.success:
    success_fn = _import(f.success)
  elif es["verifier"] is not None:
    success_fn = es["verifier"]
  else:
    raise SystemExit("no success function: pass --success=pkg.module:fn or put verifier_frames/verifier_labels "
                     "in the eval set")
  try:
    sess, scale = model_flags.load_session_from_flags()
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(str(e)) from None
  ctx = es["contexts"]
  replays = [p.actions.shape[1] for p in es["policies"].values() if isinstance(p, ReplayPolicy)]
  steps = f.steps or es.get("steps") or (min(replays) if replays else 0)
  if steps < 1:
    raise SystemExit("--steps is required when no replayed action sequences fix the episode length")
  for name, p in es["policies"].items():
    if isinstance(p, ReplayPolicy) and p.actions.shape[2] != sess.action_dim:
      raise SystemExit(f"actions__{name}: action dimension {p.actions.shape[2]} != model action_dim "
                       f"{sess.action_dim}")
  venv = envs.WorldModelVectorEnv(sess, num_envs=ctx.shape[0], guidance_scale=scale)
  report = evaluate(venv, es["policies"], ctx, steps, success_fn, es["real"] or None, seed=f.seed)
  for name, rate in report["success_rates"].items():
    real = es["real"].get(name)
    print(f"{name:24s} world model {rate:.3f}" + ("" if real is None else f"   real {real:.3f}"))
  if "comparison" in report:
    c = report["comparison"]
    print(f"Pearson r {c['pearson']:.3f}   MMRV {c['mmrv']:.3f}")
  if f.out:
    with open(f.out, "w") as fh:
      json.dump(report, fh, indent=1)
  print(json.dumps({"success_rates": report["success_rates"],
                    **({k: report["comparison"][k] for k in ("pearson", "mmrv")} if "comparison" in report else {})}))


def define_flags():
  from absl import flags
  from vid2world_jax.inference import flags as model_flags
  model_flags.define_model_flags()
  flags.DEFINE_string("episodes", "", "eval set .npz (contexts, actions__<policy>, real__<policy>, verifier_*)")
  flags.DEFINE_string("recording", "", "recorded simulator dataset dir (data.simulator.record_dataset): replay its "
                      "policies' actions, real rates = recorded success rates")
  flags.DEFINE_integer("context_frames", 1, "context frames per episode with --recording")
  flags.DEFINE_multi_string("policy", [], "closed-loop policy name=package.module:callable "
                            "(frames uint8 [B,H,W,3], step) -> actions [B,A]")
  flags.DEFINE_string("success", "", "success function 'package.module:fn' (frames uint8 [t,H,W,3] -> bool)")
  flags.DEFINE_integer("steps", 0, "steps per episode (0 = the replay sequences' length)")
  flags.DEFINE_string("out", "", "write the full JSON report here")


def run():
  """The command line (``python -m vid2world_jax.policy_eval``): flags defined here, never at import."""
  from vid2world_jax import host_memory  # pylint: disable=import-outside-toplevel
  host_memory.reexec_with_huge_pages()   # first: restarts once with glibc.malloc.hugetlb=1 where it helps
  from absl import app
  from vid2world_jax import logging_utils  # pylint: disable=import-outside-toplevel
  define_flags()
  app.run(logging_utils.quiet_main(main))


if __name__ == "__main__":
  run()
