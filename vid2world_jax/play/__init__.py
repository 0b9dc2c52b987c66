"""Play a trained world model in the browser (``python -m vid2world_jax.play``; see ``__main__``).

``keymaps`` (keys -> action vectors per action space), ``contexts`` (where episodes start), ``game`` (the
player: stepping, recording, replay metadata), ``server`` (the local web server and its page), ``app``
(assembles them for a loaded ``inference.InferenceSession``).

Layer: the top (an application of ``inference/``). May import ``inference/`` and below; nothing imports it
except its own ``__main__``.
"""
