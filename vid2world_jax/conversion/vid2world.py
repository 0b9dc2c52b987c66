"""Released Vid2World checkpoints (RT-1, CS:GO, RECON): detection and the settings they were trained with.

Vid2World (thuml/Vid2World @ ae24077) fine-tunes DynamiCrafter 512 with one switch, ``use_causal_attention``,
that in its ``UNetModel`` (``openaimodel3d_vid2world.py``) makes causal:

* the temporal self-attention of every TemporalTransformer **including** ``init_attn`` (lower-triangular mask);
* the temporal convs (``CausalConv3d``: 2 frames padded before, 0 after; keys ``...convN.K.conv3d.*``);
* the output conv ``out.2`` (``CausalConv2d`` on the 2-D frame: causal along the **image height**, 2 rows padded
  above and 0 below, 1 column each side; keys ``out.2.conv2d.*``). The original loader
  (``utils_train.load_checkpoints_causal``) also applied its weight transfer to this kernel along the height axis
  before training, so the released kernels are trained for exactly this padding.

The GroupNorms keep pooling statistics over the whole clip (``temporal_norm="joint"``). The action encoder is
``action_emb_proj`` = ``Linear(A, mc) SiLU Linear(mc, 4mc) SiLU Linear(4mc, 4mc)`` (RT-1 A=13, RECON A=3), or for
CS:GO (A=51) the embedding ``action_emb_preprocess.weight [51, mc]`` used as ``a @ W`` followed by
``action_emb_proj`` = ``Linear(mc, 4mc) SiLU Linear(4mc, 4mc)``. Released configs: ``default_fs: 3``,
``temporal_length`` 16 (RT-1, CS:GO) or 20 (RECON); neither is visible in the weights, so they are taken from the
release with the detected action dimension.

A released checkpoint is imported **as trained**: no weight transfer is applied (its kernels were trained causal),
and the converted ``config.json`` records these settings under ``"causal"`` so that ``init_from`` refuses a model
config that would run it differently.
"""

from __future__ import annotations

from collections.abc import Mapping

from vid2world_jax.conversion import core

VARIANT = "512"          # every release fine-tunes DynamiCrafter 512 (320x512; same VAE / CLIP / resampler)
PREFIX = "model.diffusion_model."
# action_dim -> (release name, temporal_length of its released config)
RELEASES = {13: ("rt1", 16), 51: ("csgo", 16), 3: ("recon", 20)}
DEFAULT_FS = 3           # every released config
# Settings a converted Vid2World checkpoint records and `init_from` enforces (UNet config field names).
ENFORCED = ("use_causal_attention", "causal_temporal_attention", "causal_init_attn", "temporal_conv_padding", "out_conv_padding",
            "temporal_norm", "action_dim", "action_encoder")


def _shape(value) -> tuple:
  return tuple(value) if isinstance(value, (tuple, list)) else tuple(value.shape)


def detect(checkpoint: Mapping) -> dict | None:
  """The trained settings of a Vid2World checkpoint (``None`` for a DynamiCrafter one).

  Markers: ``.conv3d.`` temporal convs, ``out.2.conv2d.*``, ``action_emb_proj.*``. Raises
  :class:`core.ConversionError` on a combination the original code cannot produce.
  """
  keys = [k for k in checkpoint if k.startswith(PREFIX)]
  conv3d = any(".temopral_conv." in k and ".conv3d." in k for k in keys)
  out2d = PREFIX + "out.2.conv2d.weight" in checkpoint
  proj0 = PREFIX + "action_emb_proj.0.weight"
  emb = PREFIX + "action_emb_preprocess.weight"
  if not (conv3d or out2d or proj0 in checkpoint):
    return None
  if conv3d != out2d:
    raise core.ConversionError(
        "inconsistent Vid2World checkpoint: causal temporal convs (.conv3d.) and the causal output conv "
        f"(out.2.conv2d.) come from the same switch, found conv3d={conv3d}, out.2.conv2d={out2d}")
  if emb in checkpoint:
    action_dim, encoder = _shape(checkpoint[emb])[0], "embedding"
  elif proj0 in checkpoint:
    action_dim, encoder = _shape(checkpoint[proj0])[1], "mlp"
  else:
    action_dim, encoder = 0, "mlp"
  if (encoder == "embedding") != (action_dim == 51):
    raise core.ConversionError(f"Vid2World uses the embedding action encoder exactly for action_dim 51 "
                               f"(CS:GO); found {encoder!r} with action_dim {action_dim}")
  release, temporal_length = RELEASES.get(action_dim, ("unknown", 16))
  return dict(release=release, causal=conv3d, action_dim=int(action_dim), action_encoder=encoder,
              temporal_length=temporal_length)


def unet_settings(info: Mapping) -> dict:
  """UNet config fields (``models.unet``) that run a detected checkpoint exactly as it was trained."""
  causal = bool(info["causal"])
  return dict(use_causal_attention=causal, causal_temporal_attention=causal, causal_init_attn=causal,
              temporal_conv_padding="causal" if causal else "symmetric",
              out_conv_padding="causal_height" if causal else "symmetric", temporal_norm="joint",
              action_dim=info["action_dim"], action_encoder=info["action_encoder"])


def release_settings(info: Mapping) -> dict:
  """Non-weight settings of the released configs (for full-size conversions)."""
  return dict(default_fs=DEFAULT_FS, temporal_length=info["temporal_length"])


def record(info: Mapping, unet_cfg: Mapping) -> dict:
  """The ``"causal"`` block of ``config.json`` for an imported Vid2World checkpoint."""
  rec = {k: unet_cfg[k] for k in ENFORCED}
  rec.update(origin="vid2world_release", release=info["release"], trained_causal=bool(info["causal"]),
             enabled=bool(info["causal"]), weight_transfer_applied=False,
             default_fs=unet_cfg["default_fs"], temporal_length=unet_cfg["temporal_length"],
             note="imported as trained: kernels were trained causal (the original loader's transfer happened "
                  "before training); never re-apply a transfer")
  return rec


def check_model_config(rec: Mapping, unet_cfg: Mapping, where: str) -> None:
  """Raises ``ValueError`` (one line) if ``unet_cfg`` would run a recorded Vid2World checkpoint differently."""
  if rec.get("origin") != "vid2world_release":
    return
  bad = [f"{k}={unet_cfg.get(k)!r} (trained: {rec.get(k)!r})" for k in ENFORCED if unet_cfg.get(k) != rec.get(k)]
  if bad:
    raise ValueError(f"{where}: this Vid2World {rec.get('release')} checkpoint must run as trained; set "
                     f"config.model.unet: {', '.join(bad)}")
