"""The play server's JSON API under bad requests and load: every field checked (types, the page's ranges, finite
numbers), every failure answered as one-line JSON with a 4xx/5xx status (save failures included), and a
loopback load test (several clients, one leaving mid-request) after which it still serves with flat memory."""

import http.client
import json
import os
import socket
import threading

import numpy as np
import pytest

import _fuzz
from vid2world_jax.play import game, keymaps, server
from vid2world_jax import video_io


class _Stepper:
  """TEST DOUBLE of the model (not a model): frame = previous frame + 10 + 50 * action[0] (mod 256)."""
  frame_shape, action_dim = (8, 8, 3), 2

  def start(self, context_u8, *, seed, context_actions=None):
    return context_u8[:, -1].astype(np.int32)

  def step(self, state, action, *, guidance_scale):
    f = (state + 10 + (np.asarray(action)[:, :1, None, None] * 50).astype(np.int32)) % 256
    return f.astype(np.uint8), f


@pytest.fixture
def srv(tmp_path):
  ctx = game.Context(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((0, 2), np.float32), "test")
  player = game.Player(_Stepper(), keymaps.generic(2), lambda seed: ctx, guidance_scale=2.0,
                       out_dir=str(tmp_path / "recs"))
  s = server.PlayServer(player)
  s.start_background()
  yield s
  s.shutdown()
  s.server_close()


def _request(srv, method, path, body: bytes | None = None, headers=None):
  """(status, JSON reply) of one request on a fresh connection."""
  conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=20)
  try:
    hdrs = {"Host": "127.0.0.1", **({"Content-Type": "application/json"} if body is not None else {}),
            **(headers or {})}
    conn.request(method, path, body=body, headers=hdrs)
    r = conn.getresponse()
    raw = r.read()
    assert r.getheader("Content-Type") == "application/json", (path, r.status, raw[:200])
    return r.status, json.loads(raw)
  finally:
    conn.close()


def _post(srv, path, obj):
  return _request(srv, "POST", path, json.dumps(obj, allow_nan=True).encode())


def _assert_error(status, reply, code=400):
  assert status == code and set(reply) == {"error"}, (status, reply)
  _fuzz.assert_one_line(reply["error"])


def test_play_api_guidance_validated_bad_input(srv):
  """The issue's defect: {"scale": 1e30} was accepted; the page's slider stops at 7.5."""
  for bad in (1e30, 7.51, -0.1, "2", True, None, [1], {"a": 1}, float("nan"), float("inf")):
    _assert_error(*_post(srv, "/api/guidance", {"scale": bad}))
  _assert_error(*_post(srv, "/api/guidance", {}))
  _assert_error(*_post(srv, "/api/guidance", {"scale": 1, "extra": 2}))
  status, reply = _post(srv, "/api/guidance", {"scale": 7.5})
  assert status == 200 and reply["guidance_scale"] == 7.5 and srv.player.guidance_scale == 7.5
  assert _post(srv, "/api/guidance", {"scale": 0})[1]["guidance_scale"] == 0.0


def test_play_api_save_unwritable_folder_answers_json(srv, tmp_path, monkeypatch):
  """The issue's defect: POST /api/save to a recordings folder that cannot be written dropped the connection."""
  _assert_error(*_post(srv, "/api/save", {}))   # nothing played yet: 400
  assert _post(srv, "/api/step", {"keys": ["ArrowRight"]})[0] == 200
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  srv.player.out_dir = str(blocker / "recs")     # a folder under a file: cannot be created (even as root)
  status, reply = _post(srv, "/api/save", {})
  _assert_error(status, reply, 500)
  assert "cannot save the recording" in reply["error"] and str(blocker) in reply["error"]

  srv.player.out_dir = str(tmp_path / "recs")
  def disk_full(*a, **k):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(video_io, "write_video", disk_full)
  _assert_error(*_post(srv, "/api/save", {}), 500)
  assert not os.path.exists(tmp_path / "recs") or os.listdir(tmp_path / "recs") == []   # nothing partial
  monkeypatch.undo()
  status, reply = _post(srv, "/api/save", {})
  assert status == 200 and os.listdir(tmp_path / "recs") == [os.path.basename(reply["dir"])]
  assert srv.player.status()["saved"] == 1


def _random_value(r: np.random.Generator, depth: int = 0):
  makers = [lambda: None, lambda: True, lambda: False, lambda: int(r.integers(-2**40, 2**40)),
            lambda: int(r.integers(0, 5)), lambda: float(r.normal() * 10.0 ** r.integers(0, 40)),
            lambda: float("nan"), lambda: float("inf"), lambda: -0.0,
            lambda: "".join(chr(int(c)) for c in r.integers(32, 0x3000, size=int(r.integers(0, 80)))),
            lambda: ["ArrowLeft"] * int(r.integers(0, 200)),
            lambda: [_random_value(r, depth + 1) for _ in range(int(r.integers(0, 4)))],
            lambda: {str(i): _random_value(r, depth + 1) for i in range(int(r.integers(0, 3)))}]
  return makers[int(r.integers(0, len(makers) if depth < 2 else len(makers) - 2))]()


def test_play_api_fuzz_every_field(srv):
  """Seeded random JSON for every field of every endpoint, plus damaged bodies: a JSON answer every time, 200
  only for valid requests, and the server still serves afterwards."""
  r = _fuzz.rng("play_api")
  cases = 0
  for path, fields in server.FIELDS.items():
    for _ in range(40):
      body = {f: _random_value(r) for f in fields if r.random() < 0.7}
      if r.random() < 0.2:
        body["unknown_" + str(int(r.integers(0, 9)))] = 1
      status, reply = _post(srv, path, body)
      cases += 1
      _fuzz.record("play HTTP API", "served" if status == 200 else "refused")
      try:
        server.check_body(path, json.loads(json.dumps(body)))
        valid = True
      except server.RequestError:
        valid = False
      if valid and path != "/api/save":
        assert status == 200, (path, body, reply)
      elif status != 200:
        assert 400 <= status < 600
        _fuzz.assert_one_line(reply["error"])
  raw_bodies = [b"", b"{", b"[]", b"null", b"1e999", b'"x"', b"\xff\xfe\x00", b"[" * 5000 + b"]" * 5000,
                b'{"scale": NaN}', b'{"scale": Infinity}', b'{"keys": "ArrowLeft"}']
  raw_bodies += list(_fuzz.byte_variants(json.dumps({"keys": ["KeyA"], "dx": 1.5}).encode(), "body").values())
  for path in list(server.FIELDS) + ["/api/nope", "/", "/api/step?x=1"]:
    for b in raw_bodies:
      status, reply = _request(srv, "POST", path, b)
      cases += 1
      _fuzz.record("play HTTP API", "served" if status == 200 else "refused")
      assert status == 200 or (400 <= status < 600 and "error" in reply), (path, b[:40], status, reply)
  for hdr in ({"Content-Length": "abc"}, {"Content-Length": "-5"}, {"Content-Length": str(1 << 20)}):
    _assert_error(*_request(srv, "POST", "/api/step", None, hdr),
                  413 if hdr["Content-Length"] == str(1 << 20) else 400)
  for method in ("PUT", "DELETE", "PATCH"):
    status, reply = _request(srv, method, "/api/step", b"{}")
    assert status == 501 and "error" in reply
  assert _request(srv, "GET", "/api/status")[0] == 200
  assert cases >= 200


def _rss_kib() -> int:
  with open("/proc/self/status") as f:
    return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def _abandon_midway(port: int):
  """A client that announces a body, sends half of it and disconnects."""
  s = socket.create_connection(("127.0.0.1", port), timeout=5)
  s.sendall(b"POST /api/step HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40\r\n\r\n{\"keys\": [")
  s.close()


def test_play_api_load_clients_and_disconnects_memory_flat(srv):
  port = srv.server_address[1]
  errors = []

  def client(n):
    try:
      for i in range(n):
        status, reply = _post(srv, "/api/step", {"keys": ["ArrowRight"] if i % 2 else [], "dx": 1.0})
        assert status == 200 and reply["frame"].startswith("data:image/png")
    except Exception as e:  # noqa: BLE001 - reported below
      errors.append(e)

  def round_(n):
    threads = [threading.Thread(target=client, args=(n,)) for _ in range(4)]
    threads.append(threading.Thread(target=lambda: [_abandon_midway(port) for _ in range(n // 5)]))
    for t in threads:
      t.start()
    for t in threads:
      t.join(120)
    assert not errors, errors[:3]
    assert _post(srv, "/api/reset", {"seed": 1})[0] == 200   # the episode's frames are let go

  round_(40)
  before = _rss_kib()
  round_(100)
  round_(100)
  grown = _rss_kib() - before
  assert grown < 16 * 1024, f"RSS grew {grown} KiB over 800 steps and 40 abandoned requests"
  status, reply = _request(srv, "GET", "/api/status")
  assert status == 200 and reply["steps"] == 0
  assert threading.active_count() < 20   # abandoned connections do not pile up threads
