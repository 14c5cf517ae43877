"""Triton kernels for the multi-resolution hash encoding (forward and backward).

They compute exactly what :meth:`HashGridEncoding.reference_forward` computes (same corner
indices, same weights, float32 accumulation), but in one pass per block of points instead of
materialising ``(N, levels, 8)`` index and weight tensors:

* forward: per point and level, gather the 8 corner feature vectors and blend them trilinearly;
* backward: scatter ``weight * grad`` into the table with atomic adds (the table gradient is
  dense, as Adam expects).

The gradient with respect to the input points is not computed (positions are data, not
parameters); :class:`HashGridEncoding` falls back to the reference path when it is needed.
The kernels also run under ``TRITON_INTERPRET=1`` on CPU tensors, which is how the tests check
them without a GPU.
"""
from __future__ import annotations

import contextlib

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # an optional accelerator: the pure-PyTorch path is always available
    triton = None


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _corner_index(cx, cy, cz, res1, size, dense):
        """Flat table index of integer corners (int64) of one level."""
        dense_index = cx + cy * res1 + cz * res1 * res1
        hashed = (cx * 1) ^ (cy * 2654435761) ^ (cz * 805459861)
        return tl.where(dense, dense_index, hashed) % size

    @triton.jit
    def _unit_points(x_ptr, rows, mask):
        """The block's points, clamped to the unit cube: three (BLOCK,) float32 coordinates."""
        px = tl.minimum(tl.maximum(tl.load(x_ptr + rows * 3 + 0, mask=mask, other=0.0), 0.0), 1.0)
        py = tl.minimum(tl.maximum(tl.load(x_ptr + rows * 3 + 1, mask=mask, other=0.0), 0.0), 1.0)
        pz = tl.minimum(tl.maximum(tl.load(x_ptr + rows * 3 + 2, mask=mask, other=0.0), 0.0), 1.0)
        return px, py, pz

    @triton.jit
    def _level_corners(px, py, pz, res_ptr, offset_ptr, size_ptr, dense_ptr, level):
        """Per level: lower integer corner, fractional position and how to index the table."""
        res = tl.load(res_ptr + level)
        resf = res.to(tl.float32)
        sx, sy, sz = px * resf, py * resf, pz * resf
        fx, fy, fz = tl.floor(sx), tl.floor(sy), tl.floor(sz)
        return (fx.to(tl.int64), fy.to(tl.int64), fz.to(tl.int64), sx - fx, sy - fy, sz - fz, res + 1,
                tl.load(offset_ptr + level), tl.load(size_ptr + level), tl.load(dense_ptr + level) != 0)

    @triton.jit
    def _corner(bx, by, bz, tx, ty, tz, res1, offset, size, dense, corner: tl.constexpr):
        """Trilinear weight and table row of one of the 8 corners."""
        ox, oy, oz = corner // 4, (corner // 2) % 2, corner % 2
        w = (tx if ox else 1 - tx) * (ty if oy else 1 - ty) * (tz if oz else 1 - tz)
        return w, _corner_index(bx + ox, by + oy, bz + oz, res1, size, dense) + offset

    @triton.jit
    def _hash_encode_fwd(x_ptr, table_ptr, out_ptr, res_ptr, offset_ptr, size_ptr, dense_ptr, n,
                         LEVELS: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = rows < n
        feats = tl.arange(0, F)
        px, py, pz = _unit_points(x_ptr, rows, mask)
        out_rows = out_ptr + rows.to(tl.int64)[:, None] * (LEVELS * F) + feats[None, :]
        for level in tl.static_range(LEVELS):
            bx, by, bz, tx, ty, tz, res1, offset, size, dense = _level_corners(
                px, py, pz, res_ptr, offset_ptr, size_ptr, dense_ptr, level)
            acc = tl.zeros((BLOCK, F), dtype=tl.float32)
            for corner in tl.static_range(8):
                w, index = _corner(bx, by, bz, tx, ty, tz, res1, offset, size, dense, corner)
                values = tl.load(table_ptr + index[:, None] * F + feats[None, :], mask=mask[:, None], other=0.0)
                acc += w[:, None] * values.to(tl.float32)
            tl.store(out_rows + level * F, acc, mask=mask[:, None])

    @triton.jit
    def _hash_encode_bwd(x_ptr, grad_out_ptr, grad_table_ptr, res_ptr, offset_ptr, size_ptr, dense_ptr, n,
                         LEVELS: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
        level = tl.program_id(1)
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = rows < n
        feats = tl.arange(0, F)
        px, py, pz = _unit_points(x_ptr, rows, mask)
        bx, by, bz, tx, ty, tz, res1, offset, size, dense = _level_corners(
            px, py, pz, res_ptr, offset_ptr, size_ptr, dense_ptr, level)
        grad = tl.load(grad_out_ptr + rows.to(tl.int64)[:, None] * (LEVELS * F) + level * F + feats[None, :],
                       mask=mask[:, None], other=0.0).to(tl.float32)
        for corner in tl.static_range(8):
            w, index = _corner(bx, by, bz, tx, ty, tz, res1, offset, size, dense, corner)
            tl.atomic_add(grad_table_ptr + index[:, None] * F + feats[None, :], w[:, None] * grad,
                          mask=mask[:, None], sem="relaxed")


_BLOCK = 128


def _on_device_of(x: torch.Tensor):
    """Triton launches on the current CUDA device, not the tensors' one: make them agree (a rank
    whose tensors are not on GPU 0).  A no-op for the CPU interpreter used by the tests."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, resolutions, offsets, sizes, dense):
        n, levels, features = x.shape[0], resolutions.shape[0], table.shape[1]
        out = torch.empty(n, levels * features, device=x.device, dtype=torch.float32)
        if n > 0:
            with _on_device_of(x):
                _hash_encode_fwd[(triton.cdiv(n, _BLOCK),)](
                    x, table, out, resolutions, offsets, sizes, dense, n, LEVELS=levels, F=features, BLOCK=_BLOCK)
        ctx.save_for_backward(x, resolutions, offsets, sizes, dense)
        ctx.table_shape, ctx.table_dtype = table.shape, table.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, resolutions, offsets, sizes, dense = ctx.saved_tensors
        n, levels = x.shape[0], resolutions.shape[0]
        grad_table = torch.zeros(ctx.table_shape, device=x.device, dtype=torch.float32)
        if n > 0:
            with _on_device_of(x):
                _hash_encode_bwd[(triton.cdiv(n, _BLOCK), levels)](
                    x, grad_out.contiguous(), grad_table, resolutions, offsets, sizes, dense, n,
                    LEVELS=levels, F=ctx.table_shape[1], BLOCK=_BLOCK)
        return None, grad_table.to(ctx.table_dtype), None, None, None, None


def hash_encode(x: torch.Tensor, table: torch.Tensor, resolutions: torch.Tensor, offsets: torch.Tensor,
                sizes: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Hash-grid features of points with the Triton kernels.

    Args:
        x: (N, 3) float32 points in [0, 1]^3 (clamped); table: (T, F) embeddings, F a power of two;
        resolutions, offsets, sizes: (L,) int64 per-level grid resolution, first table row and
        row count; dense: (L,) int8, 1 where the level is indexed densely.
    Returns:
        (N, L * F) float32 features (gradient flows to ``table`` only).
    """
    return _HashEncode.apply(x.float().contiguous(), table, resolutions, offsets, sizes, dense)
