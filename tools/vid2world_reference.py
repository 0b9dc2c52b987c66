"""Generates the Vid2World reference data from the ORIGINAL PyTorch code (not run in CI; needs torch + einops).

The original Vid2World model code (thuml/Vid2World @ ae24077) is read from ``--original_root``: a directory that
contains the ``worldfoundry/`` package of the public repository weed33834/WorldFoundry, which vendors it under
``worldfoundry/base_models/diffusion_model/video/lvdm/`` (model) and ``worldfoundry/data/models/runtime/configs/
vid2world/`` (released configs). Nothing of that code is copied here; it is imported from that path.

    python tools/vid2world_reference.py --original_root=/path/to/worldfoundry_checkout \\
        --fixture_out=tests/fixtures/vid2world_tiny --manifest_out=tests/fixtures/vid2world_manifests

1. ``--fixture_out``: a tiny random ``openaimodel3d_vid2world.UNetModel`` (causal settings as released, MLP
   action encoder), run once with actions, an action mask and per-frame timesteps; writes ``config.json``,
   ``weights.safetensors`` and ``io.npz`` in the format of ``shared/fixtures/README.md``.
2. ``--manifest_out``: key/shape manifests of the released RT-1, CS:GO and RECON checkpoints: the UNet is the
   original class built from each released config on the ``meta`` device; the VAE / CLIP / resampler keys (same
   configs as DynamiCrafter 512, checked here) come from the DynamiCrafter 512 manifest in ``--dc_manifest_dir``;
   the schedule buffers are computed by the original ``DDPM.register_schedule`` with the released settings.

One deviation of the WorldFoundry copy is corrected: its ``utils_diffusion.timestep_embedding`` computes the
frequencies in bfloat16 and cannot take ``[B, T]`` timesteps (a later edit in that repository); Vid2World's own
version (float32, ``[B]`` or ``[B, T]``) is what the UNet is given here (:func:`_timestep_embedding`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types

import numpy as np

LVDM = "worldfoundry.base_models.diffusion_model.video.lvdm"
CONFIGS = "worldfoundry/data/models/runtime/configs/vid2world"
RELEASES = {  # manifest name -> released config (relative to CONFIGS)
    "vid2world_rt1": "manipulation/config_rt1_test_ar.yaml",
    "vid2world_csgo": "game/config_csgo_test.yaml",
    "vid2world_recon": "navigation/config_recon_test_single_step.yaml",
}
TINY = dict(in_channels=8, out_channels=4, model_channels=32, attention_resolutions=[1], num_res_blocks=1,
            channel_mult=[1], dropout=0.1, num_head_channels=4, transformer_depth=1, context_dim=32,
            use_linear=True, use_checkpoint=False, temporal_conv=True, temporal_attention=True,
            temporal_selfatt_only=True, use_relative_position=False, use_causal_attention=True, temporal_length=8,
            addition_attention=True, image_cross_attention=True, default_fs=3, fs_condition=True,
            action_emb=True, action_dim=13)


def _import_original(root: str):
  """Imports the original modules from ``root`` without running WorldFoundry's package ``__init__`` files."""
  import torch
  parts = LVDM.split(".")
  for i in range(1, len(parts)):  # worldfoundry, .base_models, .diffusion_model, .video: bare packages
    name = ".".join(parts[:i])
    mod = types.ModuleType(name)
    mod.__path__ = [os.path.join(root, *parts[:i])]
    sys.modules[name] = mod
  if not os.path.isdir(os.path.join(root, *parts)):
    raise SystemExit(f"error: {os.path.join(root, *parts)} not found; --original_root must contain worldfoundry/")
  if "pytorch_lightning" not in sys.modules:  # only the LightningModule base class is needed (schedule buffers)
    pl = types.ModuleType("pytorch_lightning")
    pl.LightningModule = torch.nn.Module
    sys.modules["pytorch_lightning"] = pl
  import importlib
  unet_mod = importlib.import_module(LVDM + ".modules.networks.openaimodel3d_vid2world")
  unet_mod.timestep_embedding = _timestep_embedding
  return unet_mod


def _timestep_embedding(timesteps, dim, max_period=10000, repeat_only=False):
  """Vid2World's sinusoidal embedding: float32 frequencies, cos half first, ``[B]`` -> ``[B, dim]`` and
  ``[B, T]`` -> ``[B, T, dim]``."""
  import torch
  assert not repeat_only and timesteps.dim() in (1, 2)
  half = dim // 2
  freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
  args = timesteps[..., None].float() * freqs
  return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _redraw(model, gen):
  """Re-draws every parameter as the shared fixtures do (so zero-initialised layers matter)."""
  import torch
  with torch.no_grad():
    for name, p in model.named_parameters():
      leaf = name.rsplit(".", 1)[-1]
      is_norm = any(isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))
                    for n, m in model.named_modules() if n == name.rsplit(".", 1)[0])
      if is_norm:
        p.copy_((1.0 if leaf == "weight" else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
      elif leaf == "bias":
        p.copy_(0.05 * torch.randn(p.shape, generator=gen))
      else:
        fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else p.shape[0]
        if name.endswith("action_emb_preprocess.weight"):
          fan_in = p.shape[0]
        p.copy_(min(0.2, 1.0 / math.sqrt(fan_in)) * torch.randn(p.shape, generator=gen))


def make_fixture(root: str, out_dir: str, seed: int) -> None:
  import torch
  from safetensors.torch import save_file
  unet_mod = _import_original(root)
  torch.manual_seed(seed)
  gen = torch.Generator().manual_seed(seed)
  model = unet_mod.UNetModel(**TINY).eval()
  _redraw(model, gen)
  b, t, h, w, ctx_dim = 2, 6, 6, 6, TINY["context_dim"]
  x = torch.randn(b, TINY["in_channels"], t, h, w, generator=gen)
  timesteps = torch.tensor([[999, 800, 500, 250, 40, 1], [37, 37, 600, 600, 999, 0]], dtype=torch.int64)
  timesteps_clip = torch.tensor([999, 37], dtype=torch.int64)
  fs = torch.tensor([3, 10], dtype=torch.int64)
  context = torch.randn(b, 77 + 16 * t, ctx_dim, generator=gen)
  actions = torch.randn(b, t, TINY["action_dim"], generator=gen)
  action_mask = torch.tensor([[1, 1, 0, 1, 1, 1], [0, 1, 1, 1, 0, 1]], dtype=torch.float32)

  inter = {}

  def save(name, value):
    if name not in inter:
      inter[name] = value.detach().clone()

  hooks = []
  named = dict(model.named_modules())
  for name in ["time_embed", "fps_embedding", "action_emb_proj", "input_blocks.0", "init_attn",
               "input_blocks.1.0", "input_blocks.1.1", "input_blocks.1.2", "middle_block", "output_blocks.0",
               "out.1"]:
    hooks.append(named[name].register_forward_hook(lambda m, i, o, n=name: save(f"inter/{n}/out", o)))
  hooks.append(named["input_blocks.1.0.temopral_conv"].register_forward_pre_hook(
      lambda m, i: save("inter/input_blocks.1.0.temopral_conv/in", i[0])))
  with torch.no_grad():
    out = model(x, timesteps, context=[context, actions], fs=fs, action_mask=action_mask)
    for hk in hooks:
      hk.remove()
    out_clip_t = model(x, timesteps_clip, context=[context, actions], fs=fs, action_mask=action_mask)
    out_fs_default = model(x, timesteps, context=[context, actions], fs=None, action_mask=action_mask)
    out_no_mask = model(x, timesteps, context=[context, actions], fs=fs, action_mask=None)
    # probe: x with 1.0 added to the last frame (the joint GroupNorms still let it reach earlier frames)
    x2 = x.clone()
    x2[:, :, -1] += 1.0
    out_last_changed = model(x2, timesteps, context=[context, actions], fs=fs, action_mask=action_mask)
  io = dict(x=x, timesteps=timesteps, timesteps_clip=timesteps_clip, fs=fs, context=context, actions=actions,
            action_mask=action_mask, out=out, out_clip_timesteps=out_clip_t, out_fs_default=out_fs_default,
            out_no_action_mask=out_no_mask, out_last_frame_changed=out_last_changed)
  io.update(inter)
  os.makedirs(out_dir, exist_ok=True)
  np.savez_compressed(os.path.join(out_dir, "io.npz"), **{k: v.numpy() for k, v in io.items()})
  sd = {"model.diffusion_model." + k: v.contiguous() for k, v in model.state_dict().items()}
  save_file(sd, os.path.join(out_dir, "weights.safetensors"),
            metadata={"variant": "vid2world_tiny", "seed": str(seed), "prefix": "model.diffusion_model."})
  cfg = dict(kind="unet", target=LVDM + ".modules.networks.openaimodel3d_vid2world.UNetModel", params=TINY,
             weights_prefix="model.diffusion_model.", param_count=sum(p.numel() for p in model.parameters()),
             base_variant="vid2world_tiny", overrides={}, input_overrides={}, seed=seed,
             torch_version=torch.__version__, dtype="float32", eval_mode=True,
             original="thuml/Vid2World ae24077 as vendored in weed33834/WorldFoundry (lvdm/)",
             call="out = UNetModel(**params)(x, timesteps [B,T], context=[context, actions], fs=fs, "
                  "action_mask=action_mask)",
             inputs=dict(batch=b, frames=t, height=h, width=w, text_tokens=77, image_tokens_per_frame=16,
                         context_len=77 + 16 * t, action_dim=TINY["action_dim"]),
             notes="timestep_embedding: Vid2World's float32 [B]/[B,T] version (see tools/vid2world_reference.py)")
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)
  d = (out_last_changed - out).abs().amax(dim=(0, 1, 3, 4))
  print(f"wrote {out_dir}: {cfg['param_count']} params; |out change| per frame after changing the last frame: "
        f"{[round(float(v), 6) for v in d]}")


def _released_config(root: str, name: str) -> dict:
  import yaml
  with open(os.path.join(root, CONFIGS, RELEASES[name])) as f:
    return yaml.safe_load(f)["model"]


def _schedule_buffers(model_cfg: dict) -> dict:
  import importlib

  import torch
  ddpm = importlib.import_module(LVDM + ".models.ddpm3d_vid2world").DDPM
  p = model_cfg["params"]
  obj = torch.nn.Module()
  obj.rescale_betas_zero_snr = p.get("rescale_betas_zero_snr", False)
  obj.parameterization = p.get("parameterization", "eps")
  obj.v_posterior = 0.0  # DDPM default; the released configs do not set it
  ddpm.register_schedule(obj, beta_schedule=p.get("beta_schedule", "linear"), timesteps=p["timesteps"],
                         linear_start=p["linear_start"], linear_end=p["linear_end"])
  out = {k: v.numpy() for k, v in obj.named_buffers() if k != "lvlb_weights"}
  if p.get("use_dynamic_rescale"):  # LatentDiffusion.__init__ (turning_step default 400)
    scale = np.concatenate([np.linspace(1.0, p["base_scale"], p.get("turning_step", 400)),
                            np.full(p["timesteps"], p["base_scale"])])
    out["scale_arr"] = scale.astype(np.float32)
  return out


def make_manifests(root: str, out: str, dc_dir: str) -> None:
  import torch
  unet_mod = _import_original(root)
  with open(os.path.join(dc_dir, "dynamicrafter_512_state_dict.json")) as f:
    dc512 = json.load(f)
  os.makedirs(out, exist_ok=True)
  for name in RELEASES:
    mcfg = _released_config(root, name)
    p = mcfg["params"]
    ucfg = dict(p["unet_config"]["params"])
    ucfg["use_checkpoint"] = False
    with torch.device("meta"):
      unet = unet_mod.UNetModel(**ucfg)
    buffers = _schedule_buffers(mcfg)
    keys = [dict(key=k, shape=list(v.shape), dtype="float32", kind="buffer") for k, v in buffers.items()]
    keys += [dict(key="model.diffusion_model." + k, shape=list(v.shape), dtype="float32", kind="param")
             for k, v in unet.state_dict().items()]
    keys += [e for e in dc512["keys"] if not e["key"].startswith("model.diffusion_model.")
             and e["key"] not in buffers and e["kind"] == "param"]
    counts = {"model.diffusion_model": sum(int(np.prod(v.shape)) for v in unet.state_dict().values())}
    for e in keys:
      pre = e["key"].split(".", 1)[0]
      if e["kind"] == "param" and pre != "model":
        counts[pre] = counts.get(pre, 0) + int(np.prod(e["shape"]))
    man = dict(config=os.path.join(CONFIGS, RELEASES[name]), keys=keys, num_keys=len(keys), param_counts=counts,
               unet_params=p["unet_config"]["params"], better_weight_transfer=mcfg.get("better_weight_transfer"),
               parameterization=p.get("parameterization"), scale_factor=p.get("scale_factor"),
               other_components="VAE/CLIP/resampler keys from dynamicrafter_512_state_dict.json (same configs)")
    with open(os.path.join(out, f"{name}_state_dict.json"), "w") as f:
      json.dump(man, f, separators=(",", ":"))
    np.savez(os.path.join(out, f"{name}_schedule_buffers.npz"), **buffers)
    print(f"wrote {name}: {len(keys)} keys, UNet {counts['model.diffusion_model']:,} params")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--original_root", required=True, help="directory containing WorldFoundry's worldfoundry/")
  ap.add_argument("--fixture_out", help="write the tiny UNet fixture here")
  ap.add_argument("--manifest_out", help="write the released-checkpoint manifests here")
  ap.add_argument("--dc_manifest_dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                             "reference", "manifests"))
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args()
  if a.fixture_out:
    make_fixture(a.original_root, a.fixture_out, a.seed)
  if a.manifest_out:
    make_manifests(a.original_root, a.manifest_out, a.dc_manifest_dir)


if __name__ == "__main__":
  main()
