"""Hash-grid and frequency encodings against naive references; samplers and compositing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mega_nerf.fields.encodings import HashGridEncoding, frequency_encoding, hash_grid_resolutions
from mega_nerf.render.volume import OPAQUE_DELTA, composite, ellipsoid_radius_crossing, sample_pdf, stratified_samples

# Instant-NGP's spatial hash (uint32 arithmetic), written out here.
PRIMES = (1, 2654435761, 805459861)


def make_encoding(seed=0):
    torch.manual_seed(seed)
    # resolutions 2, 4, 8, 16; table 2^9 = 512: (2+1)^3 = 27 and 5^3 = 125 fit (dense),
    # 9^3 = 729 and 17^3 = 4913 do not (hashed).
    enc = HashGridEncoding(levels=4, features_per_level=2, log2_table_size=9, base_resolution=2, max_resolution=16)
    with torch.no_grad():
        enc.embeddings.uniform_(-1, 1)
    return enc


def naive_hash_grid(enc: HashGridEncoding, points: np.ndarray, table_size: int, resolutions) -> np.ndarray:
    """Per point, per level, per corner loop (float64)."""
    F = enc.features_per_level
    emb = enc.embeddings.detach().double().numpy()
    out = np.zeros((len(points), len(resolutions) * F))
    offset = 0
    for level, r in enumerate(resolutions):
        dense = (r + 1) ** 3 <= table_size
        size = (r + 1) ** 3 if dense else table_size
        for n, p in enumerate(points):
            p = np.clip(p, 0, 1)
            acc = np.zeros(F)
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        weight = 1.0
                        corner = []
                        for a, d in enumerate((dx, dy, dz)):
                            s = p[a] * r
                            base = math.floor(s)
                            frac = s - base
                            weight *= frac if d else 1 - frac
                            corner.append(base + d)
                        if weight == 0:
                            continue
                        cx, cy, cz = corner
                        if dense:
                            index = cx + cy * (r + 1) + cz * (r + 1) ** 2
                        else:
                            h = ((cx * PRIMES[0]) ^ (cy * PRIMES[1]) ^ (cz * PRIMES[2])) & 0xFFFFFFFF
                            index = h % table_size
                        acc += weight * emb[offset + index]
            out[n, level * F:(level + 1) * F] = acc
        offset += size
    return out


def test_hash_grid_matches_naive_reference():
    enc = make_encoding()
    resolutions = hash_grid_resolutions(4, 2, 16)
    assert resolutions == [2, 4, 8, 16]
    assert enc.dense.tolist() == [True, True, False, False]
    assert enc.embeddings.shape == (27 + 125 + 512 + 512, 2)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, size=(20, 3))
    pts[0] = [1.0, 0.0, 0.5]        # on the faces of the unit cube
    pts[1] = [0.25, 0.5, 0.75]      # exactly on lattice points of several levels
    got = enc(torch.tensor(pts, dtype=torch.float32)).detach().double().numpy()
    assert got.shape == (20, 8)
    want = naive_hash_grid(enc, pts.astype(np.float32).astype(np.float64), 512, resolutions)
    assert np.allclose(got, want, atol=2e-5), np.abs(got - want).max()


def test_hash_grid_clamps_outside_points():
    enc = make_encoding(1)
    a = enc(torch.tensor([[1.3, -0.2, 0.5], [0.7, 2.0, -1.0]]))
    b = enc(torch.tensor([[1.0, 0.0, 0.5], [0.7, 1.0, 0.0]]))
    assert torch.equal(a, b)


def test_hash_grid_gradients_reach_embeddings():
    enc = make_encoding(2)
    rng = np.random.default_rng(1)
    pts = rng.uniform(0.01, 0.99, size=(20, 3))
    out = enc(torch.tensor(pts, dtype=torch.float32))
    out[:, 0::2].sum().backward()  # feature 0 of every level
    grad = enc.embeddings.grad
    assert grad is not None
    # d(sum)/d(embedding) = sum of the trilinear weights that reach it; weights sum to 1 per level
    assert grad[:, 0].sum().item() == pytest.approx(20 * 4, rel=1e-5)
    assert bool((grad[:, 1] == 0).all())
    assert bool((grad[:, 0] >= 0).all()) and int((grad[:, 0] > 0).sum()) > 20
    # the gradient of row k is the naive encoding's output under a one-hot table at row k;
    # check rows from a dense and a hashed level
    grad = grad.clone()
    touched = torch.nonzero(grad[:, 0]).reshape(-1).tolist()
    rows = touched[:3] + [r for r in touched if r >= 27 + 125][:3]
    assert len(rows) == 6
    for row in rows:
        with torch.no_grad():
            enc.embeddings.zero_()
            enc.embeddings[row, 0] = 1.0
        total = naive_hash_grid(enc, pts.astype(np.float32).astype(np.float64), 512, [2, 4, 8, 16])[:, 0::2].sum()
        assert grad[row, 0].item() == pytest.approx(total, rel=1e-4, abs=1e-6)


def test_frequency_encoding_values():
    x = torch.tensor([[0.3, -1.2], [2.0, 0.0]])
    out = frequency_encoding(x, 3)
    assert out.shape == (2, 2 + 2 * 2 * 3)
    assert torch.equal(out[:, :2], x)
    for k in range(3):
        for d in range(2):
            f = 2.0 ** k  # no pi factor (Mega-NeRF)
            assert torch.allclose(out[:, 2 + 2 * k + d], torch.sin(f * x[:, d]))
            assert torch.allclose(out[:, 8 + 2 * k + d], torch.cos(f * x[:, d]))
    assert torch.equal(frequency_encoding(x, 0), x)
    assert frequency_encoding(torch.zeros(5, 3), 4).shape == (5, 27)  # Mega-NeRF's dir encoding width


# ------------------------------------------------------------------------ rendering
def test_composite_hand_computed():
    sigma = torch.tensor([[1.0, 2.0, 3.0]])
    z = torch.tensor([[0.0, 0.5, 1.5]])
    rgb = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    out = composite(sigma, rgb, z, torch.tensor([1.0]))
    # deltas 0.5, 1.0, 1.0 -> optical depths 0.5, 2, 3
    a = [1 - math.exp(-0.5), 1 - math.exp(-2.0), 1 - math.exp(-3.0)]
    t = [1.0, math.exp(-0.5), math.exp(-2.5)]
    w = [a[i] * t[i] for i in range(3)]
    assert out["weights"][0].tolist() == pytest.approx(w, rel=1e-5)
    assert out["rgb"][0].tolist() == pytest.approx(w, rel=1e-5)  # one colour channel per sample
    assert out["depth"][0].item() == pytest.approx(0.5 * w[1] + 1.5 * w[2], rel=1e-5)
    assert out["transmittance"][0].item() == pytest.approx(math.exp(-5.5), rel=1e-4)
    assert sum(w) + math.exp(-5.5) == pytest.approx(1.0)


def test_composite_opaque_last_sample_and_empty_space():
    z = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    sigma = torch.tensor([[0.0, 0.5], [0.0, 0.0]])
    rgb = torch.full((2, 2, 3), 0.25)
    out = composite(sigma, rgb, z, torch.tensor([OPAQUE_DELTA, OPAQUE_DELTA]))
    assert out["weights"][0].tolist() == pytest.approx([0.0, 1.0])
    assert out["depth"][0].item() == pytest.approx(2.0)
    assert out["rgb"][0].tolist() == pytest.approx([0.25] * 3)
    assert out["weights"][1].tolist() == [0.0, 0.0] and out["transmittance"][1].item() == pytest.approx(1.0)


def test_sample_pdf_concentrates_in_heavy_bin():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    weights = torch.tensor([[0.0, 0.0, 10.0, 0.0]])
    s = sample_pdf(bins, weights, 64, deterministic=True)
    assert s.shape == (1, 64)
    inside = ((s >= 2.0) & (s <= 3.0)).float().mean().item()
    assert inside >= 0.95
    assert bool((s >= 0).all() and (s <= 4).all())
    assert bool((s[:, 1:] >= s[:, :-1]).all())
    torch.manual_seed(0)
    r = sample_pdf(bins.expand(200, 5), weights.expand(200, 4), 16, deterministic=False)
    assert ((r >= 2.0) & (r <= 3.0)).float().mean().item() >= 0.95
    assert bool((r >= 0).all() and (r <= 4).all())


def test_sample_pdf_uniform_weights_is_linear():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    s = sample_pdf(bins, torch.ones(1, 4), 5, deterministic=True)
    assert s[0].tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0], abs=1e-5)
    s = sample_pdf(bins, torch.tensor([[3.0, 1.0, 0.0, 0.0]]), 3, deterministic=True)
    # cdf (0, .75, 1, 1, 1) ignoring the 1e-5 floor: u = 0.5 -> 0.5/0.75 of bin 0
    assert s[0, 1].item() == pytest.approx(2 / 3, abs=1e-3)


def test_stratified_samples():
    near = torch.tensor([0.1, 1.0, 0.5])
    far = torch.tensor([0.9, 3.0, 0.5])
    z = stratified_samples(near, far, 8, perturb=False)
    assert torch.allclose(z[1], torch.linspace(1.0, 3.0, 8))
    torch.manual_seed(0)
    zp = stratified_samples(near.repeat(50), far.repeat(50), 8, perturb=True)
    n, f = near.repeat(50)[:, None], far.repeat(50)[:, None]
    assert bool(((zp >= n - 1e-6) & (zp <= f + 1e-6)).all())
    assert bool((zp[:, 1:] >= zp[:, :-1]).all())
    assert not torch.allclose(zp[:3], z)  # actually jittered
    # each jittered sample stays within its own bin around the unperturbed one
    zr = z.repeat(50, 1)
    mids = 0.5 * (zr[:, 1:] + zr[:, :-1])
    assert bool((zp[:, 1:] >= mids - 1e-6).all() and (zp[:, :-1] <= mids + 1e-6).all())


def test_ellipsoid_radius_crossing():
    o = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    d = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t = ellipsoid_radius_crossing(o, d, torch.tensor([[1.0, 3.0], [1.0, 2.0]]))
    assert t.tolist() == [[0.5, 1.5], [0.5, 1.5]]
