"""Conversion of the released PyTorch checkpoints (DynamiCrafter, Vid2World; state dicts and TorchScript) into
this project's parameter trees (``python convert_torch_weights.py``).

Layer: beside ``models/``. May import ``models/`` (module trees, weight transfer), ``diffusion.schedules`` and
``checkpointing`` (writing the converted checkpoint); never ``training/``,
``inference/``, ``demo/``, ``play/``. torch is imported only by the converter's command line path.
"""
