"""The project's default run: the whole Vid2World recipe in miniature on the embedded simulator data.

``python -m vid2world_jax.train --config=configs/demo.py`` hands the config's stage list (``config.recipe``) to the
generic runner ``vid2world_jax.training.recipe`` (which resolves the stages from the config's strings); the stages live here: ``pipeline`` (config, stage table, report stage;
``pipeline.run(config, workdir)`` runs them all), ``training`` ((a) pretrain a tiny bidirectional video diffusion
model on videos only, (b) causalize it with the configured temporal-conv weight transfer and fine-tune with
Diffusion Forcing + action dropout, both through ``training.loop.train_and_evaluate``), ``evaluation`` ((c) guided rollouts
of held-out episodes, long horizon, policy evaluation). ``ablations`` runs the paper's ablations on the same data;
``baselines`` holds copy-last-frame.

Layer: the top. May import everything below (``training/``, ``inference/``, ``data/``, ``metrics/``, ...);
nothing outside ``demo/`` imports it (tests/test_architecture.py): the trainer reaches its stages only through the
import paths written in ``configs/demo.py``.
"""
