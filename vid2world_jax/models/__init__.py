"""Flax NNX modules. Module trees mirror the PyTorch DynamiCrafter module trees, so that parameter paths
read like the checkpoint's keys (``input_blocks.1.0.in_layers.2.kernel`` <-> ``input_blocks.1.0.in_layers.2.weight``)."""
