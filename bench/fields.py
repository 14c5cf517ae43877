#!/usr/bin/env python
"""Per field backend: training throughput (samples/s for forward, backward and Adam step), render
throughput (rays/s through the real renderer), peak GPU memory and parameter count.

    python bench/fields.py [--points 1048576] [--compile]

The hash backend is timed with the Triton kernels (when Triton and CUDA are present) and with the
pure-PyTorch reference encoding; before timing, the kernels are checked against the reference on
the benchmark's own table and points (relative error of features and table gradients).

Writes bench/results/fields.json (and $OUT/fields.json on the device machine).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import timed, versions, write_result  # noqa: E402
from mega_nerf.fields import hash_kernels  # noqa: E402
from mega_nerf.fields.model import build_foreground  # noqa: E402
from mega_nerf.geometry.bounds import SceneBounds  # noqa: E402
from mega_nerf.render.renderer import SamplingConfig, render_rays  # noqa: E402

# PVD's sizes (../shared/reference/fields_and_distillation.md §1.2), Mega-NeRF's MLP.
SIZES = {
    "hash": {"hash_levels": 16, "hash_features": 2, "hash_log2_size": 19, "hash_base_resolution": 16,
             "hash_max_resolution": 2048},
    "vm": {"vm_resolution": 300, "vm_density_rank": 16, "vm_appearance_rank": 48},
    "grid": {"grid_resolution": 128, "grid_color": "mlp"},
    "mlp": {"pos_xyz_dim": 12, "mlp_layers": 8, "mlp_width": 256, "mlp_skip": 4},
}


def model_config(kind: str) -> dict:
    return {"model_type": kind, "appearance_dim": 48, "appearance_count": 1000, "bg_nerf": False, "layer_dim": 64,
            "bg_layer_dim": 64, "geo_feat_dim": 15, "pos_dir_dim": 4, "aabb": [[-1, -1, -1], [1, 1, 1]],
            **SIZES[kind]}


class _Wrapper(torch.nn.Module):
    """The renderer's model interface around one field (no background)."""

    has_background = False

    def __init__(self, field):
        super().__init__()
        self.fg = field

    def density(self, x):
        return self.fg.density(x)

    def foreground(self, x, d, a):
        return self.fg(x, d, a)


def check_hash_kernels(points: int, device: torch.device) -> dict:
    """Triton kernels against the reference encoding on the bench's hash grid: max relative error."""
    torch.manual_seed(0)
    enc = build_foreground(model_config("hash")).encoding.to(device)
    enc.embeddings.data.uniform_(-1, 1)
    x = torch.rand(points, 3, device=device)
    ref = enc.reference_forward(x)
    out = hash_kernels.hash_encode(x, enc.embeddings, enc.resolutions, enc.level_offsets, enc.level_sizes,
                                   enc.dense_i8)
    g = torch.randn_like(ref)
    grad_ref, = torch.autograd.grad(ref, enc.embeddings, g)
    grad_out, = torch.autograd.grad(out, enc.embeddings, g)
    return {"points": points,
            "forward_max_rel_error": float((out - ref).abs().max() / ref.abs().max()),
            "backward_max_rel_error": float((grad_out - grad_ref).abs().max() / grad_ref.abs().max()),
            "backward_rms_rel_error": float((grad_out - grad_ref).norm() / grad_ref.norm())}


def profile_step(step, device: torch.device, rows: int = 15) -> list[dict]:
    """The kernels that take the most device time over three training steps."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    attr = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, "self_" + attr, 0) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, "self_" + attr, 0), reverse=True)
    return [{"name": e.key[:90], "self_ms_per_step": getattr(e, "self_" + attr) / 3e3,
             "share": getattr(e, "self_" + attr) / total} for e in events[:rows]]


def bench_backend(kind: str, points: int, rays: int, device: torch.device, compile_field: bool, repeats: int,
                  kernel: str = "torch", profile_rows: bool = False) -> dict:
    torch.manual_seed(0)
    field = build_foreground(model_config(kind)).to(device)
    if kind == "hash":
        field.encoding.use_triton = kernel == "triton"
    params = field.parameter_count()
    opt = torch.optim.Adam(field.parameters(), lr=1e-3, eps=1e-15, fused=device.type == "cuda")
    run = torch.compile(field) if compile_field else field
    x = torch.rand(points, 3, device=device) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(points, 3, device=device), dim=-1)
    a = torch.randint(0, 1000, (points,), device=device)
    amp = device.type == "cuda"

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            sigma, rgb = run(x, d, a)
        loss = sigma.mean() + rgb.float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_s = timed(train_step, repeats)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    profile = profile_step(train_step, device) if profile_rows else None

    bounds = SceneBounds(origin_drb=[0, 0, 0], pose_scale_factor=1.0, near=0.05, far=None, altitude_range=[-0.5, 0.8],
                         center=[0, 0, 0], radius=[1, 1, 1])
    rays_o = torch.zeros(rays, 3, device=device)
    rays_o[:, 0] = -0.9
    rays_o[:, 1:] = (torch.rand(rays, 2, device=device) - 0.5) * 0.6
    rays_d = torch.nn.functional.normalize(
        torch.cat([torch.ones(rays, 1, device=device), 0.5 * torch.randn(rays, 2, device=device)], -1), dim=-1)
    app = torch.zeros(rays, dtype=torch.long, device=device)
    model = _Wrapper(field).eval()

    @torch.no_grad()
    def render():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            render_rays(model, rays_o, rays_d, app, bounds, SamplingConfig(64, 64, 0), train=False)

    render_s = timed(render, repeats)
    return {"backend": kind, "kernel": kernel, "compiled": compile_field, "parameters": params,
            "train_samples_per_second": points / train_s, "train_step_ms": train_s * 1e3,
            "render_rays_per_second": rays / render_s, "render_samples_per_ray": 64 + 64,
            "peak_train_memory_gib": None if peak is None else peak / 2 ** 30, "profile": profile}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=2 ** 20, help="samples per training step")
    p.add_argument("--rays", type=int, default=16384, help="rays per render call")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd fields")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--backends", nargs="+", default=list(SIZES))
    p.add_argument("--profile", action="store_true", help="record the top kernels of each training step")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_triton = device.type == "cuda" and hash_kernels.available()
    kernel_check = check_hash_kernels(args.points, device) if use_triton else None
    if kernel_check:
        print(json.dumps({"hash_kernel_check": kernel_check}), flush=True)
    rows = []
    for kind in args.backends:
        kernels = (["triton", "torch"] if use_triton else ["torch"]) if kind == "hash" else ["torch"]
        for kernel in kernels:
            for compiled in ([False, True] if args.compile else [False]):
                try:
                    rows.append(bench_backend(kind, args.points, args.rays, device, compiled, args.repeats, kernel,
                                              args.profile))
                except Exception as e:  # record the failure, keep measuring the others
                    rows.append({"backend": kind, "kernel": kernel, "compiled": compiled,
                                 "error": f"{type(e).__name__}: {e}"[:500]})
                print(json.dumps(rows[-1]), flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    result = {"name": "fields", "command": " ".join(["python", *sys.argv]),
              "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
              "versions": versions(),
              "points_per_step": args.points, "rays_per_render": args.rays,
              "hash_kernel_check": kernel_check, "rows": rows}
    write_result("fields", result)
    print(f"\n{'backend':<8}{'kernel':>7}{'compiled':>9}{'params':>12}{'train Msamples/s':>18}{'render krays/s':>16}{'peak GiB':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:<8}{r['kernel']:>7}{str(r['compiled']):>9}  error: {r['error'][:80]}")
            continue
        mem = "-" if r["peak_train_memory_gib"] is None else f"{r['peak_train_memory_gib']:.2f}"
        print(f"{r['backend']:<8}{r['kernel']:>7}{str(r['compiled']):>9}{r['parameters']:>12,}{r['train_samples_per_second'] / 1e6:>18.1f}"
              f"{r['render_rays_per_second'] / 1e3:>16.1f}{mem:>10}")


if __name__ == "__main__":
    main()
