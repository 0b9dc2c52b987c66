"""OpenCLIP ViT-H/14 text encoder as DynamiCrafter's ``cond_stage_model`` (``FrozenOpenCLIPEmbedder``).

What runs (``encode_with_transformer``, ``layer="penultimate"`` in every DynamiCrafter config):
``x = token_embedding[tokens] + positional_embedding`` -> transformer blocks ``0 .. L-2`` with the causal
additive mask (no padding mask) -> ``ln_final``. The output is the whole ``[B, 77, W]`` sequence (no EOT
pooling, no ``text_projection``). ``layer="last"`` runs all ``L`` blocks before ``ln_final``.
The last block's weights are part of the checkpoint and of this model even when "penultimate" skips them.

Module tree mirrors the checkpoint keys ``cond_stage_model.model.{token_embedding, positional_embedding,
transformer.resblocks.{i}.*, ln_final}``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vid2world_jax.models import torch_names
from vid2world_jax.models import clip_common, layers

WEIGHTS_PREFIX = "cond_stage_model."

TORCH_ALIASES: dict[str, str] = {}

TORCH_IGNORE: list[str] = [
    # CLIP's contrastive projection of the pooled EOT token: DynamiCrafter feeds the whole ln_final sequence
    # to the UNet and never pools or projects it.
    "cond_stage_model.model.text_projection",
    # CLIP's contrastive-loss temperature; unused at inference.
    "cond_stage_model.model.logit_scale",
]

LAYERS = {"last": 0, "penultimate": 1}  # open_clip embedder's layer_idx: blocks skipped at the end


def _config(width, heads, layers_, vocab_size, context_length, layer, embed_dim, mlp_ratio=4.0):
  c = ml_collections.ConfigDict()
  c.width = width                    # transformer width W
  c.heads = heads                    # attention heads (head dim W/heads)
  c.layers = layers_                 # number of resblocks L (all are built and loaded)
  c.vocab_size = vocab_size          # token embedding rows (49408 for the real BPE vocabulary)
  c.context_length = context_length  # sequence length (77); tokens must be [B, context_length]
  c.mlp_ratio = float(mlp_ratio)     # c_fc width = mlp_ratio * W
  c.ln_eps = 1e-5                    # LayerNorm eps (torch default)
  c.layer = layer                    # "penultimate" (DynamiCrafter: blocks 0..L-2) or "last" (all blocks)
  c.embed_dim = embed_dim            # CLIP joint embedding size (only text_projection, ignored); informative
  return c


def real_config(variant: str = "256") -> ml_collections.ConfigDict:
  """OpenCLIP ViT-H-14 text tower; identical for DynamiCrafter's 256/512/1024 configs."""
  if str(variant) not in ("256", "512", "1024"):
    raise ValueError(f"unknown DynamiCrafter variant {variant!r}; want '256', '512' or '1024'")
  return _config(width=1024, heads=16, layers_=24, vocab_size=49408, context_length=77, layer="penultimate",
                 embed_dim=1024)


def config_from_torch_params(params: dict) -> ml_collections.ConfigDict:
  """Config from a ``clip_text`` fixture's ``config.json`` (uses ``open_clip_model_cfg.text_cfg`` and
  ``params.layer``) or from an open_clip model-config dict (``{"text_cfg": ..., "embed_dim": ...}``)."""
  model_cfg = params.get("open_clip_model_cfg", params)
  if "text_cfg" not in model_cfg:
    raise ValueError("config_from_torch_params: need 'open_clip_model_cfg' (fixture config.json) or an open_clip "
                     f"model config with 'text_cfg'; got keys {sorted(params)}")
  t = model_cfg["text_cfg"]
  extra = set(t) - {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
  if extra:
    raise ValueError(f"unsupported open_clip text_cfg options {sorted(extra)} (not used by DynamiCrafter)")
  layer = params.get("params", {}).get("layer", "penultimate")
  return _config(width=t["width"], heads=t["heads"], layers_=t["layers"], vocab_size=t["vocab_size"],
                 context_length=t["context_length"], layer=layer, embed_dim=model_cfg.get("embed_dim", t["width"]),
                 mlp_ratio=t.get("mlp_ratio", 4.0))


class TextTower(nnx.Module):
  """The surviving parts of ``open_clip.model.CLIP`` after ``del model.visual`` (minus unused params)."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    w = cfg.width
    self.token_embedding = nnx.Embed(cfg.vocab_size, w, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.positional_embedding = nnx.Param(
        nnx.initializers.normal(0.01)(rngs.params(), (cfg.context_length, w), jnp.float32))
    self.transformer = clip_common.Transformer(w, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.ln_eps, rngs=rngs)
    self.ln_final = layers.LayerNorm(w, eps=cfg.ln_eps, rngs=rngs)


class FrozenOpenCLIPEmbedder(nnx.Module):
  """``cond_stage_model``: token ids ``[B, context_length]`` (int) -> ``[B, context_length, W]`` float32."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    if cfg.layer not in LAYERS:
      raise ValueError(f"layer must be one of {sorted(LAYERS)}, got {cfg.layer!r}")
    self.cfg = ml_collections.FrozenConfigDict(cfg)  # hashable, so graphdefs can be jit-static
    self.model = TextTower(cfg, rngs=rngs)

  def __call__(self, tokens: jax.Array, *, layer: str | None = None, return_intermediates: bool = False):
    """``tokens``: ``[B, context_length]`` integer ids (see ``tokenizer.ClipTokenizer``).

    ``layer``: overrides ``cfg.layer`` ("penultimate" / "last"). With ``return_intermediates`` returns
    ``(out, {"embed": ..., "resblocks.{i}/out": ...})``.
    """
    cfg = self.cfg
    layer = cfg.layer if layer is None else layer
    if layer not in LAYERS:
      raise ValueError(f"layer must be one of {sorted(LAYERS)}, got {layer!r}")
    if tokens.ndim != 2 or tokens.shape[1] != cfg.context_length:
      raise ValueError(f"tokens must be [B, {cfg.context_length}], got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    m = self.model
    x = m.token_embedding(tokens) + m.positional_embedding[...]
    inter = {"embed": x} if return_intermediates else None
    x = m.transformer(x, clip_common.causal_mask(cfg.context_length),
                      num_blocks=cfg.layers - LAYERS[layer], intermediates=inter)
    x = m.ln_final(x)
    return (x, inter) if return_intermediates else x


def build(cfg, *, rngs: nnx.Rngs) -> FrozenOpenCLIPEmbedder:
  return FrozenOpenCLIPEmbedder(cfg, rngs=rngs)


def torch_name_table(model: FrozenOpenCLIPEmbedder) -> list[torch_names.Entry]:
  """Entries for every parameter: auto (Linear/Embed/LayerNorm), ``in_proj_*`` and ``positional_embedding``."""
  table = torch_names.auto_entries(model, WEIGHTS_PREFIX)
  table += clip_common.attention_entries(model, WEIGHTS_PREFIX)
  table.append(torch_names.Entry(WEIGHTS_PREFIX + "model.positional_embedding", ("model", "positional_embedding")))
  return table
