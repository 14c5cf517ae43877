"""Tests for mega_nerf.evaluation metrics and result pictures (needs scikit-image for references)."""
from __future__ import annotations

import math
import sys
import types

import cv2
import numpy as np
import pytest
import torch

from mega_nerf.evaluation.images import colorize_depth, save_png, side_by_side, to_uint8
from mega_nerf.evaluation.metrics import (
    LpipsMetric,
    psnr,
    split_for_protocol,
    ssim,
    ssim_window,
    summarize,
)


def _structured(h: int, w: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth RGB image and a noisy copy, both float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 20.0
    clean = np.stack([0.5 + 0.4 * np.sin(3 * xx + c) * np.cos(2 * yy - c) for c in range(3)], axis=-1)
    noisy = np.clip(clean + rng.normal(0.0, noise, clean.shape), 0.0, 1.0)
    return clean, noisy


# ---------------------------------------------------------------- psnr


def test_psnr_known_mse():
    gt = torch.zeros(4, 5, 3)
    pred = torch.full((4, 5, 3), 0.1)  # MSE = 0.01 -> 20 dB
    assert psnr(pred, gt) == pytest.approx(20.0, abs=1e-6)
    assert psnr(gt, gt) == math.inf


def test_psnr_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    clean, noisy = _structured(32, 40, 0.05)
    ref = skm.peak_signal_noise_ratio(clean, noisy, data_range=1.0)
    assert psnr(torch.from_numpy(noisy).float(), torch.from_numpy(clean).float()) == pytest.approx(ref, abs=1e-4)


def test_psnr_shape_mismatch():
    with pytest.raises(ValueError):
        psnr(torch.zeros(4, 4, 3), torch.zeros(4, 5, 3))


# ---------------------------------------------------------------- ssim


def _sk_ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    skm = pytest.importorskip("skimage.metrics")
    return skm.structural_similarity(
        a, b, gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=1.0, channel_axis=2
    )


@pytest.mark.parametrize("noise", [0.02, 0.1])
def test_ssim_matches_skimage(noise):
    clean, noisy = _structured(48, 64, noise)
    ref = _sk_ssim(noisy, clean)
    got = ssim(torch.from_numpy(noisy).float(), torch.from_numpy(clean).float())
    assert got == pytest.approx(ref, abs=1e-3)


def test_ssim_identity_and_monotone_in_noise():
    clean, _ = _structured(40, 40, 0.0)
    x = torch.from_numpy(clean).float()
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    scores = [ssim(torch.from_numpy(_structured(40, 40, s)[1]).float(), x) for s in (0.02, 0.1, 0.3)]
    assert 1.0 > scores[0] > scores[1] > scores[2]


def test_ssim_small_image_shrinks_window():
    assert ssim_window(64, 64) == (11, 1.5)
    k, sigma = ssim_window(8, 9)
    assert k == 7 and sigma == pytest.approx(3 / 3.5)
    clean, noisy = _structured(8, 8, 0.1)
    got = ssim(torch.from_numpy(noisy), torch.from_numpy(clean))
    assert got == pytest.approx(_sk_ssim(noisy, clean, sigma=sigma), abs=1e-3)
    x = torch.from_numpy(clean)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="3x3"):
        ssim(torch.zeros(2, 8, 3), torch.zeros(2, 8, 3))


# ---------------------------------------------------------------- lpips


def test_lpips_unavailable_when_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` raise ImportError
    metric = LpipsMetric()
    assert metric.available is False
    assert "lpips package not installed" in metric.reason
    assert metric(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3)) is None


def test_lpips_unavailable_when_weights_missing(monkeypatch, tmp_path):
    fake = types.ModuleType("lpips")
    fake.__file__ = str(tmp_path / "lpips" / "__init__.py")  # no weights/ folder next to it

    def _never(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("network must not be built when weights are missing")

    fake.LPIPS = _never
    monkeypatch.setitem(sys.modules, "lpips", fake)
    metric = LpipsMetric()
    assert metric.available is False
    assert metric.reason.startswith("weights not found locally")
    assert metric(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3)) is None


# ---------------------------------------------------------------- summarize / protocol


def test_summarize():
    s = summarize([1.0, None, 2.0, 3.0, 4.0])
    assert s["count"] == 4
    assert s["mean"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(math.sqrt(1.25))  # population std
    assert (s["min"], s["max"]) == (1.0, 4.0)
    for empty in ([], [None, None]):
        e = summarize(empty)
        assert e == {"mean": None, "std": None, "min": None, "max": None, "count": 0}


def test_split_for_protocol():
    img = torch.arange(4 * 7 * 3).reshape(4, 7, 3)
    right = split_for_protocol(img, "mega_nerf")
    assert right.shape == (4, 4, 3)
    assert torch.equal(right, img[:, 3:])
    assert torch.equal(split_for_protocol(img, "held_out"), img)
    even = torch.rand(2, 8, 3)
    assert torch.equal(split_for_protocol(even, "mega_nerf"), even[:, 4:])
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        split_for_protocol(img, "left_half")


# ---------------------------------------------------------------- images


def test_colorize_depth_handles_inf_nan_and_mask():
    depth = torch.linspace(1.0, 100.0, 6 * 8).reshape(6, 8)
    depth[0, 0] = float("inf")
    depth[0, 1] = float("nan")
    depth[0, 2] = -1.0
    mask = torch.ones(6, 8, dtype=torch.bool)
    mask[5, 7] = False
    rgb = colorize_depth(depth, mask)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == torch.uint8
    for y, x in [(0, 0), (0, 1), (0, 2), (5, 7)]:
        assert rgb[y, x].tolist() == [0, 0, 0]
    # far is brighter than near with inferno
    assert int(rgb[5, 6].sum()) > int(rgb[1, 0].sum())
    assert colorize_depth(torch.full((3, 3), float("inf"))).sum() == 0
    assert colorize_depth(torch.full((3, 3), 5.0)).shape == (3, 3, 3)


def test_to_uint8_and_side_by_side():
    assert to_uint8(torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0])).tolist() == [0, 0, 128, 255, 255]
    h, w = 5, 7
    rendered = torch.rand(h, w, 3)
    gt = torch.rand(h, w, 3)
    depth_rgb = colorize_depth(torch.rand(h, w) + 0.1)
    strip = side_by_side(rendered, gt, depth_rgb)
    assert strip.shape == (h, 3 * w, 3) and strip.dtype == torch.uint8
    assert torch.equal(strip[:, :w], to_uint8(rendered))
    assert torch.equal(strip[:, w : 2 * w], to_uint8(gt))
    assert torch.equal(strip[:, 2 * w :], depth_rgb)
    with pytest.raises(ValueError):
        side_by_side(rendered, torch.rand(h, w + 1, 3), depth_rgb)


def test_save_png_round_trip_preserves_colour_order(tmp_path):
    img = np.zeros((4, 6, 3), dtype=np.uint8)
    img[:, :2] = (255, 0, 0)  # red
    img[:, 2:4] = (0, 255, 0)  # green
    img[:, 4:] = (0, 0, 255)  # blue
    img[0, 0] = (10, 20, 30)
    path = tmp_path / "sub" / "strip.png"
    save_png(torch.from_numpy(img), path)
    back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, img)
    assert sorted(p.name for p in path.parent.iterdir()) == ["strip.png"]  # no temp file left
    save_png(img, path)  # overwrite works, numpy input accepted
    with pytest.raises(ValueError):
        save_png(np.zeros((4, 6, 3), dtype=np.float32), path)
