#!/usr/bin/env python
"""Run the demo pipeline (scripts/demo.sh) and record its numbers in bench/results/demo.json."""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    demo_dir = Path(tempfile.mkdtemp(prefix="mega_nerf_demo_")) / "demo"
    env = {**os.environ, "DEMO_DIR": str(demo_dir), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.time()
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - started
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        print(log[-5000:])
        sys.exit(proc.returncode)
    stages = {m.group(2): int(m.group(1)) for m in re.finditer(r"=== \[(\d+)s\] (\d/\d)", log)}
    metrics = json.loads((demo_dir / "eval" / "metrics.json").read_text())
    cells = sorted(demo_dir.glob("exp/cell-*/train_summary.json"))
    summaries = [json.loads(p.read_text()) for p in cells]
    result = {
        "name": "demo", "command": "python bench/demo.py (runs scripts/demo.sh, as make demo does)",
        "device": f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "wall_seconds": wall, "stage_start_seconds": stages,
        "val_protocol": metrics["protocol"], "val_images": metrics["images"],
        "psnr": metrics["psnr"], "ssim": metrics["ssim"], "lpips_status": metrics["lpips_status"],
        "eval_rays_per_second": metrics["rays_per_second"],
        "cells": [{"cell": s["cell"], "iterations": s["iterations"], "seconds": s["seconds"],
                   "training_rays": s["training_rays"], "chunk_bytes_per_ray": s["chunk_bytes_per_ray"],
                   "final_train_psnr": s["final_train_psnr"]} for s in summaries],
    }
    out = REPO / "bench" / "results" / "demo.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'quantity':<28}{'value':>14}")
    print(f"{'wall time (s)':<28}{wall:>14.1f}")
    print(f"{'val PSNR (dB)':<28}{metrics['psnr']['mean']:>14.2f}")
    print(f"{'val SSIM':<28}{metrics['ssim']['mean']:>14.4f}")
    for s in summaries:
        print(f"{'cell %d bytes/ray' % s['cell']:<28}{s['chunk_bytes_per_ray']:>14.2f}")
    print(f"wrote {out}")
    shutil.rmtree(demo_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
