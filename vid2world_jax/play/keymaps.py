"""Key maps of the play page: which keys (and mouse) give which action vector, one per action space.

Keys are named by the browser's ``KeyboardEvent.code`` (layout independent: ``KeyA``, ``ArrowLeft``, ``Space``,
``ShiftLeft``, ``Digit1``, ``Enter``). The page sends the keys held during a frame (plus any tapped and released
since the previous frame) and, for the mouse spaces, the pointer movement in pixels and the held buttons;
``KeyMap.action`` turns them into the model's action vector. The tables below are what the README and the page
show (``KeyMap.table``).

* ``breakout`` (the embedded default, configs/demo.py, 3-dim one-hot ``[noop, left, right]``).
* ``metaworld`` (``data.embedded.env="metaworld"``, 4-dim ``[dx, dy, dz, gripper]`` in [-1, 1]).
* ``rt1`` (configs/rt1.py, 13-dim in ``data/rt1.py``'s ``ACTION_KEYS`` order).
* ``csgo`` (configs/csgo.py, DIAMOND's 51-dim keys + clicks + binned mouse, ``data/csgo.encode_action``).
* ``generic`` (any other action dimension, e.g. configs/test_tiny.py): key pairs raise/lower one dimension each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from vid2world_jax.user_input import UserInputError

# Axis key pairs of the generic map: dimension i is +value with the first key, -value with the second.
_GENERIC_PAIRS = (("ArrowRight", "ArrowLeft"), ("ArrowUp", "ArrowDown"), ("KeyD", "KeyA"), ("KeyW", "KeyS"),
                  ("KeyE", "KeyQ"), ("KeyL", "KeyJ"), ("KeyI", "KeyK"), ("KeyO", "KeyU"))


@dataclasses.dataclass(frozen=True)
class KeyMap:
  """One action space's controls. ``rows``: (keys, what they do) for the page and the README."""
  name: str
  action_dim: int
  rows: tuple[tuple[str, str], ...]
  encode: Callable[[frozenset, float, float, frozenset], np.ndarray]
  uses_mouse: bool = False

  def action(self, keys=(), mouse_dx: float = 0.0, mouse_dy: float = 0.0, buttons=()) -> np.ndarray:
    """float32 ``[action_dim]`` for the held ``keys`` (KeyboardEvent.code names), the mouse movement since the
    previous frame (pixels) and the held mouse ``buttons`` (0 = left, 2 = right)."""
    a = np.asarray(self.encode(frozenset(keys), float(mouse_dx), float(mouse_dy), frozenset(buttons)), np.float32)
    if a.shape != (self.action_dim,):
      raise AssertionError(f"key map {self.name} made an action of shape {a.shape}")
    return a

  def table(self) -> list[dict]:
    return [{"keys": k, "does": d} for k, d in self.rows]


def _axis(keys, plus: str, minus: str, value: float) -> float:
  return value * ((plus in keys) - (minus in keys))


def breakout() -> KeyMap:
  def encode(keys, dx, dy, buttons):
    left = bool(keys & {"ArrowLeft", "KeyA"})
    right = bool(keys & {"ArrowRight", "KeyD"})
    a = np.zeros(3, np.float32)
    a[1 if left and not right else 2 if right and not left else 0] = 1.0
    return a
  return KeyMap("breakout", 3, (("ArrowLeft / A", "left: [0, 1, 0]"), ("ArrowRight / D", "right: [0, 0, 1]"),
                                ("nothing (or both)", "noop: [1, 0, 0]")), encode)


def metaworld(value: float = 1.0) -> KeyMap:
  def encode(keys, dx, dy, buttons):
    return [_axis(keys, "ArrowRight", "ArrowLeft", value), _axis(keys, "ArrowUp", "ArrowDown", value),
            _axis(keys, "KeyW", "KeyS", value), value if "Space" in keys else -value]
  return KeyMap("metaworld", 4, (
      ("ArrowRight / ArrowLeft", f"end effector dx = +{value:g} / -{value:g} (dim 0)"),
      ("ArrowUp / ArrowDown", f"dy = +{value:g} / -{value:g} (dim 1)"),
      ("W / S", f"dz = +{value:g} / -{value:g} (dim 2)"),
      ("Space held", f"gripper = +{value:g} (close); released: -{value:g} (open) (dim 3)")), encode)


def rt1(value: float = 1.0) -> KeyMap:
  """Dims (data/rt1.py ACTION_KEYS): 0-1 base_displacement_vector, 2 base rotation, 3 gripper_closedness,
  4-6 rotation_delta (roll, pitch, yaw), 7-9 terminate_episode, 10-12 world_vector (x, y, z)."""
  def encode(keys, dx, dy, buttons):
    a = np.zeros(13, np.float32)
    a[3] = value if "Space" in keys else (-value if "KeyG" in keys else 0.0)
    a[4] = _axis(keys, "KeyO", "KeyU", value)
    a[5] = _axis(keys, "KeyI", "KeyK", value)
    a[6] = _axis(keys, "KeyL", "KeyJ", value)
    a[7:10] = (1.0, 0.0, 0.0) if "Enter" in keys else (0.0, 1.0, 0.0)
    a[10] = _axis(keys, "ArrowUp", "ArrowDown", value)
    a[11] = _axis(keys, "ArrowLeft", "ArrowRight", value)
    a[12] = _axis(keys, "KeyW", "KeyS", value)
    return a
  v = f"{value:g}"
  return KeyMap("rt1", 13, (
      ("ArrowUp / ArrowDown", f"world_vector x = +{v} / -{v} (dim 10)"),
      ("ArrowLeft / ArrowRight", f"world_vector y = +{v} / -{v} (dim 11)"),
      ("W / S", f"world_vector z = +{v} / -{v} (dim 12)"),
      ("O / U", f"rotation_delta roll = +{v} / -{v} (dim 4)"),
      ("I / K", f"rotation_delta pitch = +{v} / -{v} (dim 5)"),
      ("L / J", f"rotation_delta yaw = +{v} / -{v} (dim 6)"),
      ("Space / G", f"gripper_closedness = +{v} (close) / -{v} (open), else 0 (dim 3)"),
      ("Enter", "terminate_episode = [1, 0, 0]; otherwise [0, 1, 0] (dims 7-9)"),
      ("(none)", "base_displacement (dims 0-2) stay 0")), encode)


def csgo() -> KeyMap:
  from vid2world_jax.data import csgo as csgo_data  # pylint: disable=import-outside-toplevel
  codes = {"w": "KeyW", "a": "KeyA", "s": "KeyS", "d": "KeyD", "space": "Space", "ctrl": "ControlLeft",
           "shift": "ShiftLeft", "1": "Digit1", "2": "Digit2", "3": "Digit3", "r": "KeyR"}

  def encode(keys, dx, dy, buttons):
    held = [k for k, c in codes.items() if c in keys or (c.endswith("Left") and c[:-4] + "Right" in keys)]
    return csgo_data.encode_action(held, left_click=0 in buttons, right_click=2 in buttons, mouse_dx=dx,
                                   mouse_dy=dy)
  return KeyMap("csgo", 51, (
      ("W A S D, Space, Ctrl, Shift, 1 2 3, R", "the 11 multi-hot keys (dims 0-10), held = 1"),
      ("left / right mouse button", "left click (dim 11) / right click (dim 12)"),
      ("mouse movement (click the frame to lock the pointer, Esc to release)",
       "x / y pixels per frame -> nearest of DIAMOND's 23 / 15 bins (dims 13-35 / 36-50)")), encode,
      uses_mouse=True)


def generic(action_dim: int, value: float = 1.0) -> KeyMap:
  if action_dim > len(_GENERIC_PAIRS):
    raise UserInputError(f"no key map for {action_dim}-dim actions (the generic map covers up to "
                     f"{len(_GENERIC_PAIRS)} dims); pick one with --keymap")
  pairs = _GENERIC_PAIRS[:action_dim]

  def encode(keys, dx, dy, buttons):
    return [_axis(keys, p, m, value) for p, m in pairs]
  return KeyMap(f"generic{action_dim}", action_dim, tuple(
      (f"{p} / {m}", f"dim {i} = +{value:g} / -{value:g}") for i, (p, m) in enumerate(pairs)), encode)


KEYMAPS = ("breakout", "metaworld", "rt1", "csgo", "generic")


def for_config(cfg, name: str = "auto", value: float = 1.0) -> KeyMap:
  """The key map named ``name``, or for ``auto`` the one of ``cfg``'s data source and action dimension."""
  dim = int(cfg.model.unet.action_dim)
  if name == "auto":
    data = cfg.get("data") or {}
    source = data.get("source", "")
    env = (data.get("embedded") or {}).get("env", "")
    name = {("embedded", "breakout"): "breakout", ("embedded", "metaworld"): "metaworld"}.get(
        (source, env), source if source in ("rt1", "csgo") else "generic")
  makers = {"breakout": breakout, "metaworld": lambda: metaworld(value), "rt1": lambda: rt1(value), "csgo": csgo,
            "generic": lambda: generic(dim, value)}
  if name not in makers:
    raise UserInputError(f"unknown key map {name!r}; known: auto, {', '.join(KEYMAPS)}")
  km = makers[name]()
  if km.action_dim != dim:
    raise UserInputError(f"key map {km.name} makes {km.action_dim}-dim actions, the model takes {dim}")
  return km
