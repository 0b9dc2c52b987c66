"""Attention layers of the DynamiCrafter UNet: CrossAttention (with dual text/image cross-attention),
BasicTransformerBlock, SpatialTransformer (per frame) and TemporalTransformer (over frames).

Layouts (channels-last): video ``[B, T, H, W, C]``; attention inputs ``[..., L, C]`` with the sequence on
axis -2 and broadcastable leading axes (so text keys ``[B, 1, 77, D]`` serve all frames ``[B, T, N, C]``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vid2world_jax.models import attention_kernels, layers
from vid2world_jax.models.attention_kernels import NEG_MAX  # torch masked_fill value (re-exported)
from vid2world_jax.models.frame_cache import FrameCache, child
from vid2world_jax.models.temporal import temporal_group_norm

# "auto": cuDNN flash via jax.nn.dot_product_attention on GPU (XLA where cuDNN cannot take the shapes/dtype),
# Pallas splash on TPU where the sequence lengths allow it (else XLA), the einsum reference on CPU (measured
# faster there than jax.nn.dot_product_attention's XLA path: 1024 tokens x 5 heads, forward + backward 0.84 vs
# 1.38 s, docs/profile.md).
ATTENTION_IMPLS = ("auto", "einsum", "xla", "cudnn", "chunked", "splash")


def dot_attention(q, k, v, scale: float, mask=None):
  """Reference softmax attention (materialised einsum logits). ``q [..., Lq, h, d]``, ``k, v [..., Lk, h, d]``
  (leading axes broadcast); ``mask`` boolean broadcastable to ``[..., h, Lq, Lk]`` (True = keep). Logits/softmax
  in float32. Returns ``[..., Lq, h, d]`` in ``v.dtype``. The scale multiplies the queries, not the logits: the
  same product (exact for the usual power-of-two ``d ** -0.5``) on an Lq x d array instead of an Lq x Lk one, which
  training would otherwise materialise. The products run head-major (``[..., h, L, d]``, heads moved on the small
  inputs and output): XLA's CPU backend then multiplies the ``[Lq, Lk]`` probabilities in their stored layout in
  the forward and the backward instead of transposing them (attention forward + backward at the UNet's
  1024-token level -56%, docs/profile.md)."""
  qh, kh, vh = (jnp.swapaxes(x, -3, -2) for x in (q * jnp.asarray(scale, q.dtype), k, v))
  sim = jnp.einsum("...hqd,...hkd->...hqk", qh, kh, preferred_element_type=jnp.float32)
  if mask is not None:
    sim = jnp.where(mask, sim, NEG_MAX)
  e, rows = _unnormalized_softmax(sim)
  out = jnp.einsum("...hqk,...hkd->...hqd", e.astype(v.dtype), vh, preferred_element_type=jnp.float32)
  return jnp.swapaxes(out / rows, -3, -2).astype(v.dtype)


def _unnormalized_softmax(sim):
  """``exp(sim - max)`` over the last axis of float32 logits ``[..., h, Lq, Lk]`` and its row sums ``[..., h,
  Lq, 1]``: softmax's division is applied to the attention output ``[..., h, Lq, d]`` instead of the
  ``[..., h, Lq, Lk]`` probabilities (the same result; on CPU the attention's forward -17%, docs/profile.md)."""
  e = jnp.exp(sim - jax.lax.stop_gradient(jnp.max(sim, axis=-1, keepdims=True)))
  return e, jnp.sum(e, axis=-1, keepdims=True)


def resolve_impl(impl: str, lq: int, lk: int, backend: str | None = None) -> str:
  """The concrete kernel for ``impl`` on ``backend`` (default: jax's) and these sequence lengths."""
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
  if impl != "auto":
    return impl
  backend = backend or target_backend()
  if backend == "tpu":
    return "splash" if attention_kernels.splash_supported(lq, lk) else "xla"
  if backend in ("gpu", "cuda", "rocm"):
    return "gpu"   # jax.nn.dot_product_attention(implementation=None): cuDNN when it can, else XLA
  return "einsum"


def target_backend() -> str:
  """The platform the program is compiled for: the current mesh's devices when a mesh is set (an ahead-of-time
  compile for a TPU topology runs in a CPU process), else jax's default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else getattr(mesh, "abstract_device", None)
  platform = getattr(device, "platform", None)
  return platform or jax.default_backend()


def attention(q, k, v, scale: float, *, causal: bool = False, impl: str = "auto", chunk: int = 512):
  """The one attention function every module calls. ``q [..., Lq, h, d]``, ``k, v [..., Lk, h, d]`` (leading
  axes broadcast, e.g. text keys ``[B, 1, 77, h, d]`` for queries ``[B, T, N, h, d]``); ``causal``: query i
  sees keys j <= i (``Lq == Lk``, the temporal tril mask). Logits/softmax in float32; returns
  ``[..., Lq, h, d]`` in ``v.dtype``. ``impl``: one of :data:`ATTENTION_IMPLS` (see :func:`resolve_impl`);
  ``chunk``: query block of the "chunked" kernel."""
  lq, lk = q.shape[-3], k.shape[-3]
  if causal and lq != lk:
    raise ValueError(f"causal attention needs Lq == Lk, got {lq} and {lk}")
  kind = resolve_impl(impl, lq, lk)
  if kind == "einsum":
    return dot_attention(q, k, v, scale, causal_mask(lq) if causal else None)
  lead = jnp.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3])
  flat = lambda x: jnp.broadcast_to(x, lead + x.shape[-3:]).reshape((-1,) + x.shape[-3:])
  qf, kf, vf = flat(q), flat(k), flat(v)
  if kind == "chunked":
    out = attention_kernels.chunked_attention(qf, kf, vf, scale, causal, block=chunk)
  elif kind == "splash":
    out = attention_kernels.splash_attention(qf, kf, vf, scale, causal)
  else:
    implementation = {"xla": "xla", "cudnn": "cudnn", "gpu": None}[kind]
    out = jax.nn.dot_product_attention(qf, kf, vf, scale=scale, is_causal=causal,
                                       implementation=implementation).astype(v.dtype)
  return out.reshape(lead + out.shape[-3:])


def causal_mask(t: int):
  """``[t, t]`` boolean, query i sees keys j <= i (torch ``tril(ones)``)."""
  return jnp.tril(jnp.ones((t, t), bool))


def dot_attention_with_history(q, k_hist, v_hist, hist_mask, k, v, scale: float):
  """Softmax attention of ``q [..., Lq, h, d]`` over the keys ``[history, new]``, the history read in place (no
  concatenation, no transpose of a cached history): ``k_hist, v_hist [..., h, Th, d]`` (head-major) with
  ``hist_mask [Th]`` (True = keep), ``k, v [..., Lk, h, d]`` (all kept). Logits/softmax in float32. Returns
  ``[..., Lq, h, d]`` in ``v.dtype``."""
  th = k_hist.shape[-2]
  sim_hist = jnp.einsum("...qhd,...hkd->...hqk", q, k_hist.astype(q.dtype), preferred_element_type=jnp.float32)
  sim_new = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32)
  sim = jnp.concatenate([jnp.where(hist_mask, sim_hist, NEG_MAX), sim_new], axis=-1) * scale
  e, rows = _unnormalized_softmax(sim)
  e = e.astype(v.dtype)
  out = (jnp.einsum("...hqk,...hkd->...qhd", e[..., :th], v_hist.astype(v.dtype), preferred_element_type=jnp.float32)
         + jnp.einsum("...hqk,...khd->...qhd", e[..., th:], v, preferred_element_type=jnp.float32))
  return (out / jnp.swapaxes(rows, -3, -2)).astype(v.dtype)


def cached_self_attention(cache: FrameCache, q, k, v, scale: float, causal: bool, impl: str = "auto"):
  """Causal self-attention over frames with a frame cache (``q, k, v [..., T, h, d]``; ``causal``: tril mask).

  Fill: records the history keys / values (head-major ``[..., h, T, d]``), then the ordinary attention. Step
  (``T = 1``): the new frame attends to the cached history positions ``< index`` and to itself."""
  if cache.is_fill:
    cache.write("k", jnp.swapaxes(k, -3, -2))
    cache.write("v", jnp.swapaxes(v, -3, -2))
    return attention(q, k, v, scale, causal=causal, impl=impl)
  k_hist = cache.read("k")
  return dot_attention_with_history(q, k_hist, cache.read("v"), cache.valid_history(k_hist.shape[-2]), k, v, scale)


class CrossAttention(nnx.Module):
  """torch ``CrossAttention``: to_q / to_k / to_v (no bias), to_out = Seq(Linear, Dropout).

  With ``image_cross_attention`` also ``to_k_ip`` / ``to_v_ip`` and, if ``scale_learnable``, a scalar ``alpha``
  (output ``out_text + out_img * (tanh(alpha) + 1)``; else ``out_text + out_img``).
  """

  def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int, *, dropout: float = 0.0,
               image_cross_attention: bool = False, scale_learnable: bool = False, dtype=jnp.float32,
               attention_impl: str = "auto", rngs: nnx.Rngs):
    inner = heads * dim_head
    resolve_impl(attention_impl, 1, 1)  # validates the name
    self.attention_impl = attention_impl
    context_dim = query_dim if context_dim is None else context_dim
    lin = lambda i, o, bias=False: layers.Linear(i, o, use_bias=bias, dtype=dtype, param_dtype=jnp.float32,
                                              rngs=rngs)
    self.heads, self.dim_head = heads, dim_head
    self.scale = dim_head ** -0.5
    self.to_q = lin(query_dim, inner)
    self.to_k = lin(context_dim, inner)
    self.to_v = lin(context_dim, inner)
    self.to_out = layers.Seq([lin(inner, query_dim, True), layers.Dropout(dropout, rngs=rngs)])
    self.image_cross_attention = image_cross_attention
    self.scale_learnable = scale_learnable and image_cross_attention
    if image_cross_attention:
      self.to_k_ip = lin(context_dim, inner)
      self.to_v_ip = lin(context_dim, inner)
      if self.scale_learnable:
        self.alpha = nnx.Param(jnp.zeros((), jnp.float32))

  def _heads(self, x):
    return x.reshape(x.shape[:-1] + (self.heads, self.dim_head))

  def __call__(self, x, text=None, image=None, causal: bool = False, cache: FrameCache | None = None):
    """``x [..., L, Cq]``. Self-attention if ``text is None`` (``causal``: the tril mask); otherwise
    cross-attention to ``text [..., Lt, D]`` and, with image cross-attention, separately to ``image [..., Li, D]``.
    ``cache``: causal self-attention over frames only (:func:`cached_self_attention`)."""
    q = self._heads(self.to_q(x))
    ctx = x if text is None else text
    k, v = self._heads(self.to_k(ctx)), self._heads(self.to_v(ctx))
    if cache is None:
      out = attention(q, k, v, self.scale, causal=causal and text is None, impl=self.attention_impl)
    elif text is None:
      out = cached_self_attention(cache, q, k, v, self.scale, causal, self.attention_impl)
    else:
      raise ValueError("a frame cache applies to self-attention over frames only")
    if self.image_cross_attention and text is not None:
      if image is None:
        raise ValueError("image cross-attention needs image context tokens (context longer than 77)")
      out_ip = attention(q, self._heads(self.to_k_ip(image)), self._heads(self.to_v_ip(image)), self.scale,
                         impl=self.attention_impl)
      if self.scale_learnable:
        out_ip = out_ip * (jnp.tanh(self.alpha[...]) + 1).astype(out_ip.dtype)
      out = out + out_ip
    out = out.reshape(out.shape[:-2] + (self.heads * self.dim_head,))
    return self.to_out(out)


class GEGLU(nnx.Module):
  """``proj: Linear(d, 2*inner)``; ``value, gate = split(proj(x))``; ``value * gelu_erf(gate)``."""

  def __init__(self, dim: int, inner: int, *, dtype, rngs: nnx.Rngs):
    self.proj = layers.Linear(dim, 2 * inner, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x):
    return layers.as_matrix(self._tokens, x)   # on the [tokens, d] matrix: one-axis bias sums in the backward

  def _tokens(self, x):
    # Two half-width products (the value and gate columns of the one torch kernel), not one product then split:
    # the same sums, but the backward no longer concatenates the halves' gradients into a [tokens, 2*inner] array
    # to reduce the bias gradient over (0.9 s of a width-128 train step on CPU, docs/profile.md).
    p = self.proj
    x, k, b = p.promote_dtype((x, p.kernel[...], p.bias[...]), dtype=p.dtype)
    n = k.shape[-1] // 2
    dims = (((1,), (0,)), ((), ()))
    v = jax.lax.dot_general(x, k[:, :n], dims, precision=p.precision) + b[:n]
    g = jax.lax.dot_general(x, k[:, n:], dims, precision=p.precision) + b[n:]
    return v * layers.gelu(g)


class FeedForward(nnx.Module):
  """torch ``FeedForward(glu=True)``: ``net = Seq(GEGLU, Dropout, Linear(4d, d))``."""

  def __init__(self, dim: int, *, dropout: float = 0.0, mult: int = 4, dtype, rngs: nnx.Rngs):
    self.net = layers.Seq([GEGLU(dim, mult * dim, dtype=dtype, rngs=rngs), layers.Dropout(dropout, rngs=rngs),
                           layers.Linear(mult * dim, dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)])

  def __call__(self, x):
    return self.net(x)


class BasicTransformerBlock(nnx.Module):
  """``x += attn1(LN1 x)``; ``x += attn2(LN2 x, context)``; ``x += ff(LN3 x)`` (LayerNorm eps 1e-5).

  ``context_dim=None`` makes attn2 a second self-attention (temporal transformers, ``temporal_selfatt_only``).
  """

  def __init__(self, dim: int, heads: int, dim_head: int, *, context_dim: int | None, dropout: float = 0.0,
               image_cross_attention: bool = False, scale_learnable: bool = False, attention_impl: str = "auto",
               dtype, rngs: nnx.Rngs):
    self.attn1 = CrossAttention(dim, None, heads, dim_head, dropout=dropout, dtype=dtype,
                                attention_impl=attention_impl, rngs=rngs)
    self.ff = FeedForward(dim, dropout=dropout, dtype=dtype, rngs=rngs)
    self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, dropout=dropout,
                                image_cross_attention=image_cross_attention, scale_learnable=scale_learnable,
                                attention_impl=attention_impl, dtype=dtype, rngs=rngs)
    self.norm1 = layers.LayerNorm(dim, 1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    self.norm2 = layers.LayerNorm(dim, 1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    self.norm3 = layers.LayerNorm(dim, 1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x, text=None, image=None, causal: bool = False, cache: FrameCache | None = None):
    x = self.attn1(self.norm1(x), causal=causal, cache=child(cache, "attn1")) + x
    x = self.attn2(self.norm2(x), text, image, causal=causal, cache=child(cache, "attn2")) + x
    return self.ff(self.norm3(x)) + x


def _pointwise_proj(i: int, o: int, use_linear: bool, conv_ndim: int, *, dtype, rngs):
  if use_linear:
    return layers.Linear(i, o, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
  return nnx.Conv(i, o, kernel_size=(1,) * conv_ndim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class SpatialTransformer(nnx.Module):
  """Per-frame transformer: GN(32, eps 1e-6) -> proj_in -> blocks (self + cross-attn) -> proj_out -> + x.

  ``use_linear``: Linear proj_in/out, else Conv2d(k=1) (torch weights ``[o, i, 1, 1]``).
  """

  def __init__(self, in_channels: int, n_heads: int, d_head: int, *, depth: int, context_dim: int,
               use_linear: bool, dropout: float = 0.0, image_cross_attention: bool = False,
               scale_learnable: bool = False, attention_impl: str = "auto", dtype, rngs: nnx.Rngs):
    inner = n_heads * d_head
    self.norm = layers.GroupNorm(in_channels, 32, 1e-6, rngs=rngs)
    self.proj_in = _pointwise_proj(in_channels, inner, use_linear, 2, dtype=dtype, rngs=rngs)
    self.transformer_blocks = nnx.List([
        BasicTransformerBlock(inner, n_heads, d_head, context_dim=context_dim, dropout=dropout,
                              image_cross_attention=image_cross_attention, scale_learnable=scale_learnable,
                              attention_impl=attention_impl, dtype=dtype, rngs=rngs) for _ in range(depth)])
    self.proj_out = _pointwise_proj(inner, in_channels, use_linear, 2, dtype=dtype, rngs=rngs)

  def __call__(self, x, text, image=None):
    """``x [B, T, H, W, C]``; ``text [B, 1, Lt, D]``; ``image [B, T or 1, Li, D]`` or None."""
    b, t, hh, ww, c = x.shape
    h = self.norm(x.reshape(b * t, hh, ww, c))
    h = self.proj_in(h).reshape(b, t, hh * ww, -1)  # a 1x1 conv and a Linear act the same on channels-last
    for blk in self.transformer_blocks:
      h = blk(h, text, image)
    h = self.proj_out(h.reshape(b * t, hh, ww, -1) if isinstance(self.proj_out, nnx.Conv) else h)
    return h.reshape(x.shape) + x


class TemporalTransformer(nnx.Module):
  """Transformer over frames at each spatial position (torch ``TemporalTransformer``, ``only_self_att``).

  GN(32, eps 1e-6) over the 5-D video (``norm_mode``: "joint" = torch), proj_in, blocks whose attn1 and attn2
  are both self-attentions over T (each gets the causal mask when ``causal``), proj_out, residual.
  ``use_linear=False``: Conv1d(k=1) projections (torch weights ``[o, i, 1]``), as in ``init_attn``.
  """

  def __init__(self, in_channels: int, n_heads: int, d_head: int, *, depth: int, use_linear: bool,
               causal: bool = False, norm_mode: str = "joint", dropout: float = 0.0, attention_impl: str = "auto",
               dtype, rngs: nnx.Rngs):
    inner = n_heads * d_head
    self.causal = causal
    self.norm_mode = norm_mode
    self.norm = layers.GroupNorm(in_channels, 32, 1e-6, rngs=rngs)
    self.proj_in = _pointwise_proj(in_channels, inner, use_linear, 1, dtype=dtype, rngs=rngs)
    self.transformer_blocks = nnx.List([
        BasicTransformerBlock(inner, n_heads, d_head, context_dim=None, dropout=dropout,
                              attention_impl=attention_impl, dtype=dtype, rngs=rngs)
        for _ in range(depth)])
    self.proj_out = _pointwise_proj(inner, in_channels, use_linear, 1, dtype=dtype, rngs=rngs)

  def cache_blockers(self) -> list[str]:
    """Why this transformer cannot run with a frame cache (empty: it can)."""
    out = [] if self.causal else ["temporal attention is not causal"]
    return out + (["temporal_norm 'joint' pools GroupNorm statistics over time"] if self.norm_mode == "joint" else [])

  def temporal_attention(self, h, cache: FrameCache | None = None):
    """The frame-mixing core: ``h [B, H*W, T, inner]`` (already projected) -> same shape."""
    if cache is not None and not self.causal:
      raise ValueError("non-causal temporal attention sees future frames: it cannot run cached")
    for j, blk in enumerate(self.transformer_blocks):
      h = blk(h, causal=self.causal, cache=child(cache, f"transformer_blocks.{j}"))
    return h

  def __call__(self, x, cache: FrameCache | None = None):
    """``x [B, T, H, W, C]`` -> same shape. ``cache``: see :mod:`~vid2world_jax.models.frame_cache`."""
    b, t, hh, ww, c = x.shape
    h = temporal_group_norm(self.norm, x, self.norm_mode, child(cache, "norm"))
    h = jnp.transpose(h.reshape(b, t, hh * ww, c), (0, 2, 1, 3))  # [B, HW, T, C]
    h = self.proj_in(h)
    h = self.temporal_attention(h, cache)
    h = self.proj_out(h)
    return jnp.transpose(h, (0, 2, 1, 3)).reshape(x.shape) + x
