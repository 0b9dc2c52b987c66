"""The trainer library (flag-free): config checks (``config``), ``Setup`` and the synthetic data (``setup``), the
loop with injected evaluators (``loop``), job dispatch (``jobs``).

May import: ``models/``, ``diffusion/``, ``data/``, ``metrics/`` and the shared utilities (``world_model``,
``sharding``, ``steps``, ``optim``, ``checkpointing``, ``init_from``, ``recipe``, ``logging_utils``). Never
``inference/``, ``demo/``, ``play/`` or a command-line module: evaluators that need the inference stack are
passed in by the caller (``vid2world_jax/train.py`` passes ``train_samples.evaluators``).
"""
