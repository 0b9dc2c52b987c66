"""vid2world_jax: turn a pretrained video diffusion model into an action-conditioned world model (JAX/Flax).

Layers, bottom up (each imports only those below it; tests/test_architecture.py checks it):
  models/, diffusion/, storage/                networks (+ their PyTorch parameter names), diffusion maths (+ the
                                               config.sampler block), checkpoints on disk (orbax + integrity)
  conversion/, metrics/                        checkpoint conversion and ``init_from``; metrics (+ their CLI)
  data/                                        clip pipelines, latents, the embedded simulator data
  training/                                    the flag-free trainer library (config checks, Setup, loop, jobs,
                                               train step, optimizer, recipe runner, memory plan)
  inference/                                   session, sampler, rollout model, NAR, envs, model flags, rollout
                                               CLI, policy evaluation
  play/, demo/                                 the browser player; the default recipe run
Shared utilities at the top level (used by several layers): world_model (model assembly and ``model_config``),
sharding (mesh and partition specs; the models' activation constraints use it), param_tree, pixels, video_io,
logging_utils, tree_store, user_input, run_flags. Command line: train; shims that keep the documented command
lines of the CLIs in their layers: rollout / rollout_cli (inference.rollout_cli), evaluate (metrics.evaluate),
policy_eval (inference.policy_eval); play is ``python -m vid2world_jax.play``.
"""

__version__ = "0.1.0"
