"""bench/distill.py's verdicts against issue 6's target (a pure function of the rows)."""
from __future__ import annotations

import pytest

from bench.distill import hash_verdicts


def _row(psnr: float, parameters: int, speed: float, kind: str | None = None) -> dict:
    return {"psnr": psnr, "parameters": parameters, "rays_per_second": speed / 4, "speed_rays_per_second": speed,
            **({"kind": kind} if kind else {})}


def test_every_hash_student_row_is_judged_against_the_teacher_rendered_alike():
    rows = {"teacher": _row(23.75, 50_000_000, 0.93e6), "teacher@s64": _row(23.35, 50_000_000, 1.24e6),
            "hash_d": _row(23.73, 6_700_000, 3.27e6, "hash"), "hash_d@s64": _row(23.87, 6_700_000, 2.65e6, "hash"),
            "fast_but_blurry": _row(23.0, 6_700_000, 4.0e6, "hash"), "vm": _row(23.1, 9_000_000, 2.0e6, "vm")}
    verdicts = hash_verdicts(rows)
    assert set(verdicts) == {"hash_d", "hash_d@s64", "fast_but_blurry"}  # any name, hash kind only
    assert verdicts["hash_d"]["against"] == "teacher" and verdicts["hash_d@s64"]["against"] == "teacher@s64"
    assert verdicts["hash_d"]["speedup"] == pytest.approx(3.27 / 0.93)
    assert verdicts["hash_d"]["psnr_drop_db"] == pytest.approx(0.02)
    assert verdicts["hash_d"]["parameter_ratio"] == pytest.approx(0.134)
    assert verdicts["hash_d"]["met"]
    assert not verdicts["hash_d@s64"]["met"]  # 2.14x: too slow against the container at 64 samples
    assert not verdicts["fast_but_blurry"]["met"]  # 0.75 dB below the teacher
