"""Flax NNX modules. Module trees mirror the PyTorch DynamiCrafter module trees, so that parameter paths
read like the checkpoint's keys (``input_blocks.1.0.in_layers.2.kernel`` <-> ``input_blocks.1.0.in_layers.2.weight``).

Layer: the bottom. Owns the networks (UNet, VAE, CLIP encoders, resampler, attention kernels, the frame cache,
remat policies, weight transfer) and their PyTorch parameter names (``torch_names``: the name tables' vocabulary,
which ``conversion/`` applies). May import ``sharding`` (activation constraints) and third-party libraries only;
never ``conversion/``, ``data/``, ``training/``, ``inference/``, ``demo/``, ``play/`` (tests/test_architecture.py).
"""
