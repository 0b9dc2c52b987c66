"""CLIP byte-level BPE tokenizer giving exactly ``open_clip.tokenize`` ids (open_clip 2.22.0 semantics).

Per prompt:

1. Cleaning: ``ftfy.fix_text``, ``html.unescape`` applied twice, strip; every run of whitespace -> one
   space, strip; lower-case.
2. Pre-tokenisation with the ``regex`` pattern ``<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|
   [\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`` (case-insensitive; the special tokens written literally in a
   prompt are kept as special tokens, as open_clip does).
3. Each piece's UTF-8 bytes are mapped to printable unicode characters (GPT-2's byte table), the last
   character gets the ``</w>`` end-of-word marker, and BPE merges are applied greedily, always merging the
   lowest-ranked adjacent pair (all its non-overlapping occurrences, left to right) until none is ranked.
4. Ids: ``[SOT=49406] + ids + [EOT=49407]``, zero-padded to ``context_length`` (77); a longer sequence is
   cut to ``context_length`` and its last id overwritten by EOT.

Vocabulary: the merges file ``bpe_simple_vocab_16e6.txt.gz`` (first line a header, then merges
``1 .. 49152-256-2``), vocabulary = 256 byte characters + the same with ``</w>`` + merges + the 2 special
tokens = 49408 entries. It is read from a user-given path or from the installed ``open_clip`` package
(located with ``importlib.util.find_spec``, without importing open_clip, which needs torchvision). Nothing
is ever downloaded.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os
from collections.abc import Sequence

import numpy as np

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # merges actually used by CLIP (the file holds more)
_PATTERN = r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def find_vocab(path: str | None = None) -> str:
  """Path of the BPE merges file: ``path`` if given, else the one shipped with the installed ``open_clip``.

  Raises FileNotFoundError naming both options if neither exists.
  """
  if path is not None:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"BPE vocabulary file not found at the given path {path!r}")
    return path
  spec = importlib.util.find_spec("open_clip")
  if spec is not None and spec.submodule_search_locations:
    for d in spec.submodule_search_locations:
      cand = os.path.join(d, VOCAB_FILENAME)
      if os.path.isfile(cand):
        return cand
  raise FileNotFoundError(
      f"CLIP BPE vocabulary {VOCAB_FILENAME} not found: either pass its path (bpe_path=...) or install "
      "open_clip_torch==2.22.0 (e.g. `pip install --no-deps open_clip_torch==2.22.0`), which ships it. "
      "It is never downloaded.")


@functools.lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
  """GPT-2/CLIP reversible byte -> printable character table (printable latin-1 bytes map to themselves,
  the remaining bytes to ``chr(256 + k)`` in byte order)."""
  keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
  table = {b: chr(b) for b in keep}  # insertion order == vocabulary order: kept bytes first, ascending
  extra = 0
  for b in range(256):
    if b not in table:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def _clean(text: str) -> str:
  import ftfy  # runtime dependency (requirements.txt)
  import regex
  text = ftfy.fix_text(text)
  text = html.unescape(html.unescape(text)).strip()
  text = regex.sub(r"\s+", " ", text).strip()
  return text.lower()


class ClipTokenizer:
  """``tok(["a prompt", ...])`` -> int32 ``[N, context_length]`` ids identical to ``open_clip.tokenize``."""

  def __init__(self, bpe_path: str | None = None, context_length: int = CONTEXT_LENGTH):
    import regex
    if context_length < 2:
      raise ValueError(f"context_length must be >= 2 (SOT and EOT), got {context_length}")
    self.context_length = context_length
    self.bpe_path = find_vocab(bpe_path)
    with gzip.open(self.bpe_path) as f:
      lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
      raise ValueError(f"{self.bpe_path}: not a CLIP BPE merges file (want {NUM_MERGES} pair lines)")
    self.byte_encoder = byte_to_unicode()
    chars = list(self.byte_encoder.values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
    self.encoder = {tok: i for i, tok in enumerate(vocab)}
    self.decoder = {i: tok for tok, i in self.encoder.items()}
    self.ranks = {m: i for i, m in enumerate(merges)}
    self.sot_id = self.encoder[SOT_TOKEN]
    self.eot_id = self.encoder[EOT_TOKEN]
    self.pad_id = 0
    self.vocab_size = len(self.encoder)
    self._special = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}
    self._cache: dict[str, tuple[str, ...]] = {}
    self._pat = regex.compile(SOT_TOKEN + "|" + EOT_TOKEN + _PATTERN, regex.IGNORECASE)

  def _bpe(self, piece: str) -> tuple[str, ...]:
    """BPE symbols of one byte-mapped piece (last symbol carries ``</w>``)."""
    if piece in self._special:
      return (piece,)
    hit = self._cache.get(piece)
    if hit is not None:
      return hit
    word = list(piece[:-1]) + [piece[-1] + "</w>"]
    while len(word) > 1:
      best, best_rank = None, None
      for pair in zip(word[:-1], word[1:]):
        r = self.ranks.get(pair)
        if r is not None and (best_rank is None or r < best_rank):
          best, best_rank = pair, r
      if best is None:
        break
      merged, i = [], 0
      while i < len(word):
        if i < len(word) - 1 and word[i] == best[0] and word[i + 1] == best[1]:
          merged.append(best[0] + best[1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = merged
    out = tuple(word)
    self._cache[piece] = out
    return out

  def encode(self, text: str) -> list[int]:
    """BPE ids of ``text`` without SOT/EOT/padding."""
    if not isinstance(text, str):
      raise ValueError(f"expected a str prompt, got {type(text).__name__}")
    ids = []
    for piece in self._pat.findall(_clean(text)):
      mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
      ids.extend(self.encoder[s] for s in self._bpe(mapped))
    return ids

  def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
    """``texts``: one prompt or a list -> int32 ``[N, context_length]``: SOT, ids, EOT, zeros."""
    if isinstance(texts, str):
      texts = [texts]
    n = self.context_length
    out = np.zeros((len(texts), n), np.int32)
    for row, text in enumerate(texts):
      ids = [self.sot_id] + self.encode(text) + [self.eot_id]
      if len(ids) > n:
        ids = ids[:n]
        ids[-1] = self.eot_id
      out[row, :len(ids)] = ids
    return out

  def decode(self, ids) -> str:
    """Text of ``ids`` (special tokens and padding zeros dropped; ``</w>`` becomes a space)."""
    skip = {self.sot_id, self.eot_id}
    text = "".join(self.decoder[int(i)] for i in ids if int(i) not in skip and int(i) != self.pad_id)
    inv = {c: b for b, c in self.byte_encoder.items()}
    return bytearray(inv[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ").strip()
