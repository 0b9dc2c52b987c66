"""The trainer library (flag-free): config checks (``config``), ``Setup`` and the synthetic data (``setup``), the
loop with injected evaluators (``loop``), job dispatch (``jobs``), the pure train step (``steps``), the optimizer
(``optim``), the generic stage runner of recipe jobs (``recipe``) and the ahead-of-time memory plan
(``memory_plan``).

May import: ``models/``, ``diffusion/``, ``data/``, ``metrics/``, ``storage/`` (orbax checkpoints + integrity),
``conversion/`` (``init_from``) and the shared utilities (``world_model``, ``sharding``, ``logging_utils``,
``param_tree``, ``tree_store``). Checkpointing, ``init_from`` and ``sharding`` are not part of this package
because the session, ``data/`` and ``models/`` use them too, and nothing below the trainer imports it. Never
``inference/``, ``demo/``, ``play/`` or a command-line module: evaluators that need the inference stack are
passed in by the caller (``vid2world_jax/train.py`` passes ``train_samples.evaluators``).
"""
