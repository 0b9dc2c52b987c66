"""The play page's local web server (Python's standard library only): one page and a small JSON API.

Bound to 127.0.0.1 (never another interface) and answering only requests whose Host is this machine (no DNS
rebinding). The page (``page.html``, inline JS/CSS, no external asset) drives the loop: it posts the held keys,
gets the next frame back as a PNG data URL, shows it and posts again, so the frame rate is the model's.

  GET  /              the page
  GET  /api/status    seed, step count, guidance scale, key map table, ...
  POST /api/step      {"keys": [KeyboardEvent.code...], "dx": px, "dy": px, "buttons": [0|2...]} -> frame
  POST /api/reset     {"seed": int (optional; default the current seed + 1)} -> the last context frame
  POST /api/guidance  {"scale": float}
  POST /api/save      -> the recording's folder and files (game.Player.save)
"""

from __future__ import annotations

import base64
import io
import json
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


def png_data_url(frame: np.ndarray) -> str:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(frame, np.uint8)).save(buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _frame_reply(player: Player, frame: np.ndarray, **extra) -> dict:
  return {"frame": png_data_url(frame), **extra, "status": player.status()}


class _Handler(BaseHTTPRequestHandler):
  server: "PlayServer"

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
    n = int(self.headers.get("Content-Length") or 0)
    if n > _MAX_BODY:
      self._json({"error": "request too large"}, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
      return
    try:
      body = json.loads(self.rfile.read(n) or b"{}")
      if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
      self._json(self._route(body))
    except (ValueError, TypeError, KeyError) as e:
      self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)

  def _route(self, body: dict) -> dict:
    p = self.server.player
    if self.path == "/api/step":
      r = p.step(keys=[str(k) for k in body.get("keys", [])], mouse_dx=float(body.get("dx", 0.0)),
                 mouse_dy=float(body.get("dy", 0.0)), buttons=[int(b) for b in body.get("buttons", [])])
      return _frame_reply(p, r["frame"], action=[round(float(x), 4) for x in r["action"]], index=r["index"],
                          step_ms=r["step_ms"])
    if self.path == "/api/reset":
      seed = body.get("seed")
      frame = p.reset(None if seed in (None, "") else int(seed))
      return _frame_reply(p, frame, index=0)
    if self.path == "/api/guidance":
      return {"guidance_scale": p.set_guidance(float(body["scale"])), "status": p.status()}
    if self.path == "/api/save":
      return p.save()
    raise KeyError(f"no such endpoint: {self.path}")


class PlayServer(ThreadingHTTPServer):
  daemon_threads = True

  def __init__(self, player: Player, port: int = 0, verbose: bool = False):
    super().__init__((HOST, int(port)), _Handler)
    self.player, self.verbose = player, verbose

  @property
  def url(self) -> str:
    return f"http://{HOST}:{self.server_address[1]}/"

  def start_background(self) -> threading.Thread:
    """Serve from a daemon thread (tests); ``shutdown()`` stops it."""
    t = threading.Thread(target=self.serve_forever, name="play-server", daemon=True)
    t.start()
    return t
