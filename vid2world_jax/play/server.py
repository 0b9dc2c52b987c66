"""The play page's local web server (Python's standard library only): one page and a small JSON API.

Bound to 127.0.0.1 (never another interface) and answering only requests whose Host is this machine (no DNS
rebinding). The page (``page.html``, inline JS/CSS, no external asset) drives the loop: it posts the held keys,
gets the next frame back as a PNG data URL, shows it and posts again, so the frame rate is the model's.

  GET  /              the page
  GET  /api/status    seed, step count, guidance scale, key map table, ...
  POST /api/step      {"keys": [KeyboardEvent.code...], "dx": px, "dy": px, "buttons": [0|2...]} -> frame
  POST /api/reset     {"seed": int (optional; default the current seed + 1)} -> the last context frame
  POST /api/guidance  {"scale": float in [0, GUIDANCE_MAX] (the page's slider)}
  POST /api/save      -> the recording's folder and files (game.Player.save)

Every field is checked (``check_body``: known fields only, types, the ranges the page allows, finite numbers);
every failure is answered as JSON ``{"error": one line}``: 400 for a bad request, 403 for a foreign Host, 404,
413, and 500 when the server fails (a recording that cannot be written, a model error; logged with its
traceback). A client that goes away mid-request costs its thread nothing more (socket timeout, no answer sent).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from vid2world_jax.play.game import Player

HOST = "127.0.0.1"
_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")
_MAX_BODY = 1 << 16
GUIDANCE_MAX = 7.5          # the page's guidance slider: 0 .. 7.5
MAX_SEED = 2**31 - 1
MAX_MOUSE = 1e4             # pixels of mouse motion per step
MAX_KEYS = 64               # keys held at once / characters of a KeyboardEvent.code
MAX_BUTTONS = 8


class RequestError(ValueError):
  """A request answered with ``status`` and a one-line JSON error."""

  def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
    super().__init__(" ".join(str(message).split()))
    self.status = int(status)


def _number(body: dict, name: str, lo: float, hi: float, default=None) -> float:
  v = body.get(name, default)
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    raise RequestError(f"{name!r} must be a number, got {type(v).__name__}")
  if not math.isfinite(v) or not lo <= v <= hi:
    raise RequestError(f"{name!r} must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
  return float(v)


def _list(body: dict, name: str, kind: type, max_len: int) -> list:
  v = body.get(name, [])
  if not isinstance(v, list) or len(v) > max_len:
    raise RequestError(f"{name!r} must be a list of at most {max_len} items")
  for x in v:
    if isinstance(x, bool) or not isinstance(x, kind):
      raise RequestError(f"{name!r} items must be {kind.__name__}s, got {type(x).__name__}")
  return v


# endpoint -> fields it accepts
FIELDS = {"/api/step": ("keys", "dx", "dy", "buttons"), "/api/reset": ("seed",), "/api/guidance": ("scale",),
          "/api/save": ()}


def check_body(path: str, body) -> dict:
  """The request's fields, checked and converted; RequestError (400 / 404) names the first bad one."""
  if path not in FIELDS:
    raise RequestError(f"no such endpoint: {path}", HTTPStatus.NOT_FOUND)
  if not isinstance(body, dict):
    raise RequestError("the request body must be a JSON object")
  unknown = sorted(set(body) - set(FIELDS[path]))
  if unknown:
    raise RequestError(f"unknown field(s) for {path}: {', '.join(map(repr, unknown))[:200]}")
  if path == "/api/step":
    keys = _list(body, "keys", str, MAX_KEYS)
    if any(len(k) > MAX_KEYS for k in keys):
      raise RequestError(f"'keys' items must be KeyboardEvent.code names of at most {MAX_KEYS} characters")
    buttons = _list(body, "buttons", int, MAX_BUTTONS)
    if any(not 0 <= b <= 4 for b in buttons):
      raise RequestError(f"'buttons' items must be mouse buttons 0..4, got {buttons}")
    return {"keys": keys, "mouse_dx": _number(body, "dx", -MAX_MOUSE, MAX_MOUSE, 0.0),
            "mouse_dy": _number(body, "dy", -MAX_MOUSE, MAX_MOUSE, 0.0), "buttons": buttons}
  if path == "/api/reset":
    seed = body.get("seed")
    if seed in (None, ""):
      return {"seed": None}
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
      raise RequestError(f"'seed' must be an integer in [0, {MAX_SEED}] or null, got {seed!r}")
    return {"seed": seed}
  if path == "/api/guidance":
    if "scale" not in body:
      raise RequestError("'scale' is required")
    return {"scale": _number(body, "scale", 0.0, GUIDANCE_MAX)}
  return {}


def png_data_url(frame: np.ndarray) -> str:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(frame, np.uint8)).save(buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _frame_reply(player: Player, frame: np.ndarray, **extra) -> dict:
  return {"frame": png_data_url(frame), **extra, "status": player.status()}


class _Handler(BaseHTTPRequestHandler):
  server: "PlayServer"
  timeout = 30   # seconds a client may stall mid-request before its thread lets go

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    if self.server.verbose:
      super().log_message(format, *args)

  def _send(self, code: int, body: bytes, ctype: str):
    self.send_response(code)
    self.send_header("Content-Type", ctype)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Cache-Control", "no-store")
    self.end_headers()
    self.wfile.write(body)

  def _json(self, obj, code: int = 200):
    self._send(code, json.dumps(obj).encode(), "application/json")

  def send_error(self, code, message=None, explain=None):
    """http.server's own failures (bad request line, unsupported method, long URI) as JSON too."""
    self.close_connection = True
    try:
      self._json({"error": " ".join(str(message or HTTPStatus(code).phrase).split())}, code)
    except (ConnectionError, TimeoutError, ValueError):
      pass

  def _local_host(self) -> bool:
    host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost"):
      self._json({"error": f"host {host!r} refused: the play server only answers this machine"},
                 HTTPStatus.FORBIDDEN)
      return False
    return True

  def do_GET(self):  # noqa: N802
    if not self._local_host():
      return
    if self.path in ("/", "/index.html"):
      with open(_PAGE, "rb") as f:
        self._send(200, f.read(), "text/html; charset=utf-8")
    elif self.path == "/api/status":
      self._json(self.server.player.status())
    else:
      self._json({"error": f"not found: {self.path}"}, HTTPStatus.NOT_FOUND)

  def do_POST(self):  # noqa: N802
    if not self._local_host():
      return
    try:
      try:
        n = int(self.headers.get("Content-Length") or 0)
      except ValueError:
        raise RequestError("bad Content-Length header") from None
      if n < 0:
        raise RequestError("bad Content-Length header")
      if n > _MAX_BODY:
        raise RequestError("request too large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
      raw = self.rfile.read(n)
      if len(raw) < n:   # the client went away mid-request: nobody to answer
        self.close_connection = True
        return
      try:
        body = json.loads(raw or b"{}")
      except (ValueError, RecursionError) as e:
        raise RequestError(f"the request body is not valid JSON ({type(e).__name__})") from None
      self._json(self._route(check_body(self.path, body)))
    except RequestError as e:
      self._json({"error": str(e)}, e.status)
    except (ConnectionError, TimeoutError):
      self.close_connection = True
    except Exception as e:  # noqa: BLE001 - a server failure: logged with its traceback, answered as JSON 500
      logging.exception("play server: %s failed", self.path)
      self._json({"error": f"server error on {self.path}: {type(e).__name__}: {' '.join(str(e).split())}"[:600]},
                 HTTPStatus.INTERNAL_SERVER_ERROR)

  def _route(self, req: dict) -> dict:
    p = self.server.player
    if self.path == "/api/step":
      r = p.step(**req)
      return _frame_reply(p, r["frame"], action=[round(float(x), 4) for x in r["action"]], index=r["index"],
                          step_ms=r["step_ms"])
    if self.path == "/api/reset":
      frame = p.reset(req["seed"])
      return _frame_reply(p, frame, index=0)
    if self.path == "/api/guidance":
      return {"guidance_scale": p.set_guidance(req["scale"]), "status": p.status()}
    try:
      return p.save()
    except ValueError as e:   # nothing to save yet
      raise RequestError(str(e)) from None
    except OSError as e:
      raise RequestError(f"cannot save the recording under {os.path.abspath(p.out_dir)}: "
                         f"{e.strerror or type(e).__name__}{f' ({e.filename})' if e.filename else ''}",
                         HTTPStatus.INTERNAL_SERVER_ERROR) from None


class PlayServer(ThreadingHTTPServer):
  daemon_threads = True

  def __init__(self, player: Player, port: int = 0, verbose: bool = False):
    super().__init__((HOST, int(port)), _Handler)
    self.player, self.verbose = player, verbose

  def handle_error(self, request, client_address):
    import sys  # pylint: disable=import-outside-toplevel
    if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
      return   # a client that went away: nothing to report
    super().handle_error(request, client_address)

  @property
  def url(self) -> str:
    return f"http://{HOST}:{self.server_address[1]}/"

  def start_background(self) -> threading.Thread:
    """Serve from a daemon thread (tests); ``shutdown()`` stops it."""
    t = threading.Thread(target=self.serve_forever, name="play-server", daemon=True)
    t.start()
    return t
