"""vid2world_jax: turn a pretrained video diffusion model into an action-conditioned world model (JAX/Flax).

Layers, bottom up (each imports only those below it; tests/test_architecture.py checks it):
  models/, diffusion/, conversion/, metrics/   networks, diffusion maths, checkpoint conversion, metrics
  data/                                        clip pipelines, latents, the embedded simulator data
  training/                                    the flag-free trainer library (config checks, Setup, loop, jobs,
                                               train step, optimizer, recipe runner, memory plan)
  inference/                                   session, sampler, rollout model, NAR, envs, model flags
  play/, demo/                                 the browser player; the default recipe run
Shared utilities at the top level (used by several layers): world_model (model assembly and ``model_config``),
sharding, checkpointing (+ checkpoint_integrity), init_from, param_tree, pixels, video_io, logging_utils,
tree_store, user_input. Command lines: train, rollout / rollout_cli, evaluate, policy_eval, play.
"""

__version__ = "0.1.0"
