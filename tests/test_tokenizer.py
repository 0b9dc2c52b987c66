"""CLIP BPE tokenizer: exact ``open_clip.tokenize`` ids (fixture prompts, and the installed open_clip 2.22.0
tokenizer module as an oracle on tricky and random text), truncation, padding, vocabulary lookup errors.

Keyword: ``tokenizer`` (all tests); the fixture test also has ``parity``.
"""

import importlib.util
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vid2world_jax.models import tokenizer as tk
from vid2world_jax.testing import fixtures as fx

TEXT_FIXTURES = [p for p in fx.discover("clip_text") if "tokenizer/prompts" in np.load(os.path.join(p, "io.npz"))]


@pytest.fixture(scope="module")
def tok():
  return tk.ClipTokenizer()


@pytest.fixture(scope="module")
def oracle():
  """open_clip 2.22.0's own tokenizer.py, loaded from its file (the package itself needs torchvision)."""
  path = os.path.join(os.path.dirname(tk.find_vocab()), "tokenizer.py")
  spec = importlib.util.spec_from_file_location("_open_clip_tokenizer_reference", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)  # imports torch, ftfy, regex (dev requirements)
  return lambda texts: mod.tokenize(texts).numpy()


def test_parity_tokenizer_fixture_ids(tok):
  assert TEXT_FIXTURES, "no clip_text fixture with tokenizer/prompts found"
  for path in TEXT_FIXTURES:
    f = fx.load(path)
    prompts = [str(p) for p in f.io["tokenizer/prompts"]]
    ref = f.io["tokenizer/ids"]
    ours = tok(prompts)
    assert ours.shape == ref.shape and ours.dtype == np.int32
    for i, p in enumerate(prompts):
      assert np.array_equal(ours[i], ref[i]), f"{f.name} prompt {i} {p!r}: {ours[i][:12]} vs {ref[i][:12]}"
    print(f"{f.name}: {len(prompts)} prompts identical")


TRICKY = [
    "", " ", "A", "a", "aaaa aaaaaaa", "Hello <start_of_text> world <END_OF_TEXT>", "don't won't I'LL we'd",
    "ÉCOLE Straße ﬁne İstanbul", "日本語のテキスト 中文", "😀😃😄 👍🏽 🇫🇷", "&amp;amp; &lt;b&gt;bold&lt;/b&gt;",
    "mojibake: Ã©tÃ©", "tabs\tand\r\nlines\u00a0nbsp\u2003em", "x" * 400, "1234567890 3.14159 1e-5",
    "The robot arm moves the red block to the left, then closes the drawer.",
    " ".join(["word"] * 100), "a,b;c:d!e?f(g)h[i]j{k}l", "—–-‐ “”‘’ «» …",
]


def test_tokenizer_matches_open_clip_on_tricky_text(tok, oracle):
  np.testing.assert_array_equal(tok(TRICKY), oracle(TRICKY))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_tokenizer_matches_open_clip_on_random_text(tok, oracle, texts):
  np.testing.assert_array_equal(tok(texts), oracle(texts))


def test_tokenizer_layout_and_truncation(tok):
  assert (tok.sot_id, tok.eot_id, tok.pad_id, tok.vocab_size) == (49406, 49407, 0, 49408)
  empty = tok("")
  assert empty.shape == (1, 77)
  assert list(empty[0, :2]) == [49406, 49407] and not empty[0, 2:].any()
  long = tok("cat " * 200)[0]
  assert long[0] == 49406 and long[76] == 49407 and (long[1:76] != 0).all() and (long[1:76] != 49407).all()
  exact = tok(["cat " * 75, "cat " * 76])  # 75 words fit exactly; 76 get truncated
  assert exact[0, 76] == 49407 and exact[1, 76] == 49407
  assert np.array_equal(exact[0], exact[1])
  assert tok.decode(tok("  A Cat,   sitting! ")[0]) == "a cat , sitting !"


def test_tokenizer_vocab_lookup_errors(monkeypatch, tmp_path):
  with pytest.raises(FileNotFoundError, match="given path"):
    tk.ClipTokenizer(bpe_path=str(tmp_path / "missing.txt.gz"))
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
  with pytest.raises(FileNotFoundError) as e:
    tk.find_vocab()
  assert "bpe_path" in str(e.value) and "open_clip" in str(e.value)


def test_tokenizer_explicit_path_and_bad_file(tmp_path):
  import gzip
  path = tk.find_vocab()
  assert tk.ClipTokenizer(bpe_path=path)("a photo")[0, 1] == tk.ClipTokenizer()("a photo")[0, 1]
  bad = tmp_path / "bad.txt.gz"
  with gzip.open(bad, "wt") as f:
    f.write("header\na b\n")
  with pytest.raises(ValueError, match="not a CLIP BPE merges file"):
    tk.ClipTokenizer(bpe_path=str(bad))
  with pytest.raises(ValueError):
    tk.ClipTokenizer(context_length=1)
