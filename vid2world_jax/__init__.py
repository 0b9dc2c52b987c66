"""vid2world_jax: turn a pretrained video diffusion model into an action-conditioned world model (JAX/Flax)."""

__version__ = "0.1.0"
