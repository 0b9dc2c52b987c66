"""Sample rollouts during training, as a trainer evaluator (``training.loop.train_and_evaluate(evaluators=...)``).

Lives on the inference side: it rolls the training state out through ``inference.InferenceSession``, which the
trainer library does not import.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging
from flax import nnx

from vid2world_jax import inference, pixels


def evaluators(cfg) -> list:
  """The evaluators a training run of ``cfg`` gets: the sample rollouts when ``train.sample_every`` > 0."""
  every = int(cfg.train.get("sample_every", 0))
  if not every:
    return []
  def sample_rollouts(view):
    if view.step % every == 0:
      write_samples(view.setup, view.state, view.rest, view.frozen, view.batch, view.writer, view.step)
  return [sample_rollouts]


def write_samples(setup, state, rest, frozen, local, writer, step: int) -> None:
  """Autoregressive rollout from the first ``eval.context_frames`` frames of two clips of this host's batch,
  with their actions (EMA parameters when EMA is on); written as a gif (ground truth | generated) and to
  TensorBoard. Single-process runs only: on a multi-host job each host holds different clips."""
  del rest
  if jax.process_count() > 1:
    logging.log_first_n(logging.WARNING, "sample rollouts are skipped on multi-process runs", 1)
    return
  cfg = setup.cfg
  params = state["ema"] if "ema" in state else state["params"]
  k, n = int(cfg.eval.context_frames), min(2, local["frames"].shape[0])
  gt = np.asarray(local["frames"][:n])
  ctx = pixels.to_uint8(gt[:, :k])
  scfg = inference.sampler_config(cfg, ddim_steps=int(cfg.train.sample_ddim_steps))
  sess = inference.InferenceSession.from_params(cfg, params, nnx.merge(setup.frozen_graphdef, frozen), sampler=scfg)
  acts = np.asarray(local["actions"][:n])
  _, rgb = sess.rollout_with_context(ctx, acts[:, k - 1:gt.shape[1] - 1], guidance_scale=sess.guidance_scale,
                                     seed=step, context_actions=acts[:, :k - 1])
  gen = pixels.from_uint8(rgb)
  writer.video(step, "rollout_gt_vs_generated", np.concatenate([gt, gen], axis=3))
