"""Fuzz corpus, the command lines users type: ``--config=<file>`` and ``--config.x=y`` overrides (ml_collections)
as every CLI parses them (``user_input.parse_flags``), plus one process per CLI with a bad input file. Rule
(docs/reliability.md): accepted, or one ``error:`` line and exit status 1, no traceback, no output written."""

import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

import _fuzz
from vid2world_jax import user_input

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "test_tiny.py")


def _parse(argv):
  """Parse ``argv`` with fresh flags as the train CLI defines them: the FlagValues, or the SystemExit text."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, lock_config=True)
  flags.DEFINE_string("workdir", None, "workdir", flag_values=fv)
  saved, sys.argv = sys.argv, ["prog", *argv]   # config_flags reads the overrides from sys.argv
  try:
    user_input.parse_flags(["prog", *argv], fv)
    return fv
  except SystemExit as e:
    assert isinstance(e.code, str) and e.code.startswith("error: bad command line: "), e.code
    _fuzz.assert_one_line(e.code)
    return e.code
  finally:
    sys.argv = saved


def _leaves(cfg, prefix=""):
  for k, v in cfg.items():
    if hasattr(v, "items"):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def test_fuzz_config_overrides_one_line(tmp_path):
  base = _parse([f"--config={TINY}"])
  assert not isinstance(base, str)
  leaves = list(_leaves(base.config))
  r = _fuzz.rng("overrides")
  junk = ["", "abc", "1e", "[", "((", "nan", "inf", "-1", "1e999", "True", "None", "{'a': 1}", "0x1g", "\u00e9\u4e2d",
          "".join(chr(int(c)) for c in r.integers(1, 0x2FF, size=12))]
  cases = refused = 0
  for i in r.choice(len(leaves), size=min(40, len(leaves)), replace=False):
    name, _ = leaves[int(i)]
    for value in r.choice(junk, size=3, replace=False):
      out = _parse([f"--config={TINY}", f"--config.{name}={value}"])
      cases += 1
      refused += isinstance(out, str)
      _fuzz.record("--config.x=y overrides", "refused" if isinstance(out, str) else "accepted")
  for argv in ([f"--config={TINY}", "--config.no_such_field=1"], [f"--config={TINY}", "--config.model.nope.x=1"],
               [f"--config={TINY}", "--config"], [f"--config={tmp_path / 'missing.py'}"], ["--config="],
               [f"--config={TINY}", "--nosuchflag"]):
    out = _parse(argv)
    assert isinstance(out, str), argv
    cases += 1
    _fuzz.record("--config file / flags", "refused")
  for name, src in (("syntax", "def get_config(:\n"), ("raises", "def get_config():\n  raise KeyError('x')\n"),
                    ("none", "def get_config():\n  return None\n"), ("empty", ""),
                    ("binary", bytes(_fuzz.rng("cfg").integers(0, 256, 300, dtype=np.uint8)).decode("latin-1"))):
    p = tmp_path / f"{name}.py"
    p.write_text(src, encoding="latin-1")
    out = _parse([f"--config={p}"])
    cases += 1
    _fuzz.record("--config file / flags", "refused" if isinstance(out, str) else "accepted")
  assert refused > 0 and cases >= 100


def _run(args, cwd):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
  lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("W", "I"))
           or ln.startswith("error")]
  return r, lines


@pytest.mark.parametrize("cli", ["train", "encode_latents", "rollout_cli", "convert", "evaluate"])
def test_bad_input_cli_process_one_line_exit_1(tmp_path, cli):
  """One process per CLI: a bad override or a damaged input file -> exit 1, one error line, nothing written."""
  bad = _fuzz.write_bytes(tmp_path, "broken.npz", b"PK\x03\x04 truncated")
  out = tmp_path / "out"
  args = {"train": ["-m", "vid2world_jax.train", f"--config={TINY}", f"--workdir={out}",
                    "--config.optim.lr=abc"],
          "encode_latents": ["-m", "vid2world_jax.data.encode_latents", f"--config={TINY}", f"--out={out}",
                             "--config.data.no_such=1"],
          "rollout_cli": ["-m", "vid2world_jax.rollout_cli", f"--checkpoint={tmp_path}", f"--context={bad}",
                          f"--actions={bad}", f"--out={out}.mp4"],
          "convert": [os.path.join(REPO, "convert_torch_weights.py"), f"--checkpoint={tmp_path / 'x.safetensors'}",
                      f"--out={out}"],
          "evaluate": ["-m", "vid2world_jax.evaluate", f"--pred={bad}", f"--gt={bad}", "--metrics=psnr",
                       f"--output_json={out}.json"]}[cli]
  if cli == "convert":
    _fuzz.write_bytes(tmp_path, "x.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
  r, lines = _run(args, REPO)
  assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
  assert "Traceback" not in r.stderr and len(lines) == 1 and lines[0].startswith("error"), r.stderr[-2000:]
  assert not any(p.startswith("out") for p in os.listdir(tmp_path)), os.listdir(tmp_path)
  _fuzz.record(f"{cli} (process)", "refused")


def test_bad_input_play_cli_context_and_checkpoint(tmp_path):
  """The play CLI: a missing checkpoint, then a real one with a damaged --context or a bad --guidance: exit 1,
  one line naming the problem, no server started."""
  import _rollout_helpers as h
  h.write_toy_checkpoint(tmp_path / "work")
  bad = _fuzz.write_bytes(tmp_path, "ctx.gif", b"GIF89a" + bytes(50))
  base = ["-m", "vid2world_jax.play", f"--config={TINY}:toy", "--port=0", f"--out_dir={tmp_path / 'out'}"]
  for args, names in (([f"--checkpoint={tmp_path / 'nope'}"], "nope"),
                      ([f"--checkpoint={tmp_path / 'work'}", f"--context={bad}"], bad),
                      ([f"--checkpoint={tmp_path / 'work'}", "--guidance=nan"], "--guidance")):
    r, lines = _run(base + args, REPO)
    assert r.returncode == 1 and "play: open" not in r.stdout, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and len(lines) == 1 and names in lines[0], r.stderr[-2000:]
    _fuzz.record("play (process)", "refused")
  assert not os.path.exists(tmp_path / "out")
