"""Teacher against student on views the distillation never drew rays from.

With a dataset: its validation images (rendered as ``eval.py`` renders them, same appearance
protocol), scored against each other and against the ground truth.  Without one: held-out
virtual views over the scene, student against teacher only.
"""
from __future__ import annotations

import time

import torch

from mega_nerf.distillation.cameras import Views
from mega_nerf.evaluation.metrics import psnr, ssim
from mega_nerf.evaluation.protocols import appearance_index
from mega_nerf.render.renderer import render_image


def _render_all(model, cameras: list[dict], bounds, sampling, ray_batch: int, device) -> tuple[list, float]:
    """Renders of every camera and the model's rays per second over them."""
    model.to(device)
    images, seconds, rays = [], 0.0, 0
    for cam in cameras:
        started = time.perf_counter()
        rgb, _ = render_image(model, cam["W"], cam["H"], cam["intrinsics"], cam["c2w"], cam["appearance"], bounds,
                              sampling, ray_batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - started
        rays += cam["W"] * cam["H"]
        images.append(rgb)
    model.cpu()  # teacher and student take turns on the device
    return images, rays / max(seconds, 1e-9)


def dataset_cameras(dataset, scale_factor: int, max_images: int, protocol: str) -> list[dict]:
    items = dataset.val[:max_images] if max_images else dataset.val
    out = []
    for item in items:
        m = item.scaled(scale_factor)
        out.append({"W": m.W, "H": m.H, "intrinsics": m.intrinsics, "c2w": m.c2w,
                    "appearance": appearance_index(dataset, item, protocol), "stem": m.stem, "item": m})
    return out


def view_cameras(views: Views) -> list[dict]:
    return [{"W": int(views.wh[v, 0]), "H": int(views.wh[v, 1]), "intrinsics": views.intrinsics[v],
             "c2w": views.c2w[v], "appearance": int(views.appearance[v]), "stem": f"virtual-{v}"}
            for v in range(len(views))]


def compare(teacher, student, cameras: list[dict], bounds, sampling, ray_batch: int, device) -> dict:
    """PSNR/SSIM of the student against the teacher (and of both against the ground truth when
    the cameras are dataset images), render speed of both."""
    t_images, t_speed = _render_all(teacher, cameras, bounds, sampling, ray_batch, device)
    s_images, s_speed = _render_all(student, cameras, bounds, sampling, ray_batch, device)
    per_image = []
    for cam, t, s in zip(cameras, t_images, s_images):
        row = {"stem": cam["stem"], "student_vs_teacher_psnr": psnr(s, t), "student_vs_teacher_ssim": ssim(s, t)}
        if "item" in cam:
            gt = cam["item"].load_image().float() / 255
            row.update({"teacher_psnr": psnr(t, gt), "student_psnr": psnr(s, gt),
                        "teacher_ssim": ssim(t, gt), "student_ssim": ssim(s, gt)})
        per_image.append(row)

    def mean(key: str):
        values = [r[key] for r in per_image if key in r]
        return sum(values) / len(values) if values else None

    return {"images": len(per_image),
            **{k: mean(k) for k in ("student_vs_teacher_psnr", "student_vs_teacher_ssim", "teacher_psnr",
                                    "student_psnr", "teacher_ssim", "student_ssim")},
            "teacher_rays_per_second": t_speed, "student_rays_per_second": s_speed, "per_image": per_image}
