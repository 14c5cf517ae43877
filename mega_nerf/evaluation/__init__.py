"""Evaluation: image-quality metrics (PSNR, SSIM, LPIPS), the scoring protocol split, and result pictures.

* :mod:`mega_nerf.evaluation.metrics` -- small pure metric functions and a reusable LPIPS wrapper.
* :mod:`mega_nerf.evaluation.images` -- depth colouring, rendered | ground truth | depth strips, atomic PNG writes.
"""
