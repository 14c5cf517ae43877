"""Shared by the benchmark scripts: running a stage as a subprocess, recording a result file."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def run_logged(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``cmd`` from the repository root, appending its output to ``log``; seconds taken."""
    started = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        print(log.read_text()[-4000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.time() - started


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn`` (device-synchronised)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def log_path(name: str, work: Path) -> Path:
    """On the device machine the log goes to $OUT so it comes back even if the bench fails."""
    return Path(os.environ["OUT"]) / f"{name}.log" if os.environ.get("OUT") else work / "log.txt"


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}


def write_result(name: str, result: dict, results_dir: Path | None = None) -> None:
    """bench/results/<name>.json (or ``results_dir``/<name>.json), and $OUT/<name>.json on the device machine."""
    targets = [Path(results_dir or REPO / "bench" / "results") / f"{name}.json"]
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / f"{name}.json")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2) + "\n")


def write_bench_config(dataset: Path, work: Path, bench_settings: str) -> Path:
    """``work/config.yaml``: the dataset's config.yaml (its scene options) with
    ``configs/bench/<bench_settings>`` on top."""
    config = yaml.safe_load((Path(dataset) / "config.yaml").read_text()) or {}
    config.update(yaml.safe_load((REPO / "configs" / "bench" / bench_settings).read_text()))
    path = Path(work) / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
