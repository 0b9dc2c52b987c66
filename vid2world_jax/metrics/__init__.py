"""Video-prediction evaluation metrics (PSNR, SSIM, LPIPS, FID, FVD) with reference-parity networks.

Modules: ``image_metrics`` (PSNR/SSIM), ``frechet`` (Fréchet distance), ``lpips`` / ``inception`` / ``i3d``
(feature networks, Flax NNX), ``weights`` (converters from the standard released weight files),
``protocol`` (per-dataset frame selection / crop / resize, torch-exact bilinear resize).

Layer: beside ``models/`` (feature networks). May import ``models/`` and ``conversion/`` (reading released weight files); never ``training/``,
``inference/``, ``demo/``, ``play/``.
"""
