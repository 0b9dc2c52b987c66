"""The embedded default simulator: MinAtar Breakout (the `minatar` package), rendered at 3 px per cell.

A real game simulator from a pip package, chosen because every action is visible: the paddle moves one cell
(3 pixels at the trained 32x32 resolution) per action, and the ball moves one cell per frame on a diagonal.
(Meta-World drawer-close, the previous default, moves its arm by less than a pixel per action at 32x32;
docs/demo_results.md.) Sticky actions are off (``sticky_action_prob=0``): an action always does what it says.

Frames: the 10x10 game grid, each cell a 3x3 block, inside a 1-pixel grey wall -> uint8 ``[32, 32, 3]``.
Colours: background black, bricks red, paddle blue, ball white, the ball's trail (its previous cell, so one frame
shows the direction) olive. Actions: MinAtar's minimal set for Breakout, one-hot ``[noop, left, right]``.

Episode protocol (``run_policy``): the initial state is fixed by ``seed`` (MinAtar's reset draws the ball's
starting side; the paddle's starting column is drawn from the same seed, so initial states differ by more than
the ball's side); frame t is rendered, the policy picks a_t from the FRAME (policies are image policies, so the
same policy runs in the simulator and inside a world model), the game advances one step. The episode ends when
the ball is missed (MinAtar's termination) or after ``steps`` actions. Return = bricks broken (MinAtar's reward).

Policies of graded quality (``POLICIES``): "tracker" moves the paddle towards the ball's column (found in the
frame by ``detect``); "tracker_eps{p}" takes a uniformly random action with probability p instead; "random".
Exploration policies (``EXPLORE_POLICIES``, recorded by default so that the data shows actions that do not follow
the ball, and misses): "explore" holds a uniformly random action for a random run (geometric, mean
``EXPLORE_MEAN_RUN`` steps) whatever the ball does; "explore_mix" tracks the ball during some runs and holds a random
action during the others, so it reaches mid-game states and then acts against the ball. "intercept"
(``CATCH_POLICIES``) catches the ball from every side the game allows. Policies outside every recorded family
(``OUT_OF_FAMILY_POLICIES``, for evaluation only): "away" moves the paddle away from the ball's column;
"always_left" / "always_right" hold one key.

Misses: MinAtar ends the episode when the ball is missed and the game's screen stays as it is. The recording keeps
those episodes (``miss_hold`` frames of the frozen last screen are appended, the policy's actions recorded and
without effect), so the data shows what a miss looks like and that nothing moves after it.
"""

from __future__ import annotations

import numpy as np


ENV_NAME = "minatar-breakout"
GRID = 10
CELL = 3
BORDER = 1
RESOLUTION = GRID * CELL + 2 * BORDER  # 32
ACTIONS = ("noop", "left", "right")
ACTION_DIM = len(ACTIONS)
_MINATAR_ACTION = {0: 0, 1: 1, 2: 3}  # our index -> MinAtar's full action index ('n', 'l', 'r')
POLICIES = {"tracker": 0.0, "tracker_eps0.25": 0.25, "tracker_eps0.5": 0.5, "tracker_eps0.75": 0.75,
            "random": 1.0}
EXPLORE_POLICIES = {"explore": 0.0, "explore_mix": 0.5}   # name -> probability that a run tracks the ball
CATCH_POLICIES = ("intercept",)                            # recorded: catches from every side (InterceptPolicy)
OUT_OF_FAMILY_POLICIES = ("away", "always_left", "always_right")
ALL_POLICIES = tuple(POLICIES) + tuple(EXPLORE_POLICIES) + CATCH_POLICIES + OUT_OF_FAMILY_POLICIES
RECORDED_POLICIES_V1 = tuple(POLICIES)                     # the recording before the exploration policies
RECORDED_POLICIES = RECORDED_POLICIES_V1 + tuple(EXPLORE_POLICIES) + CATCH_POLICIES  # the default recording
INTERCEPT_OFFSETS = (0, 1, 2)   # intercept: paddle column - landing column, along the ball's direction, per fall
INTERCEPT_MISS_PROB = 0.2       # intercept: probability of any action (a catch or a miss) on the deciding frame
EXPLORE_MEAN_RUN = 4.0                                     # mean length (steps) of an exploration policy's runs
FORMAT_VERSION = 2

# Cell classes of a rendered frame, in drawing priority (later wins when a cell has several).
CLASSES = ("background", "brick", "trail", "paddle", "ball")
COLOURS = {"background": (0, 0, 0), "brick": (220, 70, 50), "trail": (130, 130, 40), "paddle": (60, 140, 255),
           "ball": (255, 255, 255)}
WALL = (110, 110, 110)


def render(state: np.ndarray) -> np.ndarray:
  """MinAtar Breakout state ``[10, 10, 4]`` bool (paddle, ball, trail, brick) -> uint8 ``[32, 32, 3]``."""
  state = np.asarray(state, bool)
  if state.shape != (GRID, GRID, 4):
    raise ValueError(f"expected a Breakout state [10, 10, 4], got {state.shape}")
  cls = state_labels(state)
  palette = np.array([COLOURS[c] for c in CLASSES], np.uint8)
  cells = palette[cls]                                              # [10, 10, 3]
  img = np.repeat(np.repeat(cells, CELL, axis=0), CELL, axis=1)     # [30, 30, 3]
  out = np.empty((RESOLUTION, RESOLUTION, 3), np.uint8)
  out[:] = np.array(WALL, np.uint8)
  out[BORDER:BORDER + GRID * CELL, BORDER:BORDER + GRID * CELL] = img
  return out


def cell_colours(frames01: np.ndarray) -> np.ndarray:
  """Frames ``[..., 32, 32, 3]`` in [0, 1] -> mean colour of each game cell ``[..., 10, 10, 3]``."""
  f = np.asarray(frames01, np.float32)
  if f.shape[-3:] != (RESOLUTION, RESOLUTION, 3):
    raise ValueError(f"expected frames [..., {RESOLUTION}, {RESOLUTION}, 3], got {f.shape}")
  g = f[..., BORDER:BORDER + GRID * CELL, BORDER:BORDER + GRID * CELL, :]
  g = g.reshape(g.shape[:-3] + (GRID, CELL, GRID, CELL, 3))
  return g.mean(axis=(-4, -2))


class CellDetector:
  """Finds the game objects in frames (real or generated): nearest colour prototype per cell.

  The prototypes are FIT on real frames with their simulator labels (``fit``): the mean cell colour of each
  class; nothing about generated frames is used. ``detect`` returns the paddle column (the bottom-row cell most
  like the paddle), the ball cell (the cell most like the ball) and the brick count."""

  def __init__(self, prototypes: np.ndarray):
    self.prototypes = np.asarray(prototypes, np.float32)  # [len(CLASSES), 3] in [0, 1]

  @classmethod
  def fit(cls, frames01: np.ndarray, labels: np.ndarray) -> "CellDetector":
    """``frames01 [N, 32, 32, 3]``, ``labels [N, 10, 10]`` class indices (``state_labels``)."""
    c = cell_colours(frames01).reshape(-1, 3)
    y = np.asarray(labels).reshape(-1)
    protos = []
    for k, name in enumerate(CLASSES):
      if not np.any(y == k):
        raise ValueError(f"no real cell of class {name!r} to fit the detector on")
      protos.append(c[y == k].mean(0, dtype=np.float64))   # float64: a float32 sum over ~1e5 cells drifts 2e-4
    return cls(np.stack(protos))

  def distances(self, frames01: np.ndarray) -> np.ndarray:
    """``[..., 10, 10, len(CLASSES)]`` squared colour distance of each cell to each prototype."""
    c = cell_colours(frames01)
    return ((c[..., None, :] - self.prototypes) ** 2).sum(-1)

  def classify(self, frames01: np.ndarray) -> np.ndarray:
    return np.argmin(self.distances(frames01), axis=-1)

  def detect(self, frames01: np.ndarray) -> dict:
    """``{"paddle_x" [...], "ball_x" [...], "ball_y" [...], "bricks" [...]}`` for frames ``[..., 32, 32, 3]``."""
    d = self.distances(frames01)
    paddle_x = np.argmin(d[..., GRID - 1, :, CLASSES.index("paddle")], axis=-1)
    ball = d[..., CLASSES.index("ball")].reshape(d.shape[:-3] + (GRID * GRID,))
    ball_idx = np.argmin(ball, axis=-1)
    bricks = np.sum(np.argmin(d, axis=-1) == CLASSES.index("brick"), axis=(-2, -1))
    return {"paddle_x": paddle_x, "ball_x": ball_idx % GRID, "ball_y": ball_idx // GRID, "bricks": bricks}


def state_labels(state: np.ndarray) -> np.ndarray:
  """``[10, 10]`` class index of each cell of a state (the rendering's priority)."""
  state = np.asarray(state, bool)
  cls = np.zeros((GRID, GRID), np.int64)
  for name, ch in (("brick", 3), ("trail", 2), ("paddle", 0), ("ball", 1)):
    cls[state[:, :, ch]] = CLASSES.index(name)
  return cls


def exact_detector() -> CellDetector:
  """The detector with the rendering's own colours (for tests; the demo fits one on recorded frames)."""
  return CellDetector(np.array([COLOURS[c] for c in CLASSES], np.float32) / 255.0)


# -------------------------------------------------------------------------------------------------------------
# The game.

class Game:
  """MinAtar Breakout with sticky actions off: ``reset(seed) -> frame``, ``step(action) -> (frame, reward, done)``."""

  def __init__(self):
    import minatar  # pylint: disable=import-outside-toplevel
    self.env = minatar.Environment("breakout", sticky_action_prob=0.0)
    self.done = False

  def reset(self, seed: int) -> np.ndarray:
    rng = np.random.default_rng(int(seed))
    self.env.seed(int(rng.integers(2 ** 31)))
    self.env.reset()
    self.env.env.pos = int(rng.integers(GRID))  # paddle's starting column, drawn from the same seed
    self.done = False
    return self.frame()

  def state(self) -> np.ndarray:
    return self.env.state()

  def frame(self) -> np.ndarray:
    return render(self.env.state())

  def step(self, action: int) -> tuple[np.ndarray, float, bool]:
    if self.done:
      raise RuntimeError("step() after the episode ended (the ball was missed); call reset()")
    a = int(action)
    if a not in _MINATAR_ACTION:
      raise ValueError(f"action must be 0 (noop), 1 (left) or 2 (right), got {action!r}")
    r, done = self.env.act(_MINATAR_ACTION[a])
    self.done = bool(done)
    return self.frame(), float(r), self.done


def one_hot(a: int) -> np.ndarray:
  v = np.zeros(ACTION_DIM, np.float32)
  v[int(a)] = 1.0
  return v


def toward_ball(paddle_x: np.ndarray, ball_x: np.ndarray) -> np.ndarray:
  """The tracker's action ``[N]``: left (1) / right (2) towards the ball's column, noop (0) under it."""
  paddle_x, ball_x = np.asarray(paddle_x), np.asarray(ball_x)
  return np.where(ball_x < paddle_x, 1, np.where(ball_x > paddle_x, 2, 0)).astype(np.int64)


class TrackerPolicy:
  """Image policy: move the paddle towards the ball's column; with probability ``eps`` a uniformly random action."""

  def __init__(self, eps: float, detector: CellDetector | None = None):
    if not 0.0 <= eps <= 1.0:
      raise ValueError(f"eps must be in [0, 1], got {eps}")
    self.eps = float(eps)
    self.detector = detector or exact_detector()

  def act_on_positions(self, paddle_x: np.ndarray, ball_x: np.ndarray, rng: np.random.Generator,
                       ball_y: np.ndarray | None = None) -> np.ndarray:
    """Vectorised over episodes: ``[N]`` paddle and ball columns (and ball rows, unused here) -> ``[N]`` actions."""
    del ball_y
    greedy = toward_ball(paddle_x, ball_x)
    explore = rng.random(greedy.shape) < self.eps
    return np.where(explore, rng.integers(0, ACTION_DIM, greedy.shape), greedy).astype(np.int64)

  def __call__(self, frames01: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``frames01 [N, 32, 32, 3]`` (the newest frame of each episode) -> ``[N]`` action indices."""
    det = self.detector.detect(frames01)
    return self.act_on_positions(det["paddle_x"], det["ball_x"], rng, ball_y=det["ball_y"])


class _ImagePolicy:
  """Base of the image policies: ``__call__(frames01 [N, 32, 32, 3], rng) -> [N]`` actions through ``detect``."""

  def __init__(self, detector: CellDetector | None = None):
    self.detector = detector or exact_detector()

  def act_on_positions(self, paddle_x, ball_x, rng, ball_y=None):  # pragma: no cover - abstract
    raise NotImplementedError

  def __call__(self, frames01: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    det = self.detector.detect(frames01)
    return self.act_on_positions(det["paddle_x"], det["ball_x"], rng, ball_y=det["ball_y"])


class ExplorePolicy(_ImagePolicy):
  """Temporally correlated exploration: runs of geometric length (mean ``mean_run``); at the start of each run it
  either tracks the ball for the run (probability ``track_prob``) or picks a uniformly random action and holds it
  whatever the ball does. Stateful: one instance per episode (``act_on_positions`` is called once per step)."""

  def __init__(self, track_prob: float, mean_run: float = EXPLORE_MEAN_RUN, detector: CellDetector | None = None):
    super().__init__(detector)
    if not 0.0 <= track_prob <= 1.0 or mean_run < 1.0:
      raise ValueError(f"need track_prob in [0, 1] and mean_run >= 1, got {track_prob}, {mean_run}")
    self.track_prob, self.mean_run = float(track_prob), float(mean_run)
    self._left, self._mode = None, None   # steps left in the current run per episode, and its action (-1 = track)

  def act_on_positions(self, paddle_x, ball_x, rng, ball_y=None):
    del ball_y
    paddle_x, ball_x = np.asarray(paddle_x), np.asarray(ball_x)
    n = paddle_x.shape[0]
    if self._left is None or self._left.shape[0] != n:
      self._left, self._mode = np.zeros(n, np.int64), np.zeros(n, np.int64)
    new = self._left <= 0
    if np.any(new):
      k = int(new.sum())
      self._left[new] = rng.geometric(1.0 / self.mean_run, k)
      self._mode[new] = np.where(rng.random(k) < self.track_prob, -1, rng.integers(0, ACTION_DIM, k))
    self._left -= 1
    return np.where(self._mode < 0, toward_ball(paddle_x, ball_x), self._mode).astype(np.int64)


def landing(ball_x: int, direction: int, rows: int) -> tuple[int, int]:
  """The ball's column and horizontal direction after ``rows`` more falling frames (MinAtar's walls: a move out of
  the grid keeps the ball at the wall for a frame and reverses its direction)."""
  x, d = int(ball_x), int(direction)
  for _ in range(int(rows)):
    x += d
    if not 0 <= x < GRID:
      x, d = min(max(x, 0), GRID - 1), -d
  return x, d


class InterceptPolicy(_ImagePolicy):
  """Plays the catch from every side the game's rule allows. MinAtar bounces the ball when the paddle, after the
  action, stands under the ball's column or under the column it moves to; the trackers almost always catch from
  one column behind the ball, moving with it (83% of the catches in the tracker-family recording), so a model
  trained on them draws the other catches as misses. This policy predicts the column where the ball will reach
  the row above the paddle (``landing``; rising, it assumes the bounce under the bricks' row) and moves to a
  random offset from it along the ball's direction (``INTERCEPT_OFFSETS``, drawn per bounce); on the deciding
  frame it picks uniformly among the actions that catch, or with probability ``miss_prob`` any action. Stateful
  (the ball's previous cell gives its direction): one instance per episode."""

  def __init__(self, miss_prob: float = INTERCEPT_MISS_PROB, detector: CellDetector | None = None):
    super().__init__(detector)
    if not 0.0 <= miss_prob <= 1.0:
      raise ValueError(f"miss_prob must be in [0, 1], got {miss_prob}")
    self.miss_prob = float(miss_prob)
    self._state = None   # per episode: the ball's previous x, y, its vertical direction, this bounce's offset

  def act_on_positions(self, paddle_x, ball_x, rng, ball_y=None):
    if ball_y is None:
      raise ValueError("InterceptPolicy needs the ball's row (ball_y): it predicts where the ball lands")
    paddle_x, ball_x, ball_y = (np.asarray(v).reshape(-1) for v in (paddle_x, ball_x, ball_y))
    n = paddle_x.shape[0]
    if self._state is None or self._state.shape[0] != n:
      self._state = np.array([[-1, -1, 1, 0]] * n, np.int64)
    acts = toward_ball(paddle_x, ball_x)
    for i in range(n):
      x, y, p = int(ball_x[i]), int(ball_y[i]), int(paddle_x[i])
      lx, ly, was_vy, off = (int(v) for v in self._state[i])
      vy = 1 if y > ly else -1 if y < ly else -was_vy   # an unchanged row is a bounce
      if vy < 0 <= was_vy:                              # a new rise: a new offset for the next fall
        off = int(rng.choice(INTERCEPT_OFFSETS))
      self._state[i] = (x, y, vy, off)
      if ly < 0 or y >= GRID - 1:                       # first frame (no direction yet) or the ball is missed
        continue
      d = int(np.sign(x - lx)) or (1 if x == 0 else -1)     # unchanged column: it bounced off a wall
      x8, d8 = landing(x, d, GRID - 2 - y if vy > 0 else max(y - 4, 0) + 5)
      if vy > 0 and y == GRID - 2:                # the deciding frame: the paddle's move settles catch or miss
        catch = {x8, min(max(x8 + d8, 0), GRID - 1)}
        ok = [a for a, dp in enumerate((0, -1, 1)) if min(max(p + dp, 0), GRID - 1) in catch]
        acts[i] = rng.integers(0, ACTION_DIM) if (rng.random() < self.miss_prob or not ok) else rng.choice(ok)
        continue
      target = min(max(x8 + off * d8, 0), GRID - 1)
      acts[i] = 1 if target < p else 2 if target > p else 0
    return acts.astype(np.int64)


class AwayPolicy(_ImagePolicy):
  """Moves the paddle away from the ball's column (towards the far wall when they share a column): the opposite of
  what every recorded policy does, so a world model that learned "the paddle goes where the ball goes" fails it."""

  def act_on_positions(self, paddle_x, ball_x, rng, ball_y=None):
    del rng, ball_y
    paddle_x, ball_x = np.asarray(paddle_x), np.asarray(ball_x)
    same = np.where(paddle_x < GRID // 2, 2, 1)
    return np.where(ball_x < paddle_x, 2, np.where(ball_x > paddle_x, 1, same)).astype(np.int64)


class ConstantPolicy(_ImagePolicy):
  """Holds one key (``action`` index) whatever happens."""

  def __init__(self, action: int, detector: CellDetector | None = None):
    super().__init__(detector)
    self.action = int(action)

  def act_on_positions(self, paddle_x, ball_x, rng, ball_y=None):
    del ball_x, rng, ball_y
    return np.full(np.asarray(paddle_x).shape, self.action, np.int64)


def make_policy(name: str, detector: CellDetector | None = None) -> _ImagePolicy:
  """A fresh policy (exploration policies keep per-episode state: one instance per episode)."""
  if name in POLICIES:
    return TrackerPolicy(POLICIES[name], detector)
  if name in EXPLORE_POLICIES:
    return ExplorePolicy(EXPLORE_POLICIES[name], detector=detector)
  if name == "intercept":
    return InterceptPolicy(detector=detector)
  if name == "away":
    return AwayPolicy(detector)
  if name in ("always_left", "always_right"):
    return ConstantPolicy(ACTIONS.index(name.split("_")[1]), detector)
  raise ValueError(f"unknown policy {name!r}; known: {list(ALL_POLICIES)}")


def episode_return(classes: np.ndarray, ball_y: np.ndarray) -> np.ndarray:
  """Return of episodes from detected frames: bricks broken until the ball reaches the bottom row (a miss: the
  only time Breakout shows the ball in the paddle's row). A brick is broken when its cell, a brick in an earlier
  frame, shows background (the ball or its trail passing over a brick only hides it for a frame or two, so a
  plain drop in the brick count would over-count). ``classes [N, T, 10, 10]`` (``CellDetector.classify``),
  ``ball_y [N, T]`` -> ``[N]``. On real frames this equals MinAtar's reward sum (tested) while no brick wall is
  refilled (all 30 bricks cleared)."""
  classes, ball_y = np.asarray(classes), np.asarray(ball_y)
  n, t = ball_y.shape
  missed = ball_y == GRID - 1
  end = np.where(missed.any(1), missed.argmax(1), t - 1)                     # last frame that counts
  counted = (np.arange(t)[None] <= end[:, None])[:, :, None, None]
  brick = classes == CLASSES.index("brick")
  seen = np.maximum.accumulate(brick, axis=1)                                  # brick at some frame <= s
  seen_before = np.concatenate([np.zeros_like(seen[:, :1]), seen[:, :-1]], axis=1)
  broken = seen_before & (classes == CLASSES.index("background")) & counted
  return broken.any(axis=1).sum(axis=(-2, -1)).astype(np.float64)


def run_policy(policy, seed: int, *, steps: int, policy_seed: int | None = None, miss_hold: int = 0) -> dict:
  """Run ``policy`` (a policy name or instance) from the initial state of ``seed`` for at most ``steps`` actions.
  Returns ``{"frames" uint8 [T, 32, 32, 3], "actions" float32 one-hot [T, 3], "labels" [T, 10, 10],
  "return": float, "done": bool, "miss_frame": int or None}``; T = steps + 1 unless the ball was missed earlier:
  then the last real frame shows the miss, followed by ``miss_hold`` copies of it (the game's screen after the
  end; the policy's actions are recorded and change nothing). The last action is the policy's choice at the last
  frame (recorded, not executed)."""
  pol = make_policy(policy) if isinstance(policy, str) else policy
  rng = np.random.default_rng(seed if policy_seed is None else policy_seed)
  game = Game()
  frame = game.reset(seed)
  frames, actions, labels = [frame], [], [state_labels(game.state())]
  ret, done, miss_frame = 0.0, False, None
  for t in range(steps + 1):
    a = int(pol(frame[None].astype(np.float32) / 255.0, rng)[0])
    actions.append(one_hot(a))
    if t == steps or done:
      break
    frame, r, done = game.step(a)
    ret += r
    frames.append(frame)
    labels.append(state_labels(game.state()))
  if done:
    miss_frame = len(frames) - 1
    for _ in range(int(miss_hold)):
      frames.append(frames[-1])
      labels.append(labels[-1])
      actions.append(one_hot(int(pol(frames[-1][None].astype(np.float32) / 255.0, rng)[0])))
  return {"frames": np.stack(frames), "actions": np.stack(actions), "labels": np.stack(labels), "return": ret,
          "done": done, "miss_frame": miss_frame}
