"""Checkpoints on disk: orbax checkpoints of training runs (``checkpointing``: the manager, save / restore of the
whole training state, the params-only restore of inference, write errors) and the integrity record sealed into
every step and verified on every restore (``integrity``).

Layer: below ``conversion/``, the trainer and the inference stack, which all use it (so it is not part of
``training/``: the session restores parameters, ``conversion/`` writes and seals converted checkpoints and
``conversion.init_from`` restores them). May import ``param_tree`` and third-party libraries only; never
``models/``, ``conversion/``, ``data/``, ``training/``, ``inference/``, ``demo/``, ``play/``
(tests/test_architecture.py).
"""
