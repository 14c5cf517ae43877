"""The distillation loop: stage schedule, hard views and hard rays, AdamW.

Stages (PVD's, by fraction of the run so a step or a time budget sets them alike):

1. ``progress < feature_stage``: intermediate features (adapted per teacher cell) and the density
   logit as a clamped log-density; the colour decoder is not run.
2. ``progress < sample_stage``: plus per-sample colour.
3. the rest: plus the rendered pixel (foreground composited over the samples plus background),
   which is what evaluation compares.

Each step draws ``views_per_batch`` views, with probability mixing uniform and proportional to the
view's recent error (hard views drawn again more often), takes random rays of their packs, and
adds ``hard_ray_fraction`` of the batch from a pool of the worst rays seen so far (hard rays drawn
again).  All randomness of batch assembly comes from one generator whose state is checkpointed,
and packs are pure functions of their seed (:mod:`.packs`): a run from the cache and a live run
make the same student.
"""
from __future__ import annotations

import math
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from mega_nerf.distillation.losses import (
    FeatureAdapters,
    colour_loss,
    feature_loss,
    log_density_bounds,
    log_density_loss,
    rendered_loss,
    sample_weights,
)
from mega_nerf.distillation.packs import background_rgb, concat_packs, packs_that_fit, take_rays
from mega_nerf.distillation.teacher_cache import TeacherCache
from mega_nerf.errors import UserError
from mega_nerf.fields.base import density_activation, tensor_bytes
from mega_nerf.render.volume import composite_intervals, distortion_loss

LOSSES = ("feature", "density", "colour", "rendered", "distortion")


@dataclass
class DistillSettings:
    steps: int = 2000
    seconds: float | None = None  # time budget: stages and lr follow the clock instead of steps
    batch_rays: int = 4096
    views_per_batch: int = 4
    feature_stage: float = 0.1
    sample_stage: float = 0.3
    lr: float = 1e-2
    lr_final_factor: float = 0.03
    weight_decay: float = 1e-6
    feature_weight: float = 1.0
    density_weight: float = 0.1
    colour_weight: float = 1.0
    distortion_weight: float = 0.0  # Mip-NeRF 360's distortion loss on the student's rendered rays (stage 3)
    feature_decay: float = 0.1  # the feature weight falls by this factor over the run
    hard_view_fraction: float = 0.3
    hard_ray_fraction: float = 0.1
    hard_ray_pool: int = 65536
    bg_samples: int = 16
    seed: int = 0
    log_interval: int = 50
    amp: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def stage_of(progress: float, settings: DistillSettings) -> int:
    if progress < settings.feature_stage:
        return 1
    return 2 if progress < settings.sample_stage else 3


#: Packs kept in memory where neither a count nor a memory budget is known.
DEFAULT_PACKS_IN_MEMORY = 64


class PackSource:
    """Packs of one region by view position: made live by ``make`` or read from a
    :class:`TeacherCache`, and kept in an LRU of ``capacity`` packs.

    With ``capacity`` None it is set from the first pack's size: as many packs as fit in
    ``memory_budget`` bytes.  Keeping every view's pack matters: when a scene has more views than
    the LRU holds, most draws miss and the teacher renders a fresh pack for them, so each step
    costs several teacher renders instead of none."""

    def __init__(self, device, make: Callable[[int], dict] | None = None, cache: TeacherCache | None = None,
                 region: str = "all", capacity: int | None = DEFAULT_PACKS_IN_MEMORY,
                 memory_budget: int | None = None):
        if capacity is None and memory_budget is None:
            raise ValueError("PackSource: give a capacity or a memory budget")
        self.device, self.make, self.cache, self.region, self.capacity = device, make, cache, region, capacity
        self.memory_budget = memory_budget
        self.memory: OrderedDict[int, dict] = OrderedDict()
        self.made = 0  # packs computed or read (not served from memory)
        self.pack_bytes: int | None = None

    def get(self, view: int) -> dict:
        if view in self.memory:
            self.memory.move_to_end(view)
            return self.memory[view]
        if self.make is not None:
            packs = {view: self.make(view)}
        else:
            shard = view // self.cache.shard_size
            packs = {shard * self.cache.shard_size + i: p for i, p in enumerate(self.cache.read_shard(self.region, shard))}
        self.made += 1
        if self.pack_bytes is None:
            self.pack_bytes = max(tensor_bytes(p.values()) for p in packs.values())
            if self.capacity is None:
                self.capacity = packs_that_fit(self.pack_bytes, self.memory_budget)
        for key, pack in packs.items():
            self.memory[key] = {k: v.to(self.device) for k, v in pack.items()}
            self.memory.move_to_end(key)
        while len(self.memory) > max(self.capacity, len(packs)):
            self.memory.popitem(last=False)
        return self.memory[view]


def param_groups(modules: list[torch.nn.Module], weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on tables (hash tables, planes, voxels, embeddings: decay
    would shrink every entry each step, also the ones no sample touched), ``weight_decay`` on
    decoder matrices."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            table = p.dim() != 2 or "embedding" in name or "table" in name or "adapter" in name
            (no_decay if table else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Distiller:
    """Distils one region (the whole scene or some cells) of a teacher into the student.

    Args:
        student: one-cell Container (trained in place).
        source: the region's packs; views: how many packs (views) the region has.
        adapters: per-teacher-cell feature adapters (kept across regions).
        bounds: the scene bounds; max_delta / min_delta: interval range for the density bounds.
    """

    def __init__(self, student, adapters: FeatureAdapters, source: PackSource, views: int, bounds,
                 settings: DistillSettings, device: torch.device, min_delta: float, max_delta: float,
                 writer=None, show_progress: bool = True, label: str = "distil"):
        if views <= 0:
            raise UserError("no view sees the region to distil (the teacher's occupied space is empty there); "
                            "check the container and --cell")
        self.student, self.adapters, self.source, self.bounds = student, adapters, source, bounds
        self.settings, self.device, self.writer = settings, device, writer
        self.min_delta, self.max_delta = min_delta, max_delta
        self.views = views
        self.show_progress, self.label = show_progress, label
        self.optimizer = torch.optim.AdamW(param_groups([student, adapters], settings.weight_decay), lr=settings.lr,
                                           betas=(0.9, 0.99), eps=1e-15)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step_count = 0
        self.elapsed = 0.0
        self.view_error = torch.full((views,), float("nan"))
        self.pool: dict | None = None
        self.pool_size = 0
        self.pool_next = 0
        self.last: dict[str, float] = {}
        self.use_amp = settings.amp and device.type == "cuda"

    # ------------------------------------------------------------ schedule
    def progress(self) -> float:
        s = self.settings
        p = self.step_count / max(s.steps, 1)
        if s.seconds is not None:
            p = self.elapsed / s.seconds
        return min(p, 1.0)

    def lr(self, progress: float) -> float:
        """Cosine from ``lr`` to ``lr * lr_final_factor``."""
        s = self.settings
        final = s.lr * s.lr_final_factor
        return final + 0.5 * (s.lr - final) * (1 + math.cos(math.pi * progress))

    def loss_weights(self, stage: int, progress: float) -> dict[str, float]:
        s = self.settings
        return {"feature": s.feature_weight * s.feature_decay ** progress, "density": s.density_weight,
                "colour": s.colour_weight if stage >= 2 else 0.0, "rendered": 1.0 if stage >= 3 else 0.0,
                "distortion": s.distortion_weight if stage >= 3 else 0.0}

    # ------------------------------------------------------------ batches
    def view_probabilities(self) -> torch.Tensor:
        """(V,) uniform mixed with proportional to each view's error; views not seen yet count as
        the worst seen (so every view is visited early)."""
        err = self.view_error.clone()
        seen = ~torch.isnan(err)
        err[~seen] = float(err[seen].max()) if bool(seen.any()) else 1.0
        uniform = torch.full_like(err, 1.0 / len(err))
        a = self.settings.hard_view_fraction
        return (1 - a) * uniform + a * err / err.sum().clamp_min(1e-12) if float(err.sum()) > 0 else uniform

    def next_batch(self) -> tuple[dict, torch.Tensor]:
        """A batch of rays (pack fields) and (R,) the view of each ray (-1: from the hard-ray pool)."""
        s = self.settings
        hard = int(s.hard_ray_fraction * s.batch_rays) if self.pool_size >= s.batch_rays else 0
        per_view = max((s.batch_rays - hard) // s.views_per_batch, 1)
        views = torch.multinomial(self.view_probabilities(), s.views_per_batch, replacement=True,
                                  generator=self.generator).tolist()
        parts, origin = [], []
        for v in views:
            pack = self.source.get(v)
            n = pack["rays_o"].shape[0]
            index = torch.randint(0, n, (per_view,), generator=self.generator).to(self.device)
            parts.append(take_rays(pack, index))
            origin.append(torch.full((per_view,), v))
        if hard:
            index = torch.randint(0, self.pool_size, (hard,), generator=self.generator).to(self.device)
            parts.append(take_rays(self.pool, index))
            origin.append(torch.full((hard,), -1))
        return concat_packs(parts), torch.cat(origin)

    def remember_hard_rays(self, batch: dict, origin: torch.Tensor, per_ray: torch.Tensor) -> None:
        """The ``hard_ray_fraction`` worst fresh rays of the batch go into the ring-buffer pool."""
        s = self.settings
        fresh = torch.nonzero(origin >= 0).reshape(-1).to(self.device)
        k = min(int(s.hard_ray_fraction * len(fresh)), s.hard_ray_pool)
        if k == 0:
            return
        worst = fresh[per_ray[fresh].topk(k).indices]
        rows = take_rays(batch, worst)
        if self.pool is None:
            self.pool = {key: torch.zeros((s.hard_ray_pool, *v.shape[1:]), dtype=v.dtype, device=v.device)
                         for key, v in rows.items()}
        slots = (self.pool_next + torch.arange(k, device=self.device)) % s.hard_ray_pool
        for key, v in rows.items():
            self.pool[key][slots] = v.detach()
        self.pool_next = (self.pool_next + k) % s.hard_ray_pool
        self.pool_size = min(self.pool_size + k, s.hard_ray_pool)

    def update_view_errors(self, origin: torch.Tensor, per_ray: torch.Tensor) -> None:
        per_ray = per_ray.detach().float().cpu()
        for v in torch.unique(origin[origin >= 0]).tolist():
            e = float(per_ray[origin == v].mean())
            old = float(self.view_error[v])
            self.view_error[v] = e if math.isnan(old) else 0.7 * old + 0.3 * e

    # ------------------------------------------------------------ losses
    def losses(self, batch: dict, stage: int, train: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every loss the stage needs (``stage=3`` gives all four).

        Returns:
            losses by name, and (R,) per-ray errors for hard-ray mining (rendered error from
            stage 3, the ray's mean log-density error before).
        """
        fg = self.student.sub_modules[0]
        valid = batch["valid"]
        R, S = valid.shape
        index = torch.nonzero(valid.reshape(-1)).reshape(-1)
        ray_of = torch.div(index, S, rounding_mode="floor")
        x = (batch["rays_o"][:, None] + batch["rays_d"][:, None] * batch["z"][..., None]).reshape(-1, 3)[index]
        d = batch["rays_d"][ray_of]
        app = batch["appearance"][ray_of]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            h = fg.features(x)
        logit = h[:, 0].float()
        log_student = (logit - 1.0).clamp(max=15.0)  # log of fields.base.density_activation
        log_teacher = batch["t_sigma"].reshape(-1)[index].float().clamp_min(1e-30).log()
        lo, hi = log_density_bounds(batch["deltas"].reshape(-1)[index], self.min_delta, self.max_delta)
        density = log_density_loss(log_student, log_teacher, lo, hi)
        weight = sample_weights(batch["t_weight"].reshape(-1)[index])
        t_feat = batch["t_feat"].reshape(R * S, -1)[index]
        t_cell = batch["t_cell"].reshape(-1)[index]
        out = {"density": density.mean(), "feature": feature_loss(h[:, 1:], t_feat, t_cell, self.adapters, weight)}
        per_ray = torch.zeros(R, device=self.device).index_add(0, ray_of, density.detach())
        per_ray = per_ray / valid.sum(1).clamp_min(1)
        if stage >= 2:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                if getattr(fg, "color_mode", "mlp") == "sh":  # the SH grid has no decoder on the feature
                    sigma, rgb = fg(x, d, app)
                else:
                    sigma, rgb = density_activation(logit), fg.color(h[:, 1:], d, app)
            t_rgb = batch["t_rgb"].reshape(R * S, 3)[index]
            out["colour"] = colour_loss(rgb, t_rgb, weight)
        if stage >= 3:
            sigma_rs = torch.zeros(R * S, device=self.device).index_copy(0, index, sigma.float()).reshape(R, S)
            rgb_rs = torch.zeros(R * S, 3, device=self.device).index_copy(0, index, rgb.float()).reshape(R, S, 3)
            fg_out = composite_intervals(sigma_rs, rgb_rs, batch["z"], batch["deltas"])
            pixel = fg_out["rgb"]
            if self.student.white_background:
                pixel = pixel + fg_out["transmittance"][:, None]
            bg = torch.nonzero(batch["bg"]).reshape(-1)
            if bg.numel() and self.student.has_background:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                    b = background_rgb(self.student, batch["rays_o"][bg], batch["rays_d"][bg],
                                       batch["appearance"][bg], batch["far"][bg], batch["t_exit"][bg], self.bounds,
                                       self.settings.bg_samples, train=train)
                pixel = pixel.index_add(0, bg, fg_out["transmittance"][bg, None] * b.float())
            out["rendered"], per_ray = rendered_loss(pixel, batch["t_pixel"])
            if self.settings.distortion_weight > 0:  # weight together on surfaces: fewer samples to colour
                out["distortion"] = distortion_loss(batch["z"], fg_out["weights"]).mean()
        return out, per_ray

    @torch.no_grad()
    def evaluate(self, batch: dict) -> dict[str, float]:
        """Every loss on a fixed batch, without updating anything (background samples fixed)."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            losses, _ = self.losses(batch, stage=3, train=False)
        return {k: float(v) for k, v in losses.items()}

    # ------------------------------------------------------------ loop
    def finished(self) -> bool:
        return self.progress() >= 1.0

    def step(self) -> dict[str, float]:
        started = time.perf_counter()
        progress = self.progress()
        stage = stage_of(progress, self.settings)
        lr = self.lr(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch, origin = self.next_batch()
        losses, per_ray = self.losses(batch, stage)
        weights = self.loss_weights(stage, progress)
        total = sum(weights[k] * v for k, v in losses.items() if weights[k] > 0)
        if not torch.isfinite(total):
            raise UserError(f"distillation diverged at step {self.step_count} (loss {float(total)}); lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.update_view_errors(origin, per_ray)
        self.remember_hard_rays(batch, origin, per_ray)
        self.step_count += 1
        if self.device.type == "cuda" and self.settings.seconds is not None:
            torch.cuda.synchronize(self.device)
        self.elapsed += time.perf_counter() - started
        self.last = {"stage": stage, "lr": lr, "total": float(total.detach()),
                     **{k: float(v.detach()) for k, v in losses.items()}}
        return self.last

    def log(self) -> None:
        if self.writer is None or not self.last:
            return
        for key, value in self.last.items():
            self.writer.add_scalar(f"{self.label}/{key}", value, self.step_count)
        if "rendered" in self.last:
            self.writer.add_scalar(f"{self.label}/psnr", -10 * math.log10(max(self.last["rendered"], 1e-10)),
                                   self.step_count)

    def run(self, checkpoint: Callable[[Distiller], None] | None = None, ckpt_interval: int = 0) -> dict:
        """Step to the end of the schedule; ``checkpoint(self)`` every ``ckpt_interval`` steps."""
        s = self.settings
        bar = tqdm(total=None if s.seconds is not None else s.steps, initial=self.step_count, desc=self.label,
                   file=sys.stdout, mininterval=2.0, dynamic_ncols=True, disable=not self.show_progress)
        while not self.finished():
            last = self.step()
            bar.update(1)
            if s.log_interval and self.step_count % s.log_interval == 0:
                self.log()
                bar.set_postfix(stage=last["stage"], loss=f"{last['total']:.4f}")
            if checkpoint is not None and ckpt_interval and self.step_count % ckpt_interval == 0:
                checkpoint(self)
        bar.close()
        self.log()
        return {"steps": self.step_count, "seconds": self.elapsed, "final": self.last}

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "step": self.step_count, "elapsed": self.elapsed,
                "generator": self.generator.get_state(), "view_error": self.view_error,
                "pool": None if self.pool is None else {k: v.cpu() for k, v in self.pool.items()},
                "pool_size": self.pool_size, "pool_next": self.pool_next}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count, self.elapsed = state["step"], state["elapsed"]
        self.generator.set_state(state["generator"])
        self.view_error = state["view_error"]
        self.pool = None if state["pool"] is None else {k: v.to(self.device) for k, v in state["pool"].items()}
        self.pool_size, self.pool_next = state["pool_size"], state["pool_next"]
