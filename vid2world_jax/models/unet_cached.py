"""Cached (incremental) forward of a strictly causal :class:`~vid2world_jax.models.unet.UNet`: the fast path of
the autoregressive rollout.

During the rollout every DDIM step of a new frame runs the network on ``[history, new frame]`` where the history
inputs (latents at ``t_small``, timesteps, actions, masks, conditioning) do not change between steps. In a causal
UNet the history activations therefore do not change either, and the new frame only reads from them through

* temporal convs (kernel 3, causal padding): the conv INPUTS (after GroupNorm + SiLU) of the two previous frames;
* temporal self-attention (block transformers and ``init_attn``, causal mask; both ``attn1`` and ``attn2`` of a
  temporal ``BasicTransformerBlock`` are self-attentions): the history keys / values;
* ``temporal_norm="cumulative"`` GroupNorms: the per-frame means / variances of the history frames
  (``"per_frame"`` needs nothing).

Everything else (ResBlocks, spatial transformers, up/downsampling, embeddings) is per frame. So:

* :func:`fill` runs the full forward on the history buffer ``[B, Th, ...]`` once and records that cache for the
  new frame's window position ``new_index`` (frames ``>= new_index`` of the buffer are ignored: causality);
* :func:`step` runs the network on the new frame ``[B, 1, ...]`` only, reading the cache.

``step(fill(history)) == UNet(history + [new frame])[:, new_index]`` up to float rounding (tests: <= 1e-5 fp32).
Non-causal models (``temporal_norm="joint"``, non-causal temporal attention / ``init_attn``, symmetric temporal
conv padding) are refused with a ValueError: their history activations depend on the new frame.

The module walk below mirrors ``UNet.__call__`` / ``EmbedSeq`` / ``ResBlock`` / ``TemporalConvBlock`` /
``TemporalTransformer`` and calls their sub-layers, so parameter paths are untouched. (Relative position
embeddings are not supported by the UNet at all, see ``unet._validate``; ``remat`` and ``capture`` are ignored:
inference only.)

Cache (a dict pytree, float32 statistics, compute-dtype tensors), per temporal op, keyed by the module path:
``"<path>.conv<k>"`` ``[B, 2, H, W, C]`` conv inputs of frames ``new_index-2, new_index-1`` (zeros before frame 0);
``"<path>.attn<k>"`` ``(k, v)`` each ``[B, H*W, Th, heads, dim_head]``; ``"<path>.norm..."`` ``(mean, var)`` each
``[B, Th, groups]`` (cumulative norm only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vid2world_jax.models.attention import (NEG_MAX, SpatialTransformer, TemporalTransformer, causal_mask,
                                            dot_attention)
from vid2world_jax.models.temporal import TemporalConvBlock, temporal_group_norm
from vid2world_jax.models.unet_blocks import Downsample, ResBlock, Upsample, fold, unfold


def noncausal_reasons(unet) -> list[str]:
  """Why ``unet`` cannot be cached (empty list: strictly causal in time)."""
  problems = []
  for path, m in nnx.iter_graph(unet):
    name = ".".join(map(str, path))
    if isinstance(m, TemporalConvBlock):
      if m.padding != "causal":
        problems.append(f"{name}: temporal conv padding {m.padding!r}")
      if m.norm == "joint":
        problems.append(f"{name}: temporal_norm 'joint' pools GroupNorm statistics over time")
    elif isinstance(m, TemporalTransformer):
      if not m.causal:
        problems.append(f"{name}: temporal attention is not causal")
      if m.norm_mode == "joint":
        problems.append(f"{name}: temporal_norm 'joint' pools GroupNorm statistics over time")
  return problems


def check_cacheable(unet) -> None:
  """Raises ValueError unless every temporal op of ``unet`` is strictly causal."""
  problems = noncausal_reasons(unet)
  if problems:
    shown = "; ".join(problems[:4]) + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
    raise ValueError("the cached rollout needs a strictly causal UNet (causal temporal attention incl. init_attn, "
                     "temporal_conv_padding='causal', temporal_norm 'per_frame' or 'cumulative'): " + shown)


class _Walk:
  """Mode of one forward walk: ``"fill"`` (writes ``cache``) or ``"step"`` (reads it); ``p`` = new_index."""

  def __init__(self, mode: str, p, cache: dict):
    self.mode, self.p, self.cache = mode, p, cache

  @property
  def fill(self) -> bool:
    return self.mode == "fill"


# ------------------------------------------------------------------------------------------------------------
# Temporal ops.

def _frame_stats(gn, x):
  """Per-frame GroupNorm statistics of ``x [B, T, H, W, C]``: ``(mean, var)`` each ``[B, T, G]`` float32."""
  b, t, c = x.shape[0], x.shape[1], x.shape[-1]
  g = gn.num_groups
  xf = x.astype(jnp.float32).reshape(b, t, -1, g, c // g)
  m = xf.mean(axis=(2, 4))
  v = jnp.square(xf - m[:, :, None, :, None]).mean(axis=(2, 4))
  return m, v


def _norm(walk: _Walk, key: str, gn, x, mode: str):
  if mode == "per_frame":
    return temporal_group_norm(gn, x, mode)
  if mode != "cumulative":
    raise ValueError(f"cached forward: temporal_norm {mode!r} is not causal")
  if walk.fill:
    walk.cache[key] = _frame_stats(gn, x)
    return temporal_group_norm(gn, x, mode)
  m_h, v_h = walk.cache[key]                                      # [B, Th, G]
  m_p, v_p = _frame_stats(gn, x)                                  # [B, 1, G]
  valid = (jnp.arange(m_h.shape[1]) < walk.p)[None, :, None]
  cnt = (walk.p + 1).astype(jnp.float32)
  mean = (jnp.sum(jnp.where(valid, m_h, 0.0), axis=1, keepdims=True) + m_p) / cnt
  var = (jnp.sum(jnp.where(valid, v_h + jnp.square(m_h - mean), 0.0), axis=1, keepdims=True)
         + v_p + jnp.square(m_p - mean)) / cnt                    # law of total variance over frames <= p
  b, t, c = x.shape[0], x.shape[1], x.shape[-1]
  g = gn.num_groups
  xf = x.astype(jnp.float32).reshape(b, t, -1, g, c // g)
  y = (xf - mean[:, :, None, :, None]) * jax.lax.rsqrt(var + gn.eps)[:, :, None, :, None]
  y = y.reshape(x.shape) * gn.scale[...] + gn.bias[...]
  return y.astype(x.dtype)


def _temporal_conv_block(walk: _Walk, name: str, blk: TemporalConvBlock, x):
  if blk.padding != "causal":
    raise ValueError(f"cached forward: {name} has temporal conv padding {blk.padding!r} (needs 'causal')")
  h = x
  for k, seq in enumerate((blk.conv1, blk.conv2, blk.conv3, blk.conv4), start=1):
    gn, *pointwise, conv = list(seq)
    hh = _norm(walk, f"{name}.conv{k}.norm", gn, h, blk.norm)
    for layer in pointwise:  # SiLU [, Dropout]
      hh = layer(hh)
    key = f"{name}.conv{k}"
    if walk.fill:
      padded = jnp.pad(hh, ((0, 0), (2, 0), (0, 0), (0, 0), (0, 0)))
      walk.cache[key] = jax.lax.dynamic_slice_in_dim(padded, walk.p, 2, axis=1)  # frames p-2, p-1
      h = conv(padded)
    else:
      h = conv(jnp.concatenate([walk.cache[key].astype(hh.dtype), hh], axis=1))
  return x + h


def _self_attention(walk: _Walk, key: str, attn, x):
  """Causal temporal self-attention ``x [B, HW, T, C]`` (T = 1 in step mode)."""
  q = attn._heads(attn.to_q(x))
  k = attn._heads(attn.to_k(x))
  v = attn._heads(attn.to_v(x))
  if walk.fill:
    walk.cache[key] = (k, v)
    out = dot_attention(q, k, v, attn.scale, causal_mask(x.shape[-2]))
  else:  # keys = [cached history (masked to positions < p), the new frame]; no copy of the cache
    kc, vc = walk.cache[key]                                      # [B, HW, Th, h, d]
    th = kc.shape[-3]
    logits = lambda kk: jnp.einsum("...qhd,...khd->...hqk", q, kk.astype(q.dtype),
                                   preferred_element_type=jnp.float32) * attn.scale
    sim = jnp.concatenate([jnp.where(jnp.arange(th) < walk.p, logits(kc), NEG_MAX), logits(k)], axis=-1)
    prob = jax.nn.softmax(sim, axis=-1).astype(v.dtype)          # [B, HW, h, 1, Th + 1]
    out = (jnp.einsum("...hqk,...khd->...qhd", prob[..., :th], vc.astype(v.dtype))
           + jnp.einsum("...hqk,...khd->...qhd", prob[..., th:], v))
  out = out.reshape(out.shape[:-2] + (attn.heads * attn.dim_head,))
  return attn.to_out(out)


def _temporal_transformer(walk: _Walk, name: str, tt: TemporalTransformer, x):
  if not tt.causal:
    raise ValueError(f"cached forward: {name} temporal attention is not causal")
  b, t, hh, ww, c = x.shape
  h = _norm(walk, f"{name}.norm", tt.norm, x, tt.norm_mode)
  h = jnp.transpose(h.reshape(b, t, hh * ww, c), (0, 2, 1, 3))   # [B, HW, T, C]
  h = tt.proj_in(h)
  for j, blk in enumerate(tt.transformer_blocks):
    h = _self_attention(walk, f"{name}.transformer_blocks.{j}.attn1", blk.attn1, blk.norm1(h)) + h
    h = _self_attention(walk, f"{name}.transformer_blocks.{j}.attn2", blk.attn2, blk.norm2(h)) + h
    h = blk.ff(blk.norm3(h)) + h
  h = tt.proj_out(h)
  return jnp.transpose(h, (0, 2, 1, 3)).reshape(x.shape) + x


# ------------------------------------------------------------------------------------------------------------
# Blocks and the UNet.

def _resblock(walk: _Walk, name: str, rb: ResBlock, x, emb):
  h = rb.spatial(x, emb)   # frame-wise: the new frame alone
  if rb.use_temporal_conv:
    h = _temporal_conv_block(walk, f"{name}.temopral_conv", rb.temopral_conv, h)
  return h


def _embed_seq(walk: _Walk, name: str, seq, h, emb, ctx):
  b = h.shape[0]
  for i, layer in enumerate(seq):
    n = f"{name}.{i}"
    if isinstance(layer, ResBlock):
      h = _resblock(walk, n, layer, h, emb)
    elif isinstance(layer, SpatialTransformer):
      h = layer(h, *ctx)
    elif isinstance(layer, TemporalTransformer):
      h = _temporal_transformer(walk, n, layer, h)
    elif isinstance(layer, (Downsample, Upsample)):
      h = layer(h)
    elif isinstance(layer, nnx.Conv):
      h = unfold(layer(fold(h)), b)
    else:
      raise TypeError(f"unexpected layer {type(layer).__name__} in {name}")
  return h


def _context(unet, context, b: int, window: int, walk: _Walk, t: int):
  """Text / image tokens as the full-window call splits them (per-frame image tokens refer to the window)."""
  text, img = unet.split_context(context, b, window)
  if img is not None and img.shape[1] == window and window > 1:  # per-frame image tokens
    img = img[:, :t] if walk.fill else jax.lax.dynamic_slice_in_dim(img, walk.p, 1, axis=1)
  return text, img


def _forward(walk: _Walk, unet, x, timesteps, context, fs, actions, action_mask, window: int):
  cfg = unet.cfg
  if x.ndim != 5 or x.shape[-1] != cfg["in_channels"]:
    raise ValueError(f"x must be [B, T, H, W, {cfg['in_channels']}], got {x.shape}")
  check_cacheable(unet)
  b, t = x.shape[:2]
  actions, action_mask = unet._check_actions(actions, action_mask, b, t)
  ctx = _context(unet, context, b, window, walk, t)
  emb = unet.embed(timesteps, fs, actions, action_mask, b, t)
  h = x.astype(unet.dtype)
  hs = []
  for i, block in enumerate(unet.input_blocks):
    h = _embed_seq(walk, f"input_blocks.{i}", block, h, emb, ctx)
    if i == 0 and unet.addition_attention:
      h = _embed_seq(walk, "init_attn", unet.init_attn, h, emb, ctx)
    hs.append(h)
  h = _embed_seq(walk, "middle_block", unet.middle_block, h, emb, ctx)
  for i, block in enumerate(unet.output_blocks):
    h = jnp.concatenate([h, hs.pop()], axis=-1)
    h = _embed_seq(walk, f"output_blocks.{i}", block, h, emb, ctx)
  y = unet.out(fold(h))
  return unfold(y, b).astype(jnp.float32)


def fill(unet, x, timesteps, context, fs=None, actions=None, action_mask=None, *, new_index, window: int):
  """Full forward on the history buffer and the cache for the new frame at window position ``new_index``.

  Args:
    unet: a strictly causal UNet (else ValueError).
    x: ``[B, Th, H, W, in_channels]`` UNet input of the window's first ``Th`` frames (``Th = window - 1`` in the
      rollout); frames at positions ``>= new_index`` are ignored (causality), ``new_index <= Th``.
    timesteps ``[B, Th]`` | ``[B]``, context ``[B, L, D]``, fs ``[B]`` | None, actions ``[B, Th, A]``,
      action_mask ``[B, Th]``: as ``UNet.__call__``.
    new_index: ``[]`` int32 (may be traced). window: the full window length the model is called with (decides
      how a per-frame image context is split).
  Returns:
    ``(out [B, Th, H, W, out_channels] float32, cache)``; ``out[:, f]`` for ``f < new_index`` equals the
    full-window forward's output at frame f.
  """
  walk = _Walk("fill", jnp.asarray(new_index, jnp.int32), {})
  out = _forward(walk, unet, x, timesteps, context, fs, actions, action_mask, window)
  return out, walk.cache


def step(unet, cache: dict, x, timesteps, context, fs=None, actions=None, action_mask=None, *, new_index,
         window: int):
  """Network output of the new frame only, reading ``cache`` (from :func:`fill` with the same ``new_index``).

  ``x [B, 1, H, W, in_channels]``, ``timesteps [B, 1] | [B]``, ``actions [B, 1, A]``, ``action_mask [B, 1]``
  (the new frame's entries). Returns ``[B, 1, H, W, out_channels]`` float32 == the full-window forward at
  ``new_index``.
  """
  if x.ndim != 5 or x.shape[1] != 1:
    raise ValueError(f"step: x must be one frame [B, 1, H, W, C], got shape {x.shape}")
  walk = _Walk("step", jnp.asarray(new_index, jnp.int32), cache)
  return _forward(walk, unet, x, timesteps, context, fs, actions, action_mask, window)
