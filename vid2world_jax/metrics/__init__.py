"""Video-prediction evaluation metrics (PSNR, SSIM, LPIPS, FID, FVD) with reference-parity networks.

Modules: ``image_metrics`` (PSNR/SSIM), ``frechet`` (Fréchet distance), ``lpips`` / ``inception`` / ``i3d``
(feature networks, Flax NNX), ``weights`` (converters from the standard released weight files),
``protocol`` (per-dataset frame selection / crop / resize, torch-exact bilinear resize).

``evaluate``: the metrics command line (``python -m vid2world_jax.evaluate``, through the top-level shim).

Layer: beside ``models/`` (feature networks). May import ``models/``, ``conversion/`` (reading released weight
files), ``pixels`` and ``user_input``; never ``training/``, ``inference/``, ``demo/``, ``play/``.
"""
