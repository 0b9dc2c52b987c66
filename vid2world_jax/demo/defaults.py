"""The default run's config blocks as data: ``config.demo`` (every knob of its stages), its ``config.sampler``
values (``demo_sampler_config``) and ``config.recipe`` (the stages in order and where each is implemented, as
import-path strings). Imports nothing but ml_collections and the sampler block's definition
(``diffusion.sampler_settings``, plain data), so config files (``configs/demo.py``) can use it without importing
pipeline code."""

from __future__ import annotations

import ml_collections

from vid2world_jax.diffusion import sampler_settings

STAGES = ("pretrain", "causalize", "finetune", "distill", "evaluate", "out_of_family", "long_horizon", "policy_eval",
          "student_eval", "report")

def demo_sampler_config() -> ml_collections.ConfigDict:
  """The default run's ``config.sampler`` block (fields: ``diffusion.sampler_settings``): few steps for CPU."""
  s = sampler_settings.default_sampler_config()
  s.ddim_steps = 5                  # DDIM steps per generated frame (demo.policy_eval.ddim_steps: the policy rollouts')
  s.eta = 1.0                       # DDIM eta (1 as in the paper's evaluations; measured +0.4 dB PSNR over eta 0
  #                                   at 5 steps on the default model; noise is seeded, so runs are repeatable)
  s.final_alpha_one = True          # last DDIM step to alpha-bar 1 (no residual sqrt(1-ab[0]) noise; matters at few
  #                                   steps; False = DynamiCrafter's convention)
  s.guidance = "cfg"                # causal action guidance (two passes per step)
  s.guidance_scale = 2.5            # causal action guidance s of the main evaluation (1 = no guidance)
  s.guidance_rescale = 0.7          # CFG rescale phi
  s.history_noise = "100"           # t_small of history frames: "second_last" DDIM step or an int (100 = the
  #                                   second-last step of a 10-step plan, kept fixed as ddim_steps is lowered)
  return s


def default_demo_config() -> ml_collections.ConfigDict:
  """The ``config.demo`` block (every knob of the default run)."""
  d = ml_collections.ConfigDict()
  # Defaults sized for <= 30 min on 2 CPU cores (docs/demo_results.md has the measured stage times).
  d.pretrain = "shipped"            # stage (a): "shipped" = the pretrained VDM file in vid2world_jax/demo/assets
  #                                   (made by `python -m vid2world_jax.demo.export_pretrained`, README), as the
  #                                   original downloads DynamiCrafter | "run" = pretrain here (demo.pretrain_steps)
  d.pretrain_asset = "breakout_vdm.npz"  # file name under vid2world_jax/demo/assets (or an absolute path)
  d.pretrain_steps = 300            # stage (a) with pretrain="run": video-only bidirectional pretraining steps
  d.pretrain_lr = 2e-3              # stage (a) AdamW peak lr (other optimizer fields from config.optim)
  d.pretrain_warmup = 20            # stage (a) linear warmup steps
  d.finetune_steps = 400            # stage (b): Diffusion-Forcing fine-tune steps (config.total_steps is ignored;
  #                                   700 -> 400 to give the student 800 steps: docs/demo_results.md row 6)
  d.init = "pretrained"             # stage (b) start: "pretrained" (stage a + transfer) | "scratch" (random)
  d.weight_transfer = "mixed"       # temporal-conv transfer: "shift" | "mask" | "mixed" (= extrapolative)
  d.eval_clips = 8                  # held-out clips (test split, one per episode, cycling with new starts)
  d.eval_batch = 8                  # rollouts per sampler call (fixed shape: one compilation)
  d.guidance_sweep = (1.0, 2.5, 4.0)  # scales of the sweep (1.0 = no guidance); the main evaluation's scale, DDIM
  #                                   steps, eta, ... are config.sampler's (demo_sampler_config below)
  d.long_horizon = 4                # long-horizon rollouts to this many training windows (0 = off; point 4)
  d.long_horizon_clips = 8          # held-out episodes long enough for them (fewer if the split has fewer)
  d.very_long_horizon = 128         # breakout: one more long row of this many frames, ground truth from the simulator
  #                                   (the tracker from unseen seeds; episodes on disk are shorter); 0 = off. Reported
  d.very_long_horizon_clips = 4     # ... from this many initial states (seeds 9500..)
  # Out-of-family split (demo/out_of_family.py): mid-game contexts from unseen seeds under action families that no
  # recording policy produces (hold, alternate, away from the ball, noop) + the tracker from the same contexts.
  d.out_of_family = ml_collections.ConfigDict()
  d.out_of_family.enabled = True    # breakout only; stage "out_of_family"
  d.out_of_family.contexts = 8      # contexts; clips = contexts x (4 families + control)
  d.out_of_family.first_seed = 9000 # seed of the first context (recording: 1000.., policy evaluation: 5000..)
  d.strict = False                  # True: exit non-zero (after the table of shortfalls) when a point of the
  #                                   quality bar (action following, copy-last, policy ranking, long horizon) fails
  d.video_scale = 6                 # report GIFs upscaled by this integer factor (32 px frames -> 192 px)
  d.num_videos = 6                  # GIFs written to the report
  d.seed = 0                        # sampling seed (model/data seeds: config.seed / config.data.seed)
  d.progress = True                 # tqdm bars
  # Policy evaluation (paper §5.1 analogue on the embedded simulator).
  d.policy_eval = ml_collections.ConfigDict()
  d.policy_eval.enabled = True      # run stage (c') in the default run
  d.policy_eval.policies = ("tracker", "tracker_eps0.25", "tracker_eps0.5", "random", "away", "always_left")
  #                                   breakout.make_policy names: 4 of the recorded family + 2 outside every recorded
  #                                   family (metaworld: simulator.POLICIES, e.g. "expert", "expert_noise2.0")
  d.policy_eval.episodes = 16       # initial states per policy (seeds first_seed + k, unseen in training)
  d.policy_eval.bootstrap = 1000    # bootstrap resamples of the states for the confidence intervals of r and MMRV
  d.policy_eval.first_seed = 5000   # seed of the first initial state
  d.policy_eval.horizon = 24        # at most this many actions (Breakout episodes end earlier when the ball is missed)
  d.policy_eval.ddim_steps = 3      # DDIM steps per frame in the policy rollouts (overrides config.sampler.ddim_steps
  #                                   there; cost: episodes x horizon x steps)
  d.policy_eval.verifier_size = 16  # metaworld only: success verifier on size x size downsampled frames
  # Catch test (breakout, the student; breakout_eval.catch_test): the next frame where the ball has just reached
  # the row above the paddle, from real frames and the real action (the policies of policy_eval, its seeds).
  d.catch_test = ml_collections.ConfigDict()
  d.catch_test.episodes = 32        # real episodes per policy scanned for deciding frames (0 = skip the test)
  d.catch_test.steps = 40           # actions per episode (episodes end earlier at a miss)
  # Few-step student (demo/student.py, stages "distill" and "student_eval"): the fine-tuned world model trained
  # further for its own few-step sampler without guidance pass (diffusion/student.py), saved in <workdir>/student.
  d.student = ml_collections.ConfigDict()
  d.student.enabled = True          # run the distillation stage and evaluate the student beside the teacher
  d.student.ddim_steps = 1          # the student's DDIM steps per frame (its sampler block; one UNet pass each)
  d.student.window = 4              # frames in the student's sampler window (history + new frame; its sampler
  #                                   block's window; it trains on sub-clips of this length): 0 = the UNet's 8
  d.student.steps = 800             # training steps (init: the fine-tuned world model; 300 -> 450 -> 800: docs/demo_results.md rows 4f, 6)
  d.student.batch_size = 8          # clips per step (one target frame per clip)
  d.student.lr = 1e-3               # AdamW peak lr (cosine decay, other optimizer fields from config.optim)
  d.student.warmup = 20             # linear warmup steps
  d.student.fps_frames = 24         # frames timed per model for the batch-1 frame rates in the report (0 = skip)
  # Ablation driver (vid2world_jax.demo.ablations).
  d.ablations = ml_collections.ConfigDict()
  d.ablations.finetune_steps = 0    # fine-tune steps of every variant (0 = demo.finetune_steps)
  d.ablations.transfers = ("shift", "mask", "mixed")  # weight-transfer variants from the pretrained model
  d.ablations.scratch = True        # also fine-tune from random init (same steps)
  d.ablations.nar = True            # also sample non-autoregressively (all frames jointly, shared timestep)
  return d



def default_recipe_config() -> ml_collections.ConfigDict:
  """The ``config.recipe`` block of the default run: its stages in order and where each is implemented."""
  r = ml_collections.ConfigDict()
  r.stages = STAGES                         # executed in this order by vid2world_jax.training.recipe.run
  r.fns = ml_collections.ConfigDict(  # stage -> "module:attr"
      {s: f"vid2world_jax.demo.pipeline:{s.upper()}" for s in STAGES})
  r.prepare = "vid2world_jax.demo.pipeline:prepare_config"  # completes and checks the config before any stage runs
  return r
