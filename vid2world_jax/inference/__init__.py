"""The inference stack: a trained world model loaded once and rolled out from anywhere.

Owns: the session (``session``: ``InferenceSession``, checkpoint discovery, the sampler settings of a run and its
default guidance scale), the sampler core (``sampler``: windows, one frame, the jitted rollout), the rollout model
(``rollout_model``: the network seam and the world-model adapter), non-autoregressive sampling (``nar``), the test
oracle (``reference``), gym-style envs (``envs``), the model flags shared by the command lines (``flags``), the
rollout command line (``rollout_cli``), policy evaluation inside the world model (``policy_eval``: Pearson r,
MMRV and its command line) and the sample rollouts a training run writes (``train_samples``, an evaluator injected
into ``training.loop``). Checkpoint discovery follows a workdir's ``model.json`` (``loading``); no run layout is
known here.

May import: ``models/``, ``diffusion/``, ``data/``, ``metrics/``, ``storage/``, ``conversion/`` (``init_from``),
``world_model`` and the shared utilities (``sharding``, ``pixels``, ``video_io``, ``user_input``). Never
``training/`` (except through an injected evaluator's arguments), ``demo/``, ``play/`` or a top-level command
line.

The session's public names are importable from here (``inference.InferenceSession``).
"""

from vid2world_jax.inference.loading import (  # noqa: F401
    find_state_dir, param_shardings, read_config, run_config, write_model_pointer)
from vid2world_jax.inference.session import (  # noqa: F401
    ENCODE_STREAM, InferenceSession, SessionState, default_guidance, sampler_config, window_length)
