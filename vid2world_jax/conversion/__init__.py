"""Conversion of the released PyTorch checkpoints (DynamiCrafter, Vid2World; state dicts and TorchScript) into
this project's parameter trees (``python convert_torch_weights.py``).

Owns the converter (``core``: applying the models' name tables, ``dynamicrafter`` / ``vid2world``: the released
checkpoints, ``checkpoint_io`` / ``torchscript_io``: reading them without pickles) and the other side of the
converted format, ``init_from`` (a converted checkpoint loaded into a model's parameters, sharded, with the causal
weight transfer; used by the trainer, the session and the latents writer).

Layer: above ``models/`` (whose ``torch_names`` tables it applies; ``models/`` never imports it). May import
``models/``, ``diffusion.schedules``, ``storage/`` (writing, sealing and restoring checkpoints), ``sharding`` and
``user_input``; never ``data/``, ``training/``, ``inference/``, ``demo/``, ``play/``. torch is imported only by
the converter's command line path.
"""
