"""The fuzz corpus's seeded mutator: broken variants of the files users hand over (not a test file itself).

``byte_variants(data)`` damages a valid file's bytes (zero-length, truncations, random bytes, flipped bytes,
a valid head with a random tail); ``array_variants(x)`` gives structurally wrong arrays (wrong dtype, wrong
rank, empty, NaN, inf, strings, objects refused by allow_pickle=False). Everything is drawn from one seed
(``V2W_FUZZ_SEED``, default 0), so a failing case is reproduced by its name.
"""

from __future__ import annotations

import os

import numpy as np

SEED = int(os.environ.get("V2W_FUZZ_SEED", "0"))


def rng(salt: str) -> np.random.Generator:
  return np.random.default_rng([SEED, sum(map(ord, salt))])


def byte_variants(data: bytes, salt: str, n_random: int = 2) -> dict[str, bytes]:
  """``{name: damaged bytes}`` of one valid file's ``data``."""
  r = rng(salt)
  n = len(data)
  out = {"zero_length": b"", "one_byte": data[:1], "truncated_10": data[:max(1, n // 10)],
         "truncated_half": data[:n // 2], "truncated_last_byte": data[:-1]}
  for i in range(n_random):
    out[f"random_bytes_{i}"] = r.integers(0, 256, size=int(r.integers(16, 4096)), dtype=np.uint8).tobytes()
  for i in range(n_random):
    b = bytearray(data)
    for pos in r.integers(0, n, size=max(1, n // 200)):
      b[pos] ^= int(r.integers(1, 256))
    out[f"flipped_bytes_{i}"] = bytes(b)
  keep = max(1, min(64, n // 4))
  out["head_then_garbage"] = data[:keep] + r.integers(0, 256, size=n - keep, dtype=np.uint8).tobytes()
  out["text"] = b"this is not the file you are looking for\n"
  return out


def array_variants(x: np.ndarray) -> dict[str, np.ndarray]:
  """``{name: wrong array}`` for a valid array ``x`` (float or uint8) of rank >= 2."""
  xf = x.astype(np.float32)
  nan, inf = xf.copy(), xf.copy()
  nan.reshape(-1)[0] = np.nan
  inf.reshape(-1)[-1] = np.inf
  return {"all_nan": np.full(x.shape, np.nan, np.float32), "one_nan": nan, "one_inf": inf,
          "huge_float64": np.full(x.shape, 1e300, np.float64), "strings": np.full(x.shape[:2], "a"),
          "complex": x.astype(np.complex64), "scalar": np.float32(1.0).reshape(()), "rank1": xf.reshape(-1),
          "rank6": xf.reshape((1, 1, 1, 1, 1, -1)), "empty": np.zeros((0,) + x.shape[1:], x.dtype)}


# (entry point, outcome) -> cases, printed at the end of the session (conftest) for docs/reliability.md
OUTCOMES: dict = {}


def record(entry: str, outcome: str) -> None:
  OUTCOMES[(entry, outcome)] = OUTCOMES.get((entry, outcome), 0) + 1


def write_bytes(d, name: str, data: bytes) -> str:
  path = os.path.join(str(d), name)
  with open(path, "wb") as f:
    f.write(data)
  return path


def assert_one_line(msg: str, names: str | None = None) -> None:
  """``msg`` is one non-empty line (no traceback) and names ``names`` (a path or its base name)."""
  msg = str(msg)
  assert msg and "\n" not in msg.strip() and "Traceback" not in msg, repr(msg)
  if names is not None:
    assert names in msg or os.path.basename(names) in msg, (names, msg)
