"""Train one cell's submodule (or one model on the whole scene) from streamed ray chunks."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from mega_nerf.data.chunks import ChunkStream, open_chunks, write_chunks
from mega_nerf.data.format import PosedDataset, load_dataset
from mega_nerf.distributed import process_device
from mega_nerf.distributed.data_parallel import CellGroup
from mega_nerf.errors import UserError, require
from mega_nerf.evaluation.images import colorize_depth, side_by_side
from mega_nerf.evaluation.metrics import psnr
from mega_nerf.evaluation.protocols import appearance_index
from mega_nerf.fields.model import SceneModel, model_config_from_args
from mega_nerf.geometry.bounds import SceneBounds, check_cameras_inside, scene_bounds_from_args
from mega_nerf.io_utils import atomic_torch_save, atomic_write_json, atomic_write_text
from mega_nerf.render.renderer import SamplingConfig, render_image, render_rays
from mega_nerf.render.volume import distortion_loss
from mega_nerf.training import cell_lock
from mega_nerf.training.cells import HPARAMS, format_hparams, unreached_cells
from mega_nerf.training.coarse_to_fine import hash_encodings, set_coarse_to_fine
from mega_nerf.training.depth_supervision import DepthObservations, depth_loss
from mega_nerf.training.neighbor_agreement import (
    BlendingModel,
    NeighborAgreement,
    RecordingModel,
    neighbor_prefix,
)
from mega_nerf.training.ray_data import RayTable, pixel_selector

CHECKPOINT_DIR = "models"
#: Learning rates that train each backend well (Instant-NGP, TensoRF, Plenoxels-like, Mega-NeRF).
DEFAULT_LR = {"hash": 1e-2, "vm": 2e-2, "grid": 5e-2, "mlp": 5e-4}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def time_checkpoint_path(exp_dir: Path, seconds: float) -> Path:
    """Where ``--checkpoint_at_seconds`` puts the checkpoint of a mark: ``models/t<seconds>.pt``."""
    return exp_dir / CHECKPOINT_DIR / f"t{seconds:g}.pt"


class TrainingClock:
    """Wall time of the training loop only: paused around chunk writing, validation and saving."""

    def __init__(self, elapsed: float = 0.0):
        self.before = elapsed
        self.started: Optional[float] = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        if self.started is not None:
            self.before += time.perf_counter() - self.started
            self.started = None

    @property
    def seconds(self) -> float:
        return self.before + (0.0 if self.started is None else time.perf_counter() - self.started)

    @contextlib.contextmanager
    def paused(self):
        running = self.started is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()


def checkpoints(exp_dir: Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every complete checkpoint, oldest first (not the time marks)."""
    folder = exp_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(p.stem), p) for p in folder.glob("*.pt") if p.stem.isdigit()]
    return sorted(found)


def load_cell_params(mask_path: Path) -> tuple[Path, int, dict]:
    """``(mask root, cell index, params)`` for ``--cluster_mask_path MASKS/<cell>``."""
    require(mask_path.is_dir(), f"--cluster_mask_path {mask_path}: folder does not exist; create masks with "
                                f"scripts/create_cluster_masks.py")
    require(mask_path.name.isdigit(), f"--cluster_mask_path {mask_path}: must be MASKS/<cell index>")
    params_path = mask_path.parent / "params.pt"
    require(params_path.exists(), f"{params_path}: missing; the mask run did not finish (rerun it with --resume)")
    params = torch.load(params_path, map_location="cpu", weights_only=False)
    cell = int(mask_path.name)
    require(cell < len(params["centroids"]), f"--cluster_mask_path {mask_path}: cell {cell} does not exist "
                                             f"(the grid has {len(params['centroids'])} cells)")
    counts = params.get("cell_pixel_counts")
    if counts is not None and int(counts[cell]) == 0:
        raise UserError(f"cell {cell} is reached by no ray (see {params_path}); skip it")
    return mask_path.parent, cell, params


def check_params_match(params: dict, bounds: SceneBounds, where: Path) -> None:
    """Masks and training must agree on the frame and bounds (Mega-NeRF asserts the same)."""
    same = (math.isclose(params["pose_scale_factor"], bounds.pose_scale_factor, rel_tol=1e-6)
            and torch.allclose(torch.as_tensor(params["origin_drb"]).float(), torch.tensor(bounds.origin_drb)))
    if params["ray_altitude_range"] is not None and bounds.altitude_range is not None:
        same &= bool(np.allclose(params["ray_altitude_range"], bounds.altitude_range, atol=1e-6))
    same &= math.isclose(params["near"], bounds.near, rel_tol=1e-6)
    box = params.get("foreground_box")
    same &= (box is not None) == bounds.box
    if box is not None and bounds.box:
        same &= torch.allclose(box.float(), torch.tensor([bounds.center, bounds.radius]), atol=1e-6)
    ellipsoid = params.get("foreground_ellipsoid")
    same &= (ellipsoid is not None) == (bounds.field_box is not None)
    if ellipsoid is not None and bounds.field_box is not None:
        same &= torch.allclose(ellipsoid.float(), torch.tensor([bounds.center, bounds.radius]), atol=1e-6)
    require(same, f"{where}: masks were made with another dataset frame or near/altitude/foreground_bounds/"
                  f"ellipse_footprint settings; use the same config for create_cluster_masks.py and train.py")


class Trainer:
    """Trains one cell (or the whole scene) in this process, or, with ``group``, together with the
    other ranks of a data-parallel group (see :mod:`mega_nerf.distributed.data_parallel`): then
    only the group's leader writes chunks, checkpoints, logs and the summary."""

    def __init__(self, args: argparse.Namespace, group: Optional[CellGroup] = None, refine_iterations: int = 0,
                 refine_blend: bool = True):
        """``refine_iterations`` > 0: seam refinement of a trained cell (:mod:`.seam_refine`): this many
        more iterations at the schedule's final values (lr, coarse-to-fine levels, depth weight), with
        its rays rendered through the blend with every trained neighbour (``refine_blend``; False
        continues the cell alone, the fair control of a benchmark)."""
        self.args = args
        self.group = group
        require(refine_iterations >= 0, f"seam refinement iterations must be >= 0, got {refine_iterations}")
        self.refine_iterations = refine_iterations
        self.refine_blend = refine_blend and refine_iterations > 0
        self.refine_from: Optional[int] = None  # the iteration the trained cell's refinement started at
        self.leader = group is None or group.is_leader
        self.show_progress = True  # the per-step progress bar (the leader's only)
        require(group is None or args.train_seconds is None,
                "--train_seconds is not supported with several GPUs per cell; train for --train_iterations")
        require(group is None or args.batch_size % group.size == 0,
                f"--batch_size {args.batch_size} must be a multiple of the GPUs per cell ({group and group.size})")
        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        self.device = process_device(args.device)
        self.exp_dir = Path(args.exp_name)
        self.dataset: PosedDataset = load_dataset(Path(args.dataset_path), args.train_every)
        self.bounds = scene_bounds_from_args(self.dataset, args, require_altitude_range=args.ellipse_bounds)
        check_cameras_inside(self.dataset.camera_positions, self.bounds, str(Path(args.dataset_path)))
        self.mask_root, self.cell, params = None, None, None
        if args.cluster_mask_path:
            self.mask_root, self.cell, params = load_cell_params(Path(args.cluster_mask_path))
            check_params_match(params, self.bounds, Path(args.cluster_mask_path).parent / "params.pt")
        self.sampling = SamplingConfig.from_args(args)
        self.items = [m.scaled(args.train_scale_factor) for m in self.dataset.items]
        self.model_config = model_config_from_args(args, self.bounds, len(self.items))
        seed_everything(args.random_seed)  # the same seed gives the same initial weights
        self.model = SceneModel(self.model_config).to(self.device)
        if group is not None:
            group.broadcast_module(self.model)  # the same seed gives the same weights; this makes sure
        self.use_amp = args.amp and self.device.type == "cuda"
        self.lr = args.lr if args.lr is not None else DEFAULT_LR[args.model_type]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=(0.9, 0.99), eps=1e-15,
                                          fused=self.device.type == "cuda")
        self.iteration = 0
        self.clock = TrainingClock()
        self.time_marks: list[dict] = []  # checkpoints saved at --checkpoint_at_seconds marks
        self.stream_state: Optional[dict] = None
        # Density at which one candidate step is as opaque as --occupancy_alpha_threshold.
        aabb = torch.tensor(self.model_config["aabb"])
        step = float((aabb[1] - aabb[0]).norm()) / args.occupancy_candidates
        self.occupancy_threshold = -math.log(1 - args.occupancy_alpha_threshold) / step
        self.agreement = self._neighbor_agreement(params)
        self.agreement_parts: dict = {}
        self.depth = self._depth_observations()
        self.depth_parts: dict = {}
        self.regularizer_parts: dict = {}
        if args.coarse_to_fine > 0 and not hash_encodings(self.model):
            raise UserError(f"--coarse_to_fine switches hash grid levels on one after another; --model_type "
                            f"{args.model_type} has no hash grid (use hash, or leave --coarse_to_fine at 0)")

    def _depth_observations(self) -> DepthObservations | None:
        """``--depth_loss_weight``: the sparse depth observations of the pixels this run trains on."""
        args = self.args
        if not getattr(args, "depth_loss_weight", 0.0):
            return None
        depth = DepthObservations.load(Path(args.dataset_path), self.items, self.pixel_selector(),
                                       args.center_pixels, self.device)
        if len(depth) == 0:
            print(f"{self.exp_dir}: no sparse depth observation falls in this run's pixels; training without "
                  f"the depth loss", flush=True)
            return None
        if self.leader:
            print(f"depth supervision: {len(depth)} observed pixels, weight {args.depth_loss_weight:g}", flush=True)
        return depth

    def _depth_weight(self) -> float:
        """``--depth_loss_weight`` decayed by ``--depth_loss_decay`` on the lr schedule's progress."""
        return self.args.depth_loss_weight * self.args.depth_loss_decay ** self._schedule_progress(self.iteration)

    def _neighbor_agreement(self, params: dict | None) -> NeighborAgreement | None:
        """``--neighbor_agreement`` / ``--agreement_blend``: the neighbours finished by now (see
        :mod:`.neighbor_agreement`)."""
        args = self.args
        blend = bool(getattr(args, "agreement_blend", False)) or self.refine_blend
        if self.refine_iterations:  # refinement: the blend only (no pull toward neighbours, no alignment)
            weight, appearance = 0.0, 0.0
        else:
            weight, appearance = getattr(args, "neighbor_agreement", 0.0), getattr(args, "agreement_appearance", 0.0)
        if not weight and not blend:
            return None
        option = ("seam refinement" if self.refine_blend else "--agreement_blend" if blend
                  else "--neighbor_agreement")
        require(self.cell is not None, f"{option} needs --cluster_mask_path (it trains one cell of a "
                                       f"grid against its neighbours)")
        # Below this density even a ray across the whole field box is more transparent than
        # --occupancy_alpha_threshold: both cells calling a sample empty below it is agreement.
        floor = self.occupancy_threshold / args.occupancy_candidates
        return NeighborAgreement(
            self.cell, params["centroids"], neighbor_prefix(self.exp_dir, self.cell, args.agreement_prefix),
            args.agreement_margin or args.boundary_margin, bool(params.get("cluster_2d", args.cluster_2d)),
            weight, appearance, floor, self.bounds.to_dict(),
            self.device, skip=tuple(unreached_cells(params)), blend=blend, tapered=args.blend_weights == "tapered")

    @property
    def agreeing(self) -> bool:
        """Whether the agreement terms are on: the option is set and some neighbour is trained."""
        return self.agreement is not None and self.agreement.active

    # ------------------------------------------------------------------ data
    def _chunk_settings(self) -> dict:
        return {"images": len(self.items), "scale_factor": self.args.train_scale_factor,
                "cluster_mask_path": None if self.mask_root is None else str(Path(self.args.cluster_mask_path).resolve()),
                "val_protocol": self.args.val_protocol, "all_val": self.args.all_val,
                "train_every": self.args.train_every,
                "dataset_path": str(Path(self.args.dataset_path).resolve())}

    def pixel_selector(self):
        """image -> flat bool of the pixels this run trains on (its chunks' rays; the depth
        observations it may use)."""
        full_sizes = {m.stem: (m.H, m.W) for m in self.dataset.items}
        return pixel_selector(self.mask_root, self.cell, self.args.val_protocol, self.args.all_val, full_sizes)

    def prepare_chunks(self):
        paths = [Path(p) for p in (self.args.chunk_paths or [self.exp_dir / "chunks"])]
        settings = self._chunk_settings()
        chunks = open_chunks(paths, settings)
        if chunks is None:
            print(f"writing ray chunks to {', '.join(map(str, paths))}", flush=True)
            chunks = write_chunks(paths, self.items, self.pixel_selector(), self.args.num_chunks,
                                  self.args.disk_flush_size, self.args.random_seed, settings)
        print(f"{chunks.num_rays} training rays in {len(chunks.files)} chunks, "
              f"{chunks.bytes_on_disk / max(chunks.num_rays, 1):.2f} bytes per ray on disk", flush=True)
        return chunks

    def prepare_group_chunks(self):
        """:meth:`prepare_chunks` on the group's leader; the other ranks open what it wrote."""
        if self.group is None:
            return self.prepare_chunks()
        error = None
        if self.group.is_leader:
            try:
                self.prepare_chunks()
            except UserError as e:
                error = str(e)
        error = self.group.broadcast_object(error)
        if error is not None:
            raise UserError(error)
        paths = [Path(p) for p in (self.args.chunk_paths or [self.exp_dir / "chunks"])]
        chunks = open_chunks(paths, self._chunk_settings())
        require(chunks is not None, f"{paths[0]}: the group leader's chunks are not visible here; the "
                                    f"experiment and chunk folders must be on a filesystem every node shares")
        return chunks

    # ------------------------------------------------------------- checkpoints
    def _write_checkpoint(self, path: Path, resumable: bool = True) -> None:
        state = {"iteration": self.iteration, "elapsed_seconds": self.clock.seconds,
                 "model_config": self.model_config, "bounds": self.bounds.to_dict(), "cell": self.cell,
                 "model_state_dict": self.model.state_dict(), "time_marks": self.time_marks}
        if self.agreement is not None:
            state["agreement"] = self.agreement.record()
        if self.refine_from is not None:
            state["seam_refine"] = self.refine_record()
        if resumable:
            state.update({
                "optimizer": self.optimizer.state_dict(), "stream_state": self.stream_state,
                "torch_random_state": torch.get_rng_state(), "np_random_state": np.random.get_state(),
                "random_state": random.getstate()})
        atomic_torch_save(state, path)

    def save_time_checkpoint(self, mark: float) -> Path:
        """``models/t<mark>.pt`` for a ``--checkpoint_at_seconds`` mark (never rotated away): the model
        only (for evaluation and merging), without the optimizer state that resuming needs."""
        path = time_checkpoint_path(self.exp_dir, mark)
        self.time_marks.append({"mark_seconds": mark, "elapsed_seconds": self.clock.seconds,
                                "iteration": self.iteration, "path": str(path)})
        self._write_checkpoint(path, resumable=False)
        return path

    def save_checkpoint(self) -> Path:
        path = self.exp_dir / CHECKPOINT_DIR / f"{self.iteration}.pt"
        self._write_checkpoint(path)
        # Keep only the newest and the final one (hash-grid checkpoints are large); a time-based
        # run's final one is its newest, and its time marks (t<S>.pt) are never touched here.
        # A refinement also keeps the trained cell's final checkpoint it started from.
        keep = {self.args.train_iterations if self.args.train_seconds is None else None, self.refine_from}
        for iteration, old in checkpoints(self.exp_dir):
            if old != path and iteration not in keep:
                old.unlink(missing_ok=True)
        return path

    def maybe_resume(self) -> None:
        path = Path(self.args.ckpt_path) if self.args.ckpt_path else None
        if path is None:
            found = checkpoints(self.exp_dir)
            require(found or not self.refine_iterations,
                    f"{self.exp_dir}: no checkpoint to refine; train the cell first (train_cells / train.py)")
            if not found:
                return
            path = found[-1][1]
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise UserError(f"{path}: cannot load checkpoint ({type(e).__name__}); delete it to resume from an "
                            f"older one") from None
        require("optimizer" in state, f"{path}: holds a model only (a --checkpoint_at_seconds mark), not a training "
                                      f"state; resume from models/<iteration>.pt")
        if {"white_background": False, **state["model_config"]} != self.model_config:
            raise UserError(f"{path}: checkpoint was trained with other model settings; use a new --exp_name")
        if state.get("cell") != self.cell:
            raise UserError(f"{path}: checkpoint belongs to cell {state.get('cell')}, this run trains cell "
                            f"{self.cell}; use another --exp_name per cell")
        self.model.load_state_dict(state["model_state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        self.clock = TrainingClock(state.get("elapsed_seconds", 0.0))
        self.time_marks = list(state.get("time_marks", []))
        self.stream_state = state["stream_state"]
        if self.agreement is not None:
            self.agreement.earlier = state.get("agreement") or {}
        torch.set_rng_state(state["torch_random_state"])
        np.random.set_state(state["np_random_state"])
        random.setstate(state["random_state"])
        if self.refine_iterations:
            earlier = state.get("seam_refine") or {}
            self.refine_from = int(earlier.get("from_iteration", self.iteration))
        print(f"resumed from {path} at iteration {self.iteration}", flush=True)

    def refine_record(self) -> dict:
        """What checkpoints and the summary say about a seam refinement."""
        return {"from_iteration": self.refine_from, "iterations": self.refine_iterations, "blend": self.refine_blend}

    def final_iteration(self) -> Optional[int]:
        """The iteration this run ends at: ``--train_iterations``, or the refinement's end (None: a
        time-based run)."""
        if self.refine_from is not None:
            return self.refine_from + self.refine_iterations
        return None if self.args.train_seconds is not None else self.args.train_iterations

    # ----------------------------------------------------------------- loop
    def _lr(self, iteration: int) -> float:
        """Exponential decay by ``lr_decay_factor`` over ``train_iterations`` (constant after it), or over
        ``train_seconds`` of the training clock with ``--lr_schedule time``."""
        return self.lr * self.args.lr_decay_factor ** self._schedule_progress(iteration)

    def _schedule_progress(self, iteration: int) -> float:
        """How far the schedule is, in [0, 1]: over ``train_iterations``, or over ``train_seconds`` of
        the training clock with ``--lr_schedule time`` (the lr and the depth weight decay on it)."""
        if self.refine_iterations:  # refinement continues at the schedule's end
            return 1.0
        if self.args.lr_schedule == "time" and self.args.train_seconds is not None:
            progress = self.clock.seconds / self.args.train_seconds
        else:
            progress = iteration / self.args.train_iterations
        return min(progress, 1.0)

    def finished(self) -> bool:
        final = self.final_iteration()
        if final is None:
            return self.clock.seconds >= self.args.train_seconds
        return self.iteration >= final

    def _warm_up(self, table: RayTable, use_amp: bool) -> float:
        """One forward and backward pass on random rays, with no update and the random state kept, so
        that just-in-time compilation (Triton kernels, cuBLAS heuristics) is not on the training clock
        of a time-based run.  Returns its seconds."""
        started = time.perf_counter()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            ids = torch.randint(0, int(table.offsets[-1]), (self.args.batch_size,), device=self.device)
            rays_o, rays_d, appearance = table.rays(ids)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = render_rays(self.model, rays_o, rays_d, appearance, self.bounds, self.sampling, train=True)
            out["rgb"].float().mean().backward()
            self.optimizer.zero_grad(set_to_none=True)
            if self.model.has_occupancy:
                with torch.no_grad():
                    self.model.density(self.model.occupancy.cell_points(torch.arange(1024, device=self.device)))
        self._sync()
        return time.perf_counter() - started

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _write_experiment_files(self) -> None:
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(format_hparams(self.args), self.exp_dir / HPARAMS)
        atomic_write_text(" ".join(sys.argv) + "\n", self.exp_dir / "command.txt")
        atomic_write_text("".join(f"{m.image_index},{m.image_path.name}\n" for m in self.dataset.items),
                          self.exp_dir / "image_indices.txt")

    def validate(self, writer: SummaryWriter) -> Optional[float]:
        """Render the first validation image to TensorBoard; returns its PSNR."""
        if not self.dataset.val:
            return None
        item = self.dataset.val[0].scaled(self.args.val_scale_factor)
        self.model.eval()
        appearance = appearance_index(self.dataset, item, self.args.val_protocol)
        use_amp = self.args.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            rgb, depth = render_image(self.model, item.W, item.H, item.intrinsics, item.c2w, appearance,
                                      self.bounds, self.sampling, self.args.image_pixel_batch_size, self.device)
        self.model.train()
        gt = item.load_image().float() / 255
        value = psnr(rgb, gt)
        writer.add_scalar("val/psnr", value, self.iteration)
        strip = side_by_side(rgb, gt, colorize_depth(depth))
        writer.add_image("val/0", strip.numpy(), self.iteration, dataformats="HWC")
        return value

    def compute_gradients(self, rgb_u8: torch.Tensor, ids: torch.Tensor, table: RayTable,
                          jitter: bool = True) -> torch.Tensor:
        """Forward and backward of one batch (this rank's share of it in a group, whose gradients
        are then averaged over the group); returns the batch's loss.  ``jitter=False`` samples
        deterministically (tests compare gradients).  With ``--depth_loss_weight`` the step also
        renders ``--depth_rays_per_batch`` observed pixels and adds the weighted depth loss
        (:mod:`.depth_supervision`) to the gradients; the returned loss stays the photometric one."""
        if self.group is not None:
            rgb_u8, ids = self.group.shard(rgb_u8, ids)
        observed = None
        if self.depth is not None:  # --depth_loss_weight: observed pixels rendered with the batch
            count = self.args.depth_rays_per_batch // (1 if self.group is None else self.group.size)
            generator = torch.Generator().manual_seed(
                self.args.random_seed * 1_000_003 + 7919 * self.iteration + (0 if self.group is None else self.group.rank))
            observed = self.depth.sample(count, generator)
            rays_o, rays_d, appearance = table.rays(torch.cat([ids.to(self.device), observed[0]]))
        else:
            rays_o, rays_d, appearance = table.rays(ids)
        target = rgb_u8.to(self.device).float() / 255
        recorder = RecordingModel(self.model) if self.agreeing and self.agreement.weight > 0 else None
        render_model = recorder or self.model
        if self.agreeing and self.agreement.blends_rays:  # --agreement_blend: rays see the container's blend
            render_model = BlendingModel(render_model, self.agreement)
        distortion = self.args.distortion_loss_weight
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            out = render_rays(render_model, rays_o, rays_d, appearance, self.bounds, self.sampling,
                              train=jitter, with_samples=distortion > 0)
        if observed is None:
            loss = torch.nn.functional.mse_loss(out["rgb"].float(), target)
            total = loss
        else:
            batch = target.shape[0]
            loss = torch.nn.functional.mse_loss(out["rgb"][:batch].float(), target)
            depth_target, depth_weight = self.depth.lookup(ids)
            supervised = (depth_weight > 0).sum() + observed[0].shape[0]
            term = depth_loss(out["depth"], torch.cat([depth_target, observed[1]]),
                              torch.cat([depth_weight, observed[2]]), supervised)
            total = loss + self._depth_weight() * term
            self.depth_parts = {"loss": term.detach(), "rays": supervised}
        if distortion > 0:
            term = distortion_loss(out["z"].float(), out["weights"].float()).mean()
            total = total + distortion * term
            self.regularizer_parts["distortion"] = term.detach()
        if self.agreeing:  # field agreement and appearance alignment with the trained neighbours
            extra, self.agreement_parts = self.agreement.loss(recorder, self.model)
            if extra is not None:
                total = total + extra
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.group is not None:
            loss = self.group.all_reduce_gradients(self.model.parameters(), loss)
        if not torch.isfinite(loss):
            raise UserError(f"training diverged at iteration {self.iteration} (loss {loss.item()}); usually a "
                            f"wrong ray_altitude_range or frame: check them with the synthetic config, or "
                            f"lower --lr")
        return loss

    def train(self) -> dict:
        """Train (or resume) to the end; holds the cell's lock file (:mod:`cell_lock`) meanwhile."""
        if not self.leader:
            return self._train()
        try:
            cell_lock.acquire(self.exp_dir)
        except cell_lock.CellBusy as e:
            raise UserError(f"{e}; wait for it to finish or use another --exp_name") from None
        try:
            return self._train()
        finally:
            cell_lock.release(self.exp_dir)

    def _late_summary(self) -> dict:
        """The summary of a run that stopped between its final checkpoint and its summary (killed
        during the final validation): validated and written now, without the run's speed."""
        if not self.leader:
            return {}
        writer = SummaryWriter(str(self.exp_dir / "tb"))
        val_psnr = self.validate(writer)
        writer.close()
        summary = {"iterations": self.iteration, "start_iteration": self.iteration, "seconds": 0.0,
                   "elapsed_seconds": self.clock.seconds, "rays_per_second": None, "batch_size": self.args.batch_size,
                   "val_psnr_first_image": val_psnr, "time_checkpoints": self.time_marks,
                   "parameters": self.model.parameter_count(), "device": str(self.device), "cell": self.cell,
                   "note": "written by a later run: the run that trained this stopped after its final checkpoint"}
        atomic_write_json(summary, self.exp_dir / "train_summary.json")
        return summary

    def _train(self) -> dict:
        args = self.args
        if self.leader:
            self._write_experiment_files()
        self.maybe_resume()
        if self.agreeing:
            self.agreement.init_appearance(self.model)
            if self.iteration == 0:  # a fresh cell starts from its neighbours' embeddings
                self.agreement.copy_appearance(self.model)
            print(f"{self.exp_dir}: agreeing with trained neighbour cells {sorted(self.agreement.paths)}", flush=True)
        if self.finished():
            done = (f"{self.clock.seconds:.1f} s" if args.train_seconds is not None
                    else f"{self.iteration} iterations")
            print(f"{self.exp_dir}: already trained ({done})", flush=True)
            if (self.exp_dir / "train_summary.json").exists():
                return json.loads((self.exp_dir / "train_summary.json").read_text())
            return self._late_summary()
        chunk_started = time.perf_counter()
        chunks = self.prepare_group_chunks()
        chunk_seconds = time.perf_counter() - chunk_started
        table = RayTable(self.items, self.device, args.center_pixels)
        stream = ChunkStream(chunks, args.batch_size, args.random_seed, self.stream_state)
        writer = SummaryWriter(str(self.exp_dir / "tb")) if self.leader else None
        use_amp = self.use_amp
        if self.group is not None:  # each replica jitters its own rays differently
            torch.manual_seed(args.random_seed * 1009 + 31 * self.group.rank + self.iteration)
        final = self.final_iteration()
        timed = final is None
        marks = [] if self.refine_from is not None else sorted(
            m for m in args.checkpoint_at_seconds if m > self.clock.seconds)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start_iteration, start_seconds, started = self.iteration, self.clock.seconds, time.time()
        progress = tqdm(total=final, initial=self.iteration,
                        desc=f"train {self.exp_dir.name}", file=sys.stdout, mininterval=2.0, dynamic_ncols=True,
                        disable=not (self.leader and self.show_progress))
        loss_value = psnr_value = float("nan")
        loss = None
        batches = iter(stream)
        saved_iteration = None
        warmup_seconds = self._warm_up(table, use_amp) if timed and self.device.type == "cuda" else 0.0
        self.clock.start()
        while not self.finished():
            rgb_u8, ids = next(batches)
            self.stream_state = dict(stream.state)
            for param_group in self.optimizer.param_groups:
                param_group["lr"] = self._lr(self.iteration)
            if args.coarse_to_fine > 0:
                levels = set_coarse_to_fine(self.model, self._schedule_progress(self.iteration),
                                            args.coarse_to_fine_levels, args.coarse_to_fine)
                self.regularizer_parts["hash_levels"] = levels
            loss = self.compute_gradients(rgb_u8, ids, table)
            self.optimizer.step()
            self.iteration += 1
            if self.model.has_occupancy and self.iteration % args.occupancy_update_interval == 0:
                self.model.occupancy.update(self.model.density, self.occupancy_threshold)
                if self.group is not None:
                    self.group.broadcast_module(self.model.occupancy)
            progress.update(1)
            last = self.iteration == final
            if self.iteration % args.log_interval == 0 or last:
                loss_value = loss.item()
                psnr_value = -10 * math.log10(max(loss_value, 1e-10))
                if writer is not None:
                    writer.add_scalar("train/loss", loss_value, self.iteration)
                    writer.add_scalar("train/psnr", psnr_value, self.iteration)
                    writer.add_scalar("train/lr", self._lr(self.iteration), self.iteration)
                    for name, value in self.agreement_parts.items():
                        writer.add_scalar(f"train/agreement_{name}", float(value), self.iteration)
                    for name, value in self.depth_parts.items():
                        writer.add_scalar(f"train/depth_{name}", float(value), self.iteration)
                    for name, value in self.regularizer_parts.items():
                        writer.add_scalar(f"train/{name}", float(value), self.iteration)
                    if self.depth is not None:
                        writer.add_scalar("train/depth_weight", self._depth_weight(), self.iteration)
                progress.set_postfix(loss=f"{loss_value:.4f}", psnr=f"{psnr_value:.2f}")
            if marks and self.clock.seconds >= marks[0]:
                self._sync()  # the clock must cover the work queued so far
                with self.clock.paused():
                    while marks and self.clock.seconds >= marks[0]:
                        mark = marks.pop(0)
                        if self.leader:
                            self.save_time_checkpoint(mark)
            if self.iteration % args.val_interval == 0 and self.leader:
                with self.clock.paused():
                    self.validate(writer)
            if self.iteration % args.ckpt_interval == 0 or last:
                with self.clock.paused():
                    if self.leader:
                        self.save_checkpoint()
                    saved_iteration = self.iteration
        self._sync()
        self.clock.stop()
        progress.close()
        if loss is not None and self.iteration % args.log_interval != 0:
            loss_value = loss.item()
            psnr_value = -10 * math.log10(max(loss_value, 1e-10))
        if saved_iteration != self.iteration and self.leader:
            self.save_checkpoint()
        if self.group is not None:
            self.group.check_identical(self.model)
        train_seconds = self.clock.seconds - start_seconds
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        val_psnr = None
        if writer is not None:
            val_psnr = self.validate(writer)
            writer.close()
        summary = {"iterations": self.iteration, "start_iteration": start_iteration,
                   "seconds": train_seconds, "wall_seconds": time.time() - started,
                   "chunk_seconds": chunk_seconds, "warmup_seconds": warmup_seconds,
                   "elapsed_seconds": self.clock.seconds,
                   "rays_per_second": (self.iteration - start_iteration) * args.batch_size / max(train_seconds, 1e-9),
                   "batch_size": args.batch_size, "final_train_loss": loss_value, "final_train_psnr": psnr_value,
                   "val_psnr_first_image": val_psnr, "time_checkpoints": self.time_marks,
                   "peak_memory_bytes": peak,
                   "training_rays": chunks.num_rays, "chunk_bytes_per_ray": chunks.bytes_on_disk / chunks.num_rays,
                   "parameters": self.model.parameter_count(), "device": str(self.device),
                   "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "cell": self.cell,
                   "data_parallel_ranks": 1 if self.group is None else self.group.size}
        if self.agreement is not None:
            summary["agreement"] = self.agreement.record()
        if self.refine_from is not None:
            summary["seam_refine"] = self.refine_record()
        if self.leader:
            atomic_write_json(summary, self.exp_dir / "train_summary.json")
        return summary
