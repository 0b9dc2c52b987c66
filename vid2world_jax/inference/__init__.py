"""The inference stack: a trained world model loaded once and rolled out from anywhere.

Owns: the session (``session``: ``InferenceSession``, checkpoint discovery, the sampler settings of a run and its
default guidance scale), the sampler core (``sampler``: windows, one frame, the jitted rollout), the rollout model
(``rollout_model``: the network seam and the world-model adapter), non-autoregressive sampling (``nar``), the test
oracle (``reference``), gym-style envs (``envs``), the model flags shared by the command lines (``flags``) and the
sample rollouts a training run writes (``train_samples``, an evaluator injected into ``training.loop``).

May import: ``models/``, ``diffusion/``, ``data/``, ``metrics/``, ``world_model`` and the shared utilities
(``checkpointing``, ``init_from``, ``sharding``, ``pixels``, ``video_io``). Never ``training/`` (except through an
injected evaluator's arguments), ``demo/``, ``play/`` or a command-line module.

The session's public names are importable from here (``inference.InferenceSession``).
"""

from vid2world_jax.inference.loading import (  # noqa: F401
    find_state_dir, param_shardings, read_config, write_model_pointer)
from vid2world_jax.inference.session import (  # noqa: F401
    ENCODE_STREAM, InferenceSession, SessionState, default_guidance, sampler_config)
