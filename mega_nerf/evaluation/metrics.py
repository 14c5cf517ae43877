"""Image-quality metrics for evaluation.

All image arguments are float tensors of shape (H, W, 3) with values in [0, 1] (numpy arrays are
accepted too). Metrics are computed in float64 on the CPU-side copy and returned as Python floats.
Callers are expected to clamp rendered colours to [0, 1] first, as Mega-NeRF does.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)

#: SSIM settings shared with Mega-NeRF / PlenOctree (and tf.image.ssim).
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: torchmetrics derives the gaussian window from sigma as ``2 * int(3.5 * sigma + 0.5) + 1``.
_GAUSS_TRUNCATE = 3.5

PROTOCOLS = ("mega_nerf", "held_out")


def _as_image(x, name: str, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 3:
        raise ValueError(f"{name} must have shape (H, W, C), got {tuple(t.shape)}")
    return t.detach().to(dtype=dtype, device=device)


def _check_pair(pred, gt, dtype: torch.dtype = torch.float64,
                device: torch.device | str = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    p, g = _as_image(pred, "pred", dtype, device), _as_image(gt, "gt", dtype, device)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(p.shape)} vs {tuple(g.shape)}")
    return p, g


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Peak signal-to-noise ratio for images in [0, 1]: ``-10 * log10(MSE)``.

    Args:
        pred: (H, W, 3) float image in [0, 1].
        gt: (H, W, 3) float image in [0, 1].

    Returns:
        PSNR in dB; ``inf`` for identical images.
    """
    p, g = _check_pair(pred, gt)
    mse = float(torch.mean((p - g) ** 2))
    if mse == 0.0:
        return math.inf
    return -10.0 * math.log10(mse)


def ssim_window(height: int, width: int) -> Tuple[int, float]:
    """The gaussian SSIM window ``(kernel_size, sigma)`` used for an image of this size.

    Normally ``(11, 1.5)``. When the image is smaller than 11 pixels on a side the window shrinks to
    the largest odd size ``k <= min(height, width)`` and sigma to ``((k - 1) / 2) / 3.5`` (the sigma
    whose 3.5-sigma truncated gaussian is exactly ``k`` wide, which is how torchmetrics and skimage
    size a gaussian window). Call this to record the window actually used for small images.

    Raises:
        ValueError: if the image is smaller than 3 pixels on a side (no meaningful window fits).
    """
    side = min(int(height), int(width))
    if side >= SSIM_KERNEL_SIZE:
        return SSIM_KERNEL_SIZE, SSIM_SIGMA
    k = side if side % 2 == 1 else side - 1
    if k < 3:
        raise ValueError(f"SSIM needs images at least 3x3 pixels, got {height}x{width}")
    return k, ((k - 1) / 2) / _GAUSS_TRUNCATE


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Structural similarity (gaussian window 11, sigma 1.5, data_range 1, k1 0.01, k2 0.03).

    Computed with ``torchmetrics.functional.image.structural_similarity_index_measure`` on NCHW
    float32 tensors on ``pred``'s device (float64 convolutions on the CPU took about a second per
    320 x 240 image and dominated evaluation; float32 changes the result by under 1e-5). The SSIM map is averaged over the *valid* region only (borders of
    ``(kernel_size - 1) // 2`` pixels are cropped), i.e. the tf.image.ssim / skimage convention;
    torchmetrics 1.x would otherwise also average over reflect-padded borders. Note Mega-NeRF's
    PlenOctree port averages over zero-padded borders, so its values differ slightly near edges
    (negligible on full-size images).

    Images smaller than 11 pixels on a side use a shrunken window, see :func:`ssim_window`
    (a debug log line records it); images smaller than 3x3 raise ``ValueError``.

    Args:
        pred: (H, W, C) float image in [0, 1].
        gt: (H, W, C) float image in [0, 1].

    Returns:
        Mean SSIM over pixels and channels, in [-1, 1]; 1.0 for identical images.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    device = pred.device if isinstance(pred, torch.Tensor) else "cpu"
    p, g = _check_pair(pred, gt, torch.float32, device)
    h, w = p.shape[:2]
    kernel_size, sigma = ssim_window(h, w)
    if kernel_size != SSIM_KERNEL_SIZE:
        logger.debug("ssim: %dx%d image, window shrunk to %d (sigma %.4f)", h, w, kernel_size, sigma)
    p = p.permute(2, 0, 1).unsqueeze(0)
    g = g.permute(2, 0, 1).unsqueeze(0)
    _, full = structural_similarity_index_measure(
        p,
        g,
        gaussian_kernel=True,
        sigma=sigma,
        kernel_size=kernel_size,
        data_range=1.0,
        k1=SSIM_K1,
        k2=SSIM_K2,
        return_full_image=True,
    )
    pad = (kernel_size - 1) // 2
    if pad > 0:
        full = full[..., pad : full.shape[-2] - pad, pad : full.shape[-1] - pad]
    return float(full.mean())


class LpipsMetric:
    """VGG LPIPS (``normalize=True``, inputs in [0, 1]) with one network reused for every image.

    The ``lpips`` package is imported lazily on first use. Nothing is ever downloaded: the VGG16
    backbone weights must already be in the torch hub cache (``$TORCH_HOME/hub/checkpoints``) and
    the LPIPS linear-layer weights are shipped inside the ``lpips`` package. When either is missing
    :attr:`available` is False, :attr:`reason` says why and calling the metric returns ``None``.

    Args:
        net: LPIPS backbone, ``"vgg"`` (as reported by Mega-NeRF).
        device: device for the network; inputs are moved there.
    """

    _VGG16_FALLBACK_FILE = "vgg16-397923af.pth"

    def __init__(self, net: str = "vgg", device: str | torch.device = "cpu") -> None:
        self.net_name = net
        self.device = torch.device(device)
        self._model = None
        self._loaded = False
        self._reason = ""

    def _backbone_file(self) -> str:
        name = self._VGG16_FALLBACK_FILE
        if self.net_name == "vgg":
            try:
                import torchvision

                name = os.path.basename(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url)
            except Exception:  # old torchvision or none: keep the known file name
                pass
        return os.path.join(torch.hub.get_dir(), "checkpoints", name)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            import lpips  # noqa: F401
        except Exception as e:  # ImportError, or torchvision missing underneath
            self._reason = f"lpips package not installed ({type(e).__name__}: {e})"
            return
        if self.net_name != "vgg":
            self._reason = f"only the vgg LPIPS network is supported, got {self.net_name!r}"
            return
        linear = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{self.net_name}.pth")
        backbone = self._backbone_file()
        missing = [p for p in (linear, backbone) if not os.path.isfile(p)]
        if missing:
            self._reason = "weights not found locally: " + ", ".join(missing)
            return
        try:
            model = lpips.LPIPS(net=self.net_name, verbose=False)
        except Exception as e:
            self._reason = f"lpips network could not be built ({type(e).__name__}: {e})"
            return
        self._model = model.eval().to(self.device)
        for p in self._model.parameters():
            p.requires_grad_(False)

    @property
    def available(self) -> bool:
        """Whether LPIPS can be computed (loads the network on first access)."""
        self._load()
        return self._model is not None

    @property
    def reason(self) -> str:
        """Why LPIPS is unavailable; empty when it is available."""
        self._load()
        return self._reason

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> Optional[float]:
        """LPIPS distance of two (H, W, 3) images in [0, 1]; ``None`` when unavailable."""
        if not self.available:
            return None
        p, g = _check_pair(pred, gt)
        p = p.permute(2, 0, 1).unsqueeze(0).to(self.device, torch.float32)
        g = g.permute(2, 0, 1).unsqueeze(0).to(self.device, torch.float32)
        with torch.no_grad():
            return float(self._model(p, g, normalize=True).item())


def summarize(values: Sequence[Optional[float]]) -> dict:
    """Summary statistics over per-image values, ignoring ``None`` entries.

    Returns:
        ``{"mean", "std", "min", "max", "count"}`` where ``std`` is the population standard
        deviation and ``count`` the number of non-``None`` values. With no values, every statistic
        is ``None`` and ``count`` is 0.
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
    n = len(vals)
    mean = sum(vals) / n
    var = sum((v - mean) ** 2 for v in vals) / n
    return {"mean": mean, "std": math.sqrt(var), "min": min(vals), "max": max(vals), "count": n}


def split_for_protocol(image: torch.Tensor, protocol: str) -> torch.Tensor:
    """The part of an (H, W, C) image that is scored under ``protocol``.

    * ``"mega_nerf"``: the right half ``image[:, W // 2:]`` -- Mega-NeRF trains on the left half of
      each validation image and scores only the right half.
    * ``"held_out"``: the whole image (the image was never seen in training).

    Raises:
        ValueError: for an unknown protocol.
    """
    if protocol == "mega_nerf":
        return image[:, image.shape[1] // 2 :]
    if protocol == "held_out":
        return image
    raise ValueError(f"unknown evaluation protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
