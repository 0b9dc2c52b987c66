"""Convert a PyTorch DynamiCrafter / Vid2World checkpoint into Flax parameters (orbax) + config.json.

Examples:
  # full conversion of the 256 model, made causal with the paper's mixed (extrapolative) transfer
  python convert_torch_weights.py --checkpoint model.ckpt --variant 256 --out converted/dc256_causal \\
      --causal --temporal-conv-transfer=mixed
  # mapping + shape check from a key/shape manifest only (no weights needed), prints coverage
  python convert_torch_weights.py --manifest ../shared/reference/manifests/dynamicrafter_512_state_dict.json

Every checkpoint key must be mapped, be a recomputed schedule buffer (checked against our schedule when the
checkpoint has values), or be a documented unused key; anything else is an error that lists the keys.
Use --allow-unused GLOB (repeatable) to accept further keys deliberately (e.g. training-only buffers).
"""

from __future__ import annotations

import os
import re
import sys
import time

from absl import app, flags

from vid2world_jax import user_input

flags.DEFINE_string("checkpoint", None, "PyTorch checkpoint: .ckpt/.pt (torch pickle with state_dict) or .safetensors")
flags.DEFINE_string("manifest", None, "key/shape manifest (.json or .tsv) for a shapes-only coverage check")
flags.DEFINE_enum("variant", None, ["256", "512", "1024"],
                  "DynamiCrafter variant; unset: 512 for Vid2World checkpoints, else inferred from the file name")
flags.DEFINE_string("out", None, "output directory (config.json + orbax params/)")
flags.DEFINE_list("components", ["unet", "vae", "resampler", "clip_text", "clip_image"],
                  "which networks to convert (others' keys are then allowed as unused)")
flags.DEFINE_bool("causal", False, "causalize the UNet (causal temporal attention, causal temporal convs, norms)")
flags.DEFINE_enum("temporal_conv_transfer", "mixed", ["shift", "mask", "mixed"],
                  "bidirectional -> causal temporal-conv kernel transfer (mixed = paper's extrapolative)")
flags.DEFINE_enum("temporal_norm", "cumulative", ["per_frame", "cumulative", "joint"],
                  "norms over time in the causal UNet: per_frame/cumulative are strictly causal; joint = original")
flags.DEFINE_multi_string("allow_unused", [], "glob of checkpoint keys allowed to stay unused (repeatable)")


def infer_variant(path: str) -> str:
  m = re.search(r"(256|512|1024)", os.path.basename(path))
  if not m:
    raise app.UsageError(f"cannot infer the variant from {path!r}; pass --variant=256|512|1024")
  return m.group(1)


def main(argv):
  del argv
  from tqdm import tqdm
  from vid2world_jax.conversion import checkpoint_io, core, dynamicrafter as dc
  F = flags.FLAGS
  if bool(F.checkpoint) == bool(F.manifest):
    raise app.UsageError("give exactly one of --checkpoint or --manifest")
  src = F.checkpoint or F.manifest
  try:
    ckpt = checkpoint_io.open_checkpoint(src)
    info = dc.detect_vid2world(ckpt)
  except (ImportError, OSError, ValueError) as e:  # missing torch for .ckpt, missing/corrupt file: one clear line
    print(f"error: {e}", file=sys.stderr)
    return 1
  from vid2world_jax.conversion import vid2world
  variant = F.variant or (vid2world.VARIANT if info else infer_variant(src))
  if info:
    print(f"Vid2World checkpoint ({info['release']}): action_dim {info['action_dim']} "
          f"({info['action_encoder']} encoder), trained causal={info['causal']}; imported as trained, "
          f"variant {variant}")
  if F.manifest and not isinstance(ckpt, checkpoint_io.ManifestCheckpoint):
    raise app.UsageError("--manifest expects a .json or .tsv manifest")
  shapes_only = isinstance(ckpt, checkpoint_io.ManifestCheckpoint)
  if not shapes_only and not F.out:
    raise app.UsageError("--out is required with --checkpoint")
  skipped = [n for n in dc.COMPONENTS if n not in F.components]
  ignore = list(F.allow_unused) + [dc.component_module(n).WEIGHTS_PREFIX + "*" for n in skipped]
  causal = dc.CausalOptions(enabled=F.causal, temporal_conv_transfer=F.temporal_conv_transfer,
                            temporal_norm=F.temporal_norm)
  if info and F.causal:
    raise app.UsageError("this is a released Vid2World checkpoint, already trained causal: do not pass --causal "
                         "(no weight transfer may be applied)")
  t0 = time.time()
  bar = (lambda it: tqdm(it, desc="converting", unit="tensor", leave=False)) if not shapes_only else None
  try:
    configs, params, reports = dc.convert_checkpoint(
        ckpt, variant, components=F.components, causal=causal, extra_ignore=ignore,
        shapes_only=shapes_only, progress=bar)
  except core.ConversionError as e:
    print(str(e), file=sys.stderr)
    return 1
  total_m = total_f = 0
  for name, rep in reports.items():
    total_m += rep.mapped
    total_f += rep.total_flax
    print(f"{name:11s} {rep.summary().splitlines()[0]}")
  n_ckpt = len(ckpt)
  print(f"coverage: {total_m}/{total_f} Flax parameters mapped ({100.0 * total_m / max(total_f, 1):.2f}%); "
        f"{n_ckpt} checkpoint keys, all accounted for")
  if not shapes_only:
    if info:
      record = vid2world.record(info, configs["unet"]) if "unet" in configs else None
    else:
      record = vars(causal) if F.causal else None
    out = os.path.abspath(F.out)
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, "config.json")):
      print(f"error: --out {out} exists and is not a converted checkpoint (no config.json); choose a new folder",
            file=sys.stderr)
      return 1
    with user_input.atomic_output(out) as tmp:   # written whole under a temporary name, or not at all
      dc.save_converted(tmp, variant, configs, params, extra={"source": os.path.abspath(src), "causal": record})
    print(f"wrote {F.out} in {time.time() - t0:.1f}s")
  return 0


if __name__ == "__main__":
  flags.mark_flag_as_required  # noqa: B018 - keep absl import side effects explicit
  from vid2world_jax import logging_utils
  app.run(logging_utils.quiet_main(lambda argv: sys.exit(main(argv))), flags_parser=user_input.parse_flags)
