"""The out-of-family evaluation split of the embedded Breakout default: situations the recording never shows.

A world model trained on the recording policies' data can learn their habit ("the paddle goes where the ball goes")
instead of the game. This split asks it about other action sequences from other states:

* **contexts**: mid-game states from seeds the recording never used (``first_seed``..; the recording uses 1000..,
  policy evaluation 5000..): the tracker plays a random number of warm-up steps (``warmup``), so the ball is in
  flight and bricks are broken; the clip starts there.
* **action families** that no recording policy produces (``FAMILIES``): "hold" (one direction for 2-4 steps, then
  the other, repeated), "alternate" (left, right, left, ... every step), "away" (closed loop: away from the
  ball's column), "noop" (no key at all). Every family is played from EVERY context, so families are compared on
  the same states, and the "tracker" family from the same contexts is the in-family control.
* the ground truth is the real game under those actions (after a missed ball its screen stays frozen, as in the
  recording).

Delta-t-PSNR on this split compares each clip with the same context under the NEXT family's actions (paired by
context; never the same action sequence), so it measures whether the model's frames depend on the actions here.
"""

from __future__ import annotations

import numpy as np

from vid2world_jax import pixels
from vid2world_jax.data import breakout

FAMILIES = ("hold", "alternate", "away", "noop")
CONTROL = "tracker"


def _family_action(family: str, t: int, state: dict, paddle_x: int, ball_x: int) -> int:
  """Action index of ``family`` at clip step ``t`` (``state`` holds the family's per-clip random choices)."""
  if family == "hold":
    run = state["run"]
    return state["first"] if (t // run) % 2 == 0 else 3 - state["first"]       # 1 <-> 2
  if family == "alternate":
    return state["first"] if t % 2 == 0 else 3 - state["first"]
  if family == "away":
    return int(breakout.AwayPolicy().act_on_positions(np.array([paddle_x]), np.array([ball_x]), None)[0])
  if family == "noop":
    return 0
  if family == CONTROL:
    return int(breakout.toward_ball(np.array([paddle_x]), np.array([ball_x]))[0])
  raise ValueError(f"unknown action family {family!r}; known: {list(FAMILIES) + [CONTROL]}")


def _positions(game: breakout.Game) -> tuple[int, int]:
  """Paddle and ball columns from the simulator's state (exact; the policies' image detector sees the same)."""
  st = game.state()
  paddle = int(np.argmax(st[breakout.GRID - 1, :, 0]))
  ball = np.argwhere(st[:, :, 1])
  return paddle, int(ball[0, 1]) if len(ball) else paddle


def make_clips(contexts: int, clip_length: int, *, first_seed: int = 9000, warmup: tuple[int, int] = (4, 16),
               families=FAMILIES, control: bool = True) -> dict:
  """``contexts`` mid-game contexts x (families + the control) real clips of ``clip_length`` frames.

  Returns ``{"frames" float32 [N, T, 32, 32, 3] in [-1, 1], "actions" float32 one-hot [N, T, 3], "names" [N],
  "family" [N], "context" [N] (index of the context), "missed" [N] bool}``, family-major (all contexts of the
  first family, then the next ...; the control last). A context whose warm-up ends the game (never with the
  tracker, but checked) is redrawn from the next seed."""
  fams = list(families) + ([CONTROL] if control else [])
  for f in fams:
    _family_action(f, 0, {"run": 2, "first": 1}, 0, 0)   # unknown names fail here, before any simulation
  starts, seed = [], int(first_seed)
  while len(starts) < int(contexts):
    rng = np.random.default_rng(seed)
    w = int(rng.integers(warmup[0], warmup[1] + 1))
    game = breakout.Game()
    game.reset(seed)
    ok = True
    for _ in range(w):
      p, b = _positions(game)
      _, _, done = game.step(_family_action(CONTROL, 0, {}, p, b))
      if done:
        ok = False
        break
    if ok:
      starts.append((seed, w, {"run": int(rng.integers(2, 5)), "first": int(rng.integers(1, 3))}))
    seed += 1
  frames, actions, names, family, ctx, missed = [], [], [], [], [], []
  for f in fams:
    for ci, (seed, w, state) in enumerate(starts):
      game = breakout.Game()
      game.reset(seed)
      for _ in range(w):                                   # replay the warm-up (deterministic)
        p, b = _positions(game)
        game.step(_family_action(CONTROL, 0, {}, p, b))
      fr, ac, done = [game.frame()], [], False
      for t in range(int(clip_length)):
        p, b = _positions(game)
        a = _family_action(f, t, state, p, b)
        ac.append(breakout.one_hot(a))
        if t == int(clip_length) - 1:
          break                                            # the last action is recorded, not executed
        if not done:
          _, _, done = game.step(a)
        fr.append(game.frame())                            # after a miss the screen stays as it is
      frames.append(np.stack(fr))
      actions.append(np.stack(ac))
      names.append(f"{f}_seed{seed}_w{w}")
      family.append(f)
      ctx.append(ci)
      missed.append(done)
  return {"frames": pixels.from_uint8(np.stack(frames)), "actions": np.stack(actions),
          "names": names, "family": np.array(family), "context": np.array(ctx), "missed": np.array(missed)}


def other_family_actions(clips: dict) -> np.ndarray:
  """The control actions of Delta-t-PSNR on this split: each out-of-family clip gets the actions of the SAME
  context under the next family (cyclically over the out-of-family families); control clips get the first
  family's. ``[N, T, 3]``."""
  fam, ctx, acts = clips["family"], clips["context"], clips["actions"]
  oof = [f for f in dict.fromkeys(fam.tolist()) if f != CONTROL]
  index = {(f, c): i for i, (f, c) in enumerate(zip(fam.tolist(), ctx.tolist()))}
  out = np.empty_like(acts)
  for i, (f, c) in enumerate(zip(fam.tolist(), ctx.tolist())):
    nxt = oof[0] if f == CONTROL else oof[(oof.index(f) + 1) % len(oof)]
    out[i] = acts[index[(nxt, c)]]
  return out


def ball_positions(detector: breakout.CellDetector, videos01: np.ndarray) -> np.ndarray:
  """``[N, T, 32, 32, 3]`` in [0, 1] -> ``[N, T, 2]`` detected ball cell (row, column)."""
  det = detector.detect(np.asarray(videos01, np.float32))
  return np.stack([det["ball_y"], det["ball_x"]], axis=-1)


def ball_error(pos_pred: np.ndarray, pos_gt: np.ndarray) -> dict:
  """Euclidean distance in cells between detected ball cells ``[N, T, 2]``, over horizons 1..T-1:
  ``{"per_horizon" [T-1], "per_clip" [N], "mean"}``."""
  p, g = np.asarray(pos_pred, np.float64), np.asarray(pos_gt, np.float64)
  if p.shape != g.shape or p.ndim != 3 or p.shape[-1] != 2 or p.shape[1] < 2:
    raise ValueError(f"ball positions must both be [N, T >= 2, 2], got {p.shape} / {g.shape}")
  err = np.sqrt(((p - g) ** 2).sum(-1))[:, 1:]
  return {"per_horizon": [float(x) for x in err.mean(0)], "per_clip": [float(x) for x in err.mean(1)],
          "mean": float(err.mean())}
