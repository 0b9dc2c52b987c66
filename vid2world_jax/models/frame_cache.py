"""The frame cache of the cached (incremental) rollout, passed as ``cache=`` through the UNet's own modules.

During the rollout every DDIM step of a new frame runs the network on ``[history, new frame]`` where the history
inputs do not change between steps. In a strictly causal UNet the history activations therefore do not change
either, and the new frame only reads from them through the temporal ops, which take an optional ``cache``:

* temporal convs (``TemporalConvBlock``, kernel 3, causal padding): the history's part of the new frame's output;
* temporal self-attention (block ``TemporalTransformer``s and ``init_attn``; ``attn1`` and ``attn2`` are both
  self-attentions there): the history keys / values;
* ``temporal_norm="cumulative"`` GroupNorms: the pooled mean / variance of the history frames.

Everything else (ResBlocks, spatial transformers, up/downsampling, embeddings) is per frame and ignores it. One
forward runs in one of two modes:

* ``FrameCache.for_fill(new_index, window)``: the ordinary forward on the history buffer ``[B, Th, ...]``; each
  temporal op records what the new frame at window position ``new_index`` will read (frames ``>= new_index`` of
  the buffer are ignored: causality);
* ``FrameCache.for_step(entries, new_index, window)``: the forward on the new frame ``[B, 1, ...]`` only, reading
  the entries recorded by the fill.

``UNet(new frame, cache=step) == UNet(history + [new frame])[:, new_index]`` up to float rounding (tested <= 1e-5
fp32). ``entries`` is a flat dict pytree keyed by module path
(``"input_blocks.1.0.temopral_conv.conv1.history_part"``), so it can be carried through ``lax.scan`` and duplicated
for the two guidance branches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

FILL, STEP = "fill", "step"


class FrameCache:
  """A scoped view of one cached forward's entries: ``mode`` (``"fill"`` | ``"step"``), ``index`` (the new frame's
  window position, ``[]`` int32, may be traced), ``window`` (the window length the model is called for)."""

  def __init__(self, mode: str, index, window: int, entries: dict | None = None, prefix: str = ""):
    if mode not in (FILL, STEP):
      raise ValueError(f"FrameCache mode must be {FILL!r} or {STEP!r}, got {mode!r}")
    self.mode, self.index, self.window = mode, jnp.asarray(index, jnp.int32), int(window)
    self.entries = {} if entries is None else entries
    self.prefix = prefix

  @classmethod
  def for_fill(cls, new_index, window: int) -> "FrameCache":
    return cls(FILL, new_index, window)

  @classmethod
  def for_step(cls, entries: dict, new_index, window: int) -> "FrameCache":
    return cls(STEP, new_index, window, dict(entries))

  @property
  def is_fill(self) -> bool:
    return self.mode == FILL

  def scope(self, name: str) -> "FrameCache":
    """The view of a submodule ``name`` (same entries, keys prefixed ``name.``)."""
    return FrameCache(self.mode, self.index, self.window, self.entries, f"{self.prefix}{name}.")

  def write(self, key: str, value) -> None:
    if not self.is_fill:
      raise ValueError(f"FrameCache: {self.prefix}{key} written in step mode")
    self.entries[self.prefix + key] = value

  def read(self, key: str):
    try:
      return self.entries[self.prefix + key]
    except KeyError:
      raise KeyError(f"FrameCache: no entry {self.prefix + key!r} (was the cache filled by the same model?)") from None

  def valid_history(self, n: int):
    """``[n]`` bool: history positions the new frame sees (``< index``)."""
    return jnp.arange(n) < self.index

  def frames_of_call(self, x, t: int):
    """A per-window-frame tensor ``x [B, window, ...]`` -> the frames this call computes: ``[:, :t]`` (fill) or
    the new frame ``[:, index:index+1]`` (step)."""
    if self.is_fill:
      return x[:, :t]
    return jax.lax.dynamic_slice_in_dim(x, self.index, 1, axis=1)


def child(cache: FrameCache | None, name: str) -> FrameCache | None:
  """``cache.scope(name)``, or None without a cache."""
  return None if cache is None else cache.scope(name)


def noncausal_reasons(model) -> list[str]:
  """Why ``model`` cannot run cached (empty list: every temporal op is strictly causal). Asks each submodule that
  defines ``cache_blockers()`` (the temporal conv and the temporal transformer)."""
  problems = []
  for path, m in nnx.iter_graph(model):
    if hasattr(type(m), "cache_blockers"):
      name = ".".join(map(str, path))
      problems += [f"{name}: {r}" for r in m.cache_blockers()]
  return problems


def check_cacheable(model) -> None:
  """Raises ValueError unless every temporal op of ``model`` is strictly causal."""
  problems = noncausal_reasons(model)
  if problems:
    shown = "; ".join(problems[:4]) + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
    raise ValueError("the cached rollout needs a strictly causal UNet (causal temporal attention incl. init_attn, "
                     "temporal_conv_padding='causal', temporal_norm 'per_frame' or 'cumulative'): " + shown)
