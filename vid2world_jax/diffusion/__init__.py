"""Diffusion maths, pure functions: noise schedules and parameterisations (eps / v), DDIM steps, action alignment,
Diffusion-Forcing noise levels and causal action guidance; the ``config.sampler`` block's definition
(``sampler_settings``: plain data, imported by the config files).

Layer: the bottom (beside ``models/``). May import nothing of the project outside ``diffusion/``; never
``training/``, ``inference/``, ``demo/``, ``play/`` (tests/test_architecture.py).
"""
