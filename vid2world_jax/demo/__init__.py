"""The project's default run: the whole Vid2World recipe in miniature on the embedded Meta-World dataset.

``pipeline.run(config, workdir)`` (called by ``python -m vid2world_jax.train --config=configs/demo.py``):
(a) pretrain a tiny bidirectional video diffusion model on videos only, (b) causalize it with the configured
temporal-conv weight transfer, add the action encoder and fine-tune with Diffusion Forcing + action dropout,
(c) roll out held-out episodes with causal action guidance, (d) write a report folder.
``ablations`` runs the paper's ablations on the same data; ``baselines`` holds copy-last-frame.
"""
