"""The demo's two training stages, both through the trainer's one loop (``training.loop.train_and_evaluate``: one
jitted step, orbax checkpoints, one metric writer), each in its own sub-workdir so an interrupted stage resumes from its
last checkpoint.

(a) ``pretrain``: a tiny BIDIRECTIONAL video diffusion model (symmetric temporal convs, non-causal temporal
    attention, GroupNorm over time, no action encoder: ``action_dim`` 0) of the same architecture as the world
    model, trained on the videos alone with one noise level per clip (``train.noise_levels = "per_clip"``), or
    the shipped pretrained file loaded instead (``demo.pretrain = "shipped"``).
(b) ``causalize``: the causal world model's fresh parameters with every pretrained parameter of the same path and
    shape copied, temporal-conv kernels through the configured weight transfer (shift | mask | mixed, spec §2.2),
    the action encoder new (``init_from.transfer_params``); then ``finetune``: Diffusion-Forcing fine-tuning with
    per-frame action dropout, started from those parameters.

Stage outputs (cached by the caller in non-executable formats, ``recipe.cached``): ``{"params": pure dict of
numpy arrays, "losses": [per step], "seconds", ...}``; ``losses`` holds the steps run by the invocation that
finished the stage (a resumed stage: the rest).
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from vid2world_jax.training import recipe


def log(msg: str) -> None:
  print(f"[demo] {msg}", flush=True)


def to_numpy(tree):
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def bidirectional_model_config(mcfg) -> ml_collections.ConfigDict:
  """The pretrained-VDM model config: same architecture, DynamiCrafter's non-causal options, no actions."""
  m = ml_collections.ConfigDict(mcfg.to_dict())
  u = m.unet
  u.use_causal_attention = False
  if "causal_temporal_attention" in u:
    u.causal_temporal_attention = False
  u.causal_init_attn = False
  u.temporal_conv_padding = "symmetric"
  u.temporal_norm = "joint"
  u.action_dim = 0
  return m


def stage_config(cfg, steps: int) -> ml_collections.ConfigDict:
  """A copy of ``cfg`` for one trainer run of ``steps`` steps (progress bars follow ``demo.progress``)."""
  c = ml_collections.ConfigDict(cfg.to_dict())
  c.total_steps = int(steps)
  c.train.progress_bar = bool(cfg.demo.progress)
  c.train.sample_every = 0
  return c


def pretrain_config(cfg) -> ml_collections.ConfigDict:
  """The trainer config of stage (a): the bidirectional action-free model, one noise level per clip, the
  pretraining lr and warmup (other optimizer fields from ``config.optim``)."""
  d = cfg.demo
  c = stage_config(cfg, d.pretrain_steps)
  c.model = bidirectional_model_config(cfg.model)
  c.train.noise_levels = "per_clip"
  c.optim.lr, c.optim.warmup_steps = float(d.pretrain_lr), int(d.pretrain_warmup)
  c.init_from = ""
  return c


def train_stage(cfg, workdir: str, init_params: dict | None = None) -> dict:
  """One trainer run of a stage in ``workdir`` (resumable); ``{"params", "losses"}`` (numpy)."""
  from vid2world_jax.training import loop  # pylint: disable=import-outside-toplevel
  res = loop.train_and_evaluate(cfg, workdir, init_params=init_params)
  if res["preempted"]:
    raise SystemExit(f"stage preempted at step {res['last_step']}; rerun the same command to resume ({workdir})")
  return {"params": to_numpy(res["state"]["params"]), "losses": [res["losses"][k] for k in sorted(res["losses"])]}


def run_pretrain(cfg, workdir: str) -> dict:
  """Stage (a): trained in ``<workdir>/pretrain`` (``demo.pretrain = "run"``) or the shipped file loaded."""
  from vid2world_jax import world_model  # pylint: disable=import-outside-toplevel
  d = cfg.demo
  t0 = time.time()
  pcfg = pretrain_config(cfg)
  mcfg = world_model.model_config(pcfg)
  if d.pretrain == "shipped":
    from vid2world_jax.demo import pretrained_asset  # pylint: disable=import-outside-toplevel
    out = pretrained_asset.load(pretrained_asset.asset_path(d.pretrain_asset), mcfg)
    log(f"stage (a) pretrain: the shipped pretrained VDM {d.pretrain_asset} ({out['steps']} steps, "
        f"made by: {out['command']})")
    out["seconds"] = time.time() - t0
    return out
  if d.pretrain != "run":
    raise ValueError(f"demo.pretrain must be 'shipped' or 'run', got {d.pretrain!r}")
  log(f"stage (a) pretrain: {int(d.pretrain_steps)} steps of the bidirectional VDM (videos only) in "
      f"{os.path.join(workdir, 'pretrain')}")
  out = train_stage(pcfg, os.path.join(workdir, "pretrain"))
  return dict(out, model_config=mcfg.to_dict(), seconds=time.time() - t0, source="run", steps=int(d.pretrain_steps))


def pretrain(cfg, workdir: str) -> dict:
  """Stage (a), cached in ``<workdir>/pretrain/output`` (for the ablation driver and the exporter)."""
  return recipe.cached(os.path.join(workdir, "pretrain", "output"), lambda: run_pretrain(cfg, workdir),
                       "(a) pretrain")


def causalize(cfg, pretrained: dict | None, *, init: str, transfer: str) -> dict:
  """The causal world model's initial parameters: ``{"params" (None = the trainer's fresh init), "init",
  "transfer", "transfer_report"}``."""
  if init == "scratch":
    return {"params": None, "init": init, "transfer": transfer, "transfer_report": {}}
  if init != "pretrained":
    raise ValueError(f"init must be 'pretrained' or 'scratch', got {init!r}")
  if pretrained is None:
    raise ValueError("init='pretrained' needs the pretrained parameters (stage a)")
  from vid2world_jax import world_model  # pylint: disable=import-outside-toplevel
  from vid2world_jax.conversion import init_from  # pylint: disable=import-outside-toplevel
  seed = int(cfg.seed)
  wm, _ = world_model.build(world_model.model_config(cfg), rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  fresh = to_numpy(nnx.to_pure_dict(nnx.state(wm, nnx.Param)))
  params, rep = init_from.transfer_params(fresh, pretrained["params"], transfer)
  missing = [n for n in rep["new"] if not n.startswith("unet.action_emb")]
  if missing or rep["unused"]:  # the VDM is this model without actions: anything else is a mismatch, not "new"
    raise ValueError(f"the pretrained VDM does not fit the world model: {len(missing)} parameters missing from it "
                     f"(e.g. {missing[:3]}), {len(rep['unused'])} of its parameters unused (e.g. {rep['unused'][:3]})")
  log(f"stage (b) causalize: {rep['copied']} tensors copied, {rep['transferred']} temporal-conv kernels "
      f"transferred ({transfer}), {len(rep['new'])} new (action encoder)")
  return {"params": params, "init": init, "transfer": transfer, "transfer_report": rep}


def run_finetune(cfg, workdir: str, causal: dict, steps: int) -> dict:
  """Diffusion-Forcing fine-tuning in ``workdir`` from ``causal["params"]`` (``causalize``)."""
  t0 = time.time()
  init, transfer = causal["init"], causal["transfer"]
  log(f"stage (b) fine-tune world model [{os.path.basename(workdir)}: {init}"
      f"{', ' + transfer if init == 'pretrained' else ''}]: {steps} steps in {workdir}")
  out = train_stage(stage_config(cfg, steps), workdir, init_params=causal["params"])
  return dict(out, transfer_report=causal["transfer_report"], seconds=time.time() - t0, init=init,
              transfer=transfer, steps=int(steps))


def finetune(cfg, workdir: str, *, name: str = "finetune", init: str | None = None, transfer: str | None = None,
             steps: int | None = None, pretrained: dict | None = None) -> dict:
  """Stage (b) of one variant (the ablation driver's entry), cached in ``<workdir>/<name>/output``.

  Returns ``{"params", "losses", "transfer_report", "seconds", "init", "transfer", "steps"}``.
  """
  d = cfg.demo
  init = d.init if init is None else init
  transfer = d.weight_transfer if transfer is None else transfer
  steps = int(d.finetune_steps if steps is None else steps)

  def compute():
    pre = pretrained if pretrained is not None or init != "pretrained" else pretrain(cfg, workdir)
    return run_finetune(cfg, os.path.join(workdir, name), causalize(cfg, pre, init=init, transfer=transfer), steps)

  return recipe.cached(os.path.join(workdir, name, "output"), compute, f"(b) {name}")
