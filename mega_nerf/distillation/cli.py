"""``scripts/distill.py``: a merged container (teacher) into one model of any backend (student).

    python scripts/distill.py --config_file C --container_path container.pt --model_type hash \\
        --output student.pt [--dataset_path D] [--cell 0 1 ...] [--teacher_cache CACHE]

The student is saved as a one-cell container: ``eval.py --container_path student.pt`` evaluates
it and this script distils it again.  ``--cell`` distils only those cells' regions, one after the
other, into one student (``--resume`` adds more cells to an existing student later).  With
``--teacher_cache`` every teacher output is computed first and written to disk (``--cache_only``
stops there), then the teacher leaves the device before the student is built.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from mega_nerf.config import (
    add_model_options,
    add_render_options,
    add_scene_options,
    new_parser,
    parse,
)
from mega_nerf.container.container import load_container
from mega_nerf.data.format import load_dataset
from mega_nerf.distillation.cameras import (
    Views,
    aerial_views,
    bounds_views,
    training_views,
    view_rays,
)
from mega_nerf.distillation.distiller import (
    DEFAULT_PACKS_IN_MEMORY,
    LOSSES,
    Distiller,
    DistillSettings,
    PackSource,
)
from mega_nerf.distillation.losses import FeatureAdapters
from mega_nerf.distillation.packs import make_pack
from mega_nerf.distillation.report import compare, dataset_cameras, view_cameras
from mega_nerf.distillation.samples import (
    density_threshold,
    ray_samples,
    region_filter,
    teacher_occupancy,
)
from mega_nerf.distillation.student import (
    build_student,
    init_from_teacher,
    load_student_info,
    prune_occupancy,
    save_student,
    student_config,
    visibility_prune,
)
from mega_nerf.distillation.teacher_cache import TeacherCache, file_identity
from mega_nerf.distributed import free_memory_bytes, process_device
from mega_nerf.errors import UserError, require
from mega_nerf.io_utils import atomic_torch_save, atomic_write_json, temporary_sibling
from mega_nerf.render.occupancy import OccupancyGrid
from mega_nerf.render.renderer import SamplingConfig
from mega_nerf.training.trainer import DEFAULT_LR

#: ``--color_min_weight`` stored with a student distilled with the distortion loss, whose rays
#: hold their weight in a few samples (the renderer's two-pass rendering).
STUDENT_COLOR_MIN_WEIGHT = 1e-4


def distill_parser():
    p = new_parser("Distil a merged container (the teacher) into one model of any backend (the student), "
                   "saved as a one-cell container that eval.py evaluates and this script distils again.")
    add_scene_options(p)
    add_model_options(p)
    add_render_options(p)
    for action in p._actions:
        if action.dest == "model_type":
            action.help = "student backend; its sizes come from the backend flags below (e.g. --hash_log2_size)"
        elif action.dest == "occupancy_resolution":
            action.help = "student occupancy grid cells per axis, initialised from the teacher's occupied space " \
                          "(0 = none; the teacher's space is then measured at 128)"
    p.set_defaults(occupancy_resolution=128)
    g = p.add_argument_group("distillation")
    g.add_argument("--container_path", type=str, required=True, help="the teacher: a merged container (or a student)")
    g.add_argument("--output", type=str, required=True, help="student file to write (a one-cell container)")
    g.add_argument("--dataset_path", type=str, default=None,
                   help="the teacher's dataset: virtual cameras around its training cameras, and teacher vs student "
                        "on its validation images at the end (without it: cameras over the scene's bounds)")
    g.add_argument("--overwrite", default=False, action="store_true", help="replace an existing --output")
    g.add_argument("--resume", default=False, action="store_true",
                   help="continue an interrupted run (OUTPUT.progress.pt), or add --cell regions to the student "
                        "at --output")
    g.add_argument("--cell", type=int, nargs="+", default=None,
                   help="distil only these cells' regions (teacher cell ids), one after the other")
    g.add_argument("--teacher_cache", type=str, default=None,
                   help="folder for the teacher's outputs: computed once (resumable), then the student is "
                        "distilled from disk without the teacher on the device")
    g.add_argument("--cache_only", default=False, action="store_true", help="only build --teacher_cache")
    g.add_argument("--distill_steps", type=int, default=3000, help="steps per region")
    g.add_argument("--distill_seconds", type=float, default=None,
                   help="time budget per region instead of --distill_steps (the schedule follows the clock)")
    g.add_argument("--distill_batch_rays", type=int, default=4096, help="rays per step")
    g.add_argument("--views_per_batch", type=int, default=4, help="views each step's fresh rays come from")
    g.add_argument("--rays_per_view", type=int, default=4096, help="rays of a view pack (one per view)")
    g.add_argument("--distill_samples", type=int, default=None,
                   help="samples per ray in the teacher's occupied space (default: coarse_samples + fine_samples, "
                        "as the student renders with its occupancy grid)")
    g.add_argument("--jittered_views", type=int, default=None,
                   help="jittered copies of training cameras (default: as many as training cameras)")
    g.add_argument("--footprint_views", type=int, default=None,
                   help="cameras at training altitudes over the footprint (default: half the training cameras)")
    g.add_argument("--jitter_degrees", type=float, default=5.0, help="rotation of jittered copies, at most")
    g.add_argument("--view_scale_factor", type=int, default=1, help="downscale the virtual cameras' images")
    g.add_argument("--feature_stage", type=float, default=0.1, help="stage 1 (features) ends at this fraction")
    g.add_argument("--sample_stage", type=float, default=0.3,
                   help="stage 2 (per-sample density and colour) ends at this fraction; then rendered colour")
    g.add_argument("--lr", type=float, default=None, help="initial lr (default per student backend, as training)")
    g.add_argument("--feature_weight", type=float, default=1.0, help="feature loss weight at the start")
    g.add_argument("--density_weight", type=float, default=0.1, help="log-density loss weight")
    g.add_argument("--colour_weight", type=float, default=1.0, help="per-sample colour loss weight")
    g.add_argument("--hard_view_fraction", type=float, default=0.3,
                   help="share of view draws proportional to the view's error (the rest uniform)")
    g.add_argument("--hard_ray_fraction", type=float, default=0.1, help="share of each batch from the hard-ray pool")
    g.add_argument("--hard_ray_pool", type=int, default=65536, help="rays kept in the hard-ray pool")
    g.add_argument("--visibility_threshold", type=float, default=0.01,
                   help="after distilling, keep occupied only the cells where a ray of some view gives a sample at "
                        "least this weight (0: keep every cell the student has density in)")
    g.add_argument("--render_occupancy_candidates", type=int, default=None,
                   help="occupancy candidates per ray stored with the student, with which eval.py renders it "
                        "unless --occupancy_candidates is given on its command line (default: half of "
                        "--occupancy_candidates when --visibility_threshold prunes the student's grid to the "
                        "surfaces the views see, where half place the samples as densely and render faster, "
                        "bench/results/distill_brighton.json; 0 = store none)")
    g.add_argument("--distortion_loss_weight", type=float, default=0.0, metavar="WEIGHT",
                   help="Mip-NeRF 360's distortion loss on the student's rendered rays (stage 3, 0 = off): pulls "
                        "each ray's weight onto its surface, for two-pass rendering (--render_color_min_weight) "
                        "to colour fewer samples (city, 0.05: +0.2-0.3 dB over the plain student in one run, "
                        "even in another; with --render_samples 48, 3.5x the container's speed at -0.02 dB, README)")
    g.add_argument("--render_samples", type=int, default=None,
                   help="samples per ray stored with the student (as --coarse_samples and --fine_samples, half "
                        "each), with which eval.py renders it unless those are on its command line; a student "
                        "loses less from fewer samples than its container (city: 64 instead of 128 cost the "
                        "student 0.08 dB and the container 0.41 dB, bench/results/distill_city_sharp.json)")
    g.add_argument("--render_color_min_weight", type=float, default=None,
                   help="--color_min_weight stored with the student (eval.py's two-pass rendering: colour only "
                        f"where a sample's weight is at least this; default {STUDENT_COLOR_MIN_WEIGHT:g} with "
                        "--distortion_loss_weight, else none stored)")
    g.add_argument("--max_packs_in_memory", type=int, default=None,
                   help="view packs (a view's rays with the teacher's outputs) kept in memory (default: as many as "
                        "fit in --pack_memory_fraction of the device's free memory, so most scenes keep every "
                        "view's; a pack that is not kept is rendered by the teacher again when its view is drawn)")
    g.add_argument("--pack_memory_fraction", type=float, default=0.25,
                   help="share of the device's free memory (at the start) the packs may fill when "
                        "--max_packs_in_memory is not given")
    g.add_argument("--random_seed", type=int, default=0)
    g.add_argument("--device", type=str, default=None, help="cpu or cuda[:i] (default: cuda if available)")
    g.add_argument("--num_threads", type=int, default=None, help="CPU threads for torch")
    g.add_argument("--no_amp", dest="amp", default=True, action="store_false", help="no bf16 fields on CUDA")
    g.add_argument("--log_interval", type=int, default=50, help="TensorBoard scalars every N steps")
    g.add_argument("--ckpt_interval", type=int, default=1000, help="progress checkpoint every N steps")
    g.add_argument("--log_dir", type=str, default=None, help="TensorBoard folder (default: OUTPUT.tb)")
    g.add_argument("--metrics_path", type=str, default=None, help="metrics JSON (default: OUTPUT.json)")
    g.add_argument("--val_scale_factor", type=int, default=4, help="downscale validation images for the metrics")
    g.add_argument("--max_val_images", type=int, default=4, help="validation images scored at the end (0 = all)")
    g.add_argument("--val_protocol", choices=["mega_nerf", "held_out"], default="mega_nerf",
                   help="appearance of validation images, as eval.py")
    g.add_argument("--quiet", default=False, action="store_true", help="no progress bar")

    def one_line_error(message: str):
        raise UserError(message)

    p.error = one_line_error  # a bad flag is one line, like every other mistake
    return p


def progress_path(output: Path) -> Path:
    return output.with_name(output.name + ".progress.pt")


def check_output(args: argparse.Namespace) -> Path:
    """Refuse an output that exists (unless --overwrite or --resume) or cannot be written."""
    output = Path(args.output)
    require(not (args.overwrite and args.resume), "pass either --overwrite (start over) or --resume (continue)")
    if output.exists() and not output.is_file():
        raise UserError(f"{output}: exists and is not a file; choose another --output")
    require(not output.exists() or args.overwrite or args.resume or args.cache_only,
            f"{output}: already exists; pass --overwrite to replace it, --resume to add cells to it, or choose "
            f"another --output")
    require(not progress_path(output).exists() or args.overwrite or args.resume or args.cache_only,
            f"{progress_path(output)}: an unfinished distillation; pass --resume to continue it or --overwrite to "
            f"start over")
    require(output.parent.is_dir() or not output.parent.exists(), f"{output.parent}: is not a folder")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        Path(temporary_sibling(output)).unlink()
    except OSError as e:
        raise UserError(f"{output}: cannot write here ({e.strerror}); choose another --output") from None
    return output


def settings_from_args(args: argparse.Namespace) -> DistillSettings:
    require(0 <= args.feature_stage <= args.sample_stage <= 1,
            "--feature_stage and --sample_stage must satisfy 0 <= feature_stage <= sample_stage <= 1")
    require(args.distill_steps >= 1, "--distill_steps must be >= 1")
    require(args.render_samples is None or args.render_samples >= 2,
            f"--render_samples must be >= 2, got {args.render_samples}")
    require(args.render_color_min_weight is None or 0 <= args.render_color_min_weight < 1,
            f"--render_color_min_weight must be in [0, 1), got {args.render_color_min_weight}")
    require(args.distill_seconds is None or args.distill_seconds > 0, "--distill_seconds must be > 0")
    require(args.max_packs_in_memory is None or args.max_packs_in_memory >= 1,
            f"--max_packs_in_memory must be >= 1, got {args.max_packs_in_memory}")
    require(0 < args.pack_memory_fraction <= 0.9,
            f"--pack_memory_fraction must be in (0, 0.9], got {args.pack_memory_fraction:g}")
    require(args.distill_batch_rays >= args.views_per_batch >= 1,
            "--views_per_batch must be between 1 and --distill_batch_rays")
    return DistillSettings(
        steps=args.distill_steps, seconds=args.distill_seconds, batch_rays=args.distill_batch_rays,
        views_per_batch=args.views_per_batch, feature_stage=args.feature_stage, sample_stage=args.sample_stage,
        lr=args.lr if args.lr is not None else DEFAULT_LR[args.model_type], feature_weight=args.feature_weight,
        density_weight=args.density_weight, colour_weight=args.colour_weight,
        distortion_weight=args.distortion_loss_weight,
        hard_view_fraction=args.hard_view_fraction, hard_ray_fraction=args.hard_ray_fraction,
        hard_ray_pool=args.hard_ray_pool, bg_samples=args.bg_samples, seed=args.random_seed,
        log_interval=args.log_interval, amp=args.amp)


def make_views(args, dataset, teacher) -> tuple[Views, Views]:
    """(training-side views to distil from, held-out views for the metrics without a dataset)."""
    appearance_count = teacher.model_configs[0]["appearance_count"]
    held_out = bounds_views(teacher.bounds, 4, appearance_count, torch.Generator().manual_seed(args.random_seed + 1))
    if dataset is None:
        count = args.footprint_views or 64
        return bounds_views(teacher.bounds, count, appearance_count,
                            torch.Generator().manual_seed(args.random_seed)), held_out
    require(dataset.train, f"{args.dataset_path}/train: no training images to place virtual cameras")
    base = training_views(dataset.train, args.view_scale_factor)
    jittered = args.jittered_views if args.jittered_views is not None else len(base)
    footprint = args.footprint_views if args.footprint_views is not None else len(base) // 2
    trained = set(base.appearance.tolist())
    others = [m for m in dataset.val if m.image_index not in trained]
    extra = (torch.tensor([m.image_index for m in others], dtype=torch.long),
             torch.stack([m.c2w[:, 3] for m in others])) if others else None
    return aerial_views(base, jittered, footprint, args.random_seed, args.jitter_degrees, extra), held_out


def views_seeing(views: Views, occupied_fn, region_fn, bounds, teacher, candidates: int, samples: int,
                 seed: int, device, probe: int = 32) -> list[int]:
    """Views with some occupied sample (in the region, when there is one) among ``probe`` rays."""
    keep = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for v in range(len(views)):
            rays_o, rays_d, _ = view_rays(views, v, probe, torch.Generator().manual_seed(seed + v))
            s = ray_samples(rays_o.to(device), rays_d.to(device), bounds, occupied_fn, candidates, samples,
                            teacher.has_background, teacher.white_background, region_fn)
            seen = s["valid"][:, :-1].any() if region_fn is None else s["valid"].any()
            if bool(seen):
                keep.append(v)
    return keep


def occupancy_from_setup(setup: dict, aabb: torch.Tensor, device) -> OccupancyGrid:
    density = setup["occupancy"]["density"]
    r = round(density.numel() ** (1 / 3))
    grid = OccupancyGrid(aabb, r).to(device)
    grid.density.copy_(density)
    grid.occupied.copy_(setup["occupancy"]["occupied"])
    return grid


def student_render_settings(args: argparse.Namespace, student) -> dict:
    """The render flags stored with the student (``--render_occupancy_candidates``,
    ``--render_samples`` and ``--render_color_min_weight``; see their help)."""
    if student.occupancy_grids is None:
        return {}
    candidates = args.render_occupancy_candidates
    if candidates is None and args.visibility_threshold > 0:
        candidates = max(args.occupancy_candidates // 2, args.coarse_samples + args.fine_samples)
    stored = {"occupancy_candidates": candidates} if candidates else {}
    if args.render_samples:
        stored["coarse_samples"] = args.render_samples // 2
        stored["fine_samples"] = args.render_samples - args.render_samples // 2
    weight = args.render_color_min_weight
    if weight is None and args.distortion_loss_weight > 0:
        weight = STUDENT_COLOR_MIN_WEIGHT
    if weight:
        stored["color_min_weight"] = weight
    return stored


def region_name(cell: int | None) -> str:
    return "all" if cell is None else f"cell-{cell}"


def distill(args: argparse.Namespace) -> dict:
    output = check_output(args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = process_device(args.device)
    settings = settings_from_args(args)
    container_path = Path(args.container_path)
    teacher = load_container(container_path, "cpu")
    identity = file_identity(container_path)
    if args.cell is not None:
        unknown = [c for c in args.cell if c not in teacher.cell_ids]
        require(not unknown, f"--cell {' '.join(map(str, unknown))}: not in the container (its cells: "
                             f"{' '.join(map(str, teacher.cell_ids))})")
    dataset = load_dataset(Path(args.dataset_path)) if args.dataset_path else None
    if dataset is not None:
        require(abs(dataset.pose_scale_factor - teacher.bounds.pose_scale_factor)
                < 1e-6 * teacher.bounds.pose_scale_factor,
                f"{args.dataset_path}: pose_scale_factor differs from the container's; pass the dataset it was "
                f"trained on")
    if args.distill_samples is None:
        args.distill_samples = args.coarse_samples + args.fine_samples
    cfg = student_config(args, teacher)
    aabb = torch.tensor(cfg["aabb"])
    occ_resolution = cfg["occupancy_resolution"] or 128
    candidates = args.occupancy_candidates
    threshold = density_threshold(aabb, candidates, args.occupancy_alpha_threshold)
    sampling = SamplingConfig.from_args(args)
    views, held_out = make_views(args, dataset, teacher)
    cells = [None] if args.cell is None else list(args.cell)
    pack_settings = {"seed": args.random_seed, "rays_per_view": args.rays_per_view, "samples": args.distill_samples,
                     "candidates": candidates, "bg_samples": args.bg_samples, "occupancy_resolution": occ_resolution,
                     "threshold": threshold, "aabb": cfg["aabb"], "views": len(views),
                     "dataset": None if dataset is None else str(Path(args.dataset_path).resolve()),
                     "jittered": args.jittered_views, "footprint": args.footprint_views,
                     "jitter_degrees": args.jitter_degrees, "view_scale_factor": args.view_scale_factor,
                     "teacher_sampling": [args.coarse_samples, args.fine_samples]}
    cache = TeacherCache(Path(args.teacher_cache), identity, pack_settings).open() if args.teacher_cache else None

    # The teacher's occupied space (from the cache when it holds it).
    setup = cache.load_setup() if cache is not None else None
    if setup is None:
        teacher.to(device)
        grid = teacher_occupancy(teacher, aabb.to(device), occ_resolution, threshold, seed=args.random_seed)
        setup = {"occupancy": {"density": grid.density.cpu(), "occupied": grid.occupied.cpu()},
                 "views": views.to_dict()}
        if cache is not None:
            cache.save_setup(setup)
    require(all(torch.equal(setup["views"][k], v) for k, v in views.to_dict().items()),
            f"{args.teacher_cache}: teacher cache was made with other cameras; delete it or choose another folder")
    occupancy = occupancy_from_setup(setup, aabb, device)
    print(f"teacher: {len(teacher.cell_ids)} cells, {teacher.parameter_count():,} parameters; occupied "
          f"{100 * occupancy.occupied_fraction():.1f} % of the box; {len(views)} views", flush=True)

    positions = {cell: teacher.cell_ids.index(cell) for cell in cells if cell is not None}
    regions = []
    for cell in cells:
        region_fn = None if cell is None else region_filter(teacher.centroids.to(device), [positions[cell]],
                                                            teacher.cluster_2d)
        seeing = views_seeing(views, occupancy.occupied_at, region_fn, teacher.bounds, teacher, candidates,
                              args.distill_samples, args.random_seed, device)
        regions.append({"name": region_name(cell), "cell": cell, "region_fn": region_fn, "views": seeing})

    def pack_maker(region: dict):
        def make(v: int) -> dict:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda"):
                return make_pack(teacher, views, region["views"][v], args.rays_per_view, teacher.bounds,
                                 occupancy.occupied_at, candidates, args.distill_samples, args.bg_samples,
                                 args.random_seed, -1 if region["cell"] is None else region["cell"],
                                 region["region_fn"], device, sampling=sampling)
        return make

    if cache is not None:
        build_cache(cache, regions, pack_maker, teacher, device, args.quiet)
        teacher.to("cpu")  # the student never shares the device with the teacher
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.cache_only:
        print(f"teacher cache complete in {args.teacher_cache}", flush=True)
        return {"cache": str(args.teacher_cache)}
    if cache is None:
        teacher.to(device)  # live packs

    # The student, fresh or resumed.
    fingerprint = {"teacher": identity, "config": cfg, "settings": settings.to_dict(), "packs": pack_settings}
    torch.manual_seed(args.random_seed)  # the same seed gives the same initial student
    student = build_student(cfg, teacher)
    teacher_widths = max(m.geo_feat_dim for m in teacher.sub_modules)
    adapters = FeatureAdapters(len(teacher.sub_modules), cfg["geo_feat_dim"], teacher_widths)
    done: list[str] = []
    resumed_state = None
    progress = progress_path(output)
    if args.overwrite:
        progress.unlink(missing_ok=True)
    if args.resume and progress.exists():
        resumed_state = torch.load(progress, map_location="cpu", weights_only=False)
        require(resumed_state["fingerprint"] == fingerprint,
                f"{progress}: was started with another container or other settings; pass the same flags or "
                f"--overwrite to start over")
        student.load_state_dict(resumed_state["student"])
        adapters.load_state_dict(resumed_state["adapters"])
        done = list(resumed_state["done"])
        torch.set_rng_state(resumed_state["torch_rng"])
    elif args.resume and output.exists():
        info = load_student_info(output)
        require(info.get("teacher") == identity and info.get("config") == cfg,
                f"{output}: was distilled from another container or with other student settings; --resume adds "
                f"cells only with the same ones")
        existing = load_container(output, "cpu")
        student.load_state_dict(existing.state_dict())
        done = list(info.get("done", []))
        if info.get("adapters") is not None:
            adapters.load_state_dict(info["adapters"])
    else:
        copied = init_from_teacher(student, teacher, occupancy)
        groups = sorted({".".join(name.split(".")[:2]) for name in copied})
        print(f"student: {cfg['model_type']}, {student.parameter_count():,} parameters; from the teacher: "
              f"{', '.join(groups) or 'nothing'}", flush=True)
    student.to(device).train()
    adapters.to(device)

    writer = None
    if args.log_interval > 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.log_dir or str(output.with_name(output.name + ".tb")))
    step_candidates = float((aabb[1] - aabb[0]).norm()) / candidates
    min_delta, max_delta = step_candidates * 0.1, step_candidates * max(candidates / args.distill_samples, 1) * 4

    def save_progress(distiller: Distiller | None, current: str | None) -> None:
        atomic_torch_save({"fingerprint": fingerprint, "student": student.state_dict(),
                           "adapters": adapters.state_dict(), "done": done, "current": current,
                           "distiller": None if distiller is None else distiller.state_dict(),
                           "torch_rng": torch.get_rng_state()}, progress)

    # Packs kept in memory: every view's, where they fit, so the teacher renders each pack once.
    free = free_memory_bytes(device) if args.max_packs_in_memory is None else None
    capacity = args.max_packs_in_memory or (None if free is not None else DEFAULT_PACKS_IN_MEMORY)
    pack_budget = None if free is None else int(args.pack_memory_fraction * free)
    runs = []
    started = time.perf_counter()
    for region in regions:
        if region["name"] in done:
            print(f"{region['name']}: already distilled", flush=True)
            continue
        source = PackSource(device, make=None if cache is not None else pack_maker(region), cache=cache,
                            region=region["name"], capacity=capacity, memory_budget=pack_budget)
        distiller = Distiller(student, adapters, source, len(region["views"]), teacher.bounds, settings, device,
                              min_delta, max_delta, writer, show_progress=not args.quiet,
                              label=f"distil {region['name']}")
        if resumed_state is not None and resumed_state.get("current") == region["name"] \
                and resumed_state.get("distiller") is not None:
            distiller.load_state_dict(resumed_state["distiller"])
            print(f"{region['name']}: resumed at step {distiller.step_count}", flush=True)
        result = distiller.run(lambda d, name=region["name"]: save_progress(d, name), args.ckpt_interval)
        done.append(region["name"])
        save_progress(None, None)
        runs.append({"region": region["name"], "views": len(region["views"]), "packs_made": source.made,
                     "packs_in_memory": source.capacity, "pack_bytes": source.pack_bytes, **result})
        print(f"{region['name']}: {result['steps']} steps in {result['seconds']:.1f} s, final losses "
              + ", ".join(f"{k} {v:.4g}" for k, v in result["final"].items() if k in LOSSES)
              + f"; {source.made} packs made for {len(region['views'])} views, up to {source.capacity} kept in "
                f"memory ({(source.pack_bytes or 0) / 2 ** 20:.1f} MB each)", flush=True)
    distill_seconds = time.perf_counter() - started
    if writer is not None:
        writer.close()

    student.eval()
    occupied = dense = None
    if student.occupancy_grids is not None:
        # density_threshold per cell of the student's grid, as training refreshes it
        occupied = dense = prune_occupancy(student.occupancy_grids[0], student.sub_modules[0].density, threshold,
                                           seed=args.random_seed)
        if args.visibility_threshold > 0:
            occupied = visibility_prune(student.occupancy_grids[0], student, views, teacher.bounds, sampling,
                                        args.rays_per_view, args.visibility_threshold, device, seed=args.random_seed)
            print(f"student occupancy: {100 * dense:.1f} % of the box holds density, {100 * occupied:.1f} % is "
                  f"seen by the views (--visibility_threshold {args.visibility_threshold:g})", flush=True)
    student.render_settings = student_render_settings(args, student)
    info = {"teacher": identity, "teacher_path": str(container_path), "config": cfg, "done": done,
            "settings": settings.to_dict(), "packs": pack_settings, "adapters": adapters.cpu().state_dict()}
    save_student(student, output, info)
    progress.unlink(missing_ok=True)

    cameras = (dataset_cameras(dataset, args.val_scale_factor, args.max_val_images, args.val_protocol)
               if dataset is not None and dataset.val else view_cameras(held_out))
    comparison = compare(teacher, student, cameras, teacher.bounds, sampling, args.image_pixel_batch_size, device)
    metrics = {"output": str(output), "teacher_path": str(container_path), "student_type": cfg["model_type"],
               "teacher_cells": len(teacher.cell_ids), "teacher_parameters": teacher.parameter_count(),
               "student_parameters": student.parameter_count(), "cells_done": done, "runs": runs,
               "render_settings": student.render_settings,
               "distill_seconds": distill_seconds, "occupied_fraction": occupied,
               "occupied_with_density": dense, "device": str(device),
               "heldout": {"source": "validation images" if "item" in cameras[0] else "virtual views",
                           **comparison}}
    metrics_path = Path(args.metrics_path) if args.metrics_path else output.with_name(output.name + ".json")
    atomic_write_json(metrics, metrics_path)
    h = metrics["heldout"]
    line = f"student vs teacher {h['student_vs_teacher_psnr']:.2f} dB on {h['images']} held-out {h['source']}"
    if h.get("teacher_psnr") is not None:
        line += f"; against ground truth: teacher {h['teacher_psnr']:.2f} dB, student {h['student_psnr']:.2f} dB"
    stored = "".join(f", renders with --{k} {v}" for k, v in student.render_settings.items())
    print(f"wrote {output} ({cfg['model_type']}, {metrics['student_parameters']:,} parameters, teacher "
          f"{metrics['teacher_parameters']:,}{stored}); {line}; metrics in {metrics_path}", flush=True)
    return metrics


def build_cache(cache: TeacherCache, regions: list[dict], pack_maker, teacher, device, quiet: bool) -> None:
    """Write every missing shard of every region (the teacher on the device meanwhile)."""
    missing = {r["name"]: cache.missing_shards(r["name"], len(r["views"])) for r in regions}
    total = sum(len(m) for m in missing.values())
    if total == 0:
        return
    teacher.to(device)
    written = 0
    for region in regions:
        make = pack_maker(region)
        n = len(region["views"])
        for shard in missing[region["name"]]:
            views = range(shard * cache.shard_size, min((shard + 1) * cache.shard_size, n))
            cache.write_shard(region["name"], shard, [make(v) for v in views])
            written += 1
            if not quiet:
                print(f"teacher cache: {written}/{total} shards", flush=True)


def main(argv=None) -> dict:
    args = parse(distill_parser(), argv)
    require(math.isfinite(args.density_weight), "--density_weight must be finite")
    require(args.render_occupancy_candidates is None or args.render_occupancy_candidates >= 0,
            f"--render_occupancy_candidates must be >= 0, got {args.render_occupancy_candidates}")
    require(0 <= args.visibility_threshold < 1, f"--visibility_threshold must be in [0, 1), got "
                                                f"{args.visibility_threshold:g}")
    return distill(args)


def cli() -> None:
    """Console entry point."""
    from mega_nerf.errors import cli_entry

    cli_entry(main)()

