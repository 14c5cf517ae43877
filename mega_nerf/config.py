"""Every option of every stage, in one place.

Flag names and defaults follow Mega-NeRF's ``opts.py`` so its users' configs and scripts keep
working; options that Mega-NeRF did not have are grouped at the end of each section.  Values can
come from the command line or a YAML file (``--config_file`` / ``--config``, read by
configargparse); the command line wins.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import configargparse

from mega_nerf.errors import UserError, require
from mega_nerf.partition.centroids import BLEND_WEIGHTS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults only where they inform: not for on/off flags or options without one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool) or action.nargs == 0:
            return action.help or ""
        return super()._get_help_string(action)


def new_parser(description: str) -> configargparse.ArgumentParser:
    return configargparse.ArgumentParser(
        description=description,
        config_file_parser_class=configargparse.YAMLConfigFileParser,
        formatter_class=HelpFormatter,
        ignore_unknown_config_file_keys=True,
    )


def add_scene_options(p: configargparse.ArgumentParser) -> None:
    """Scene geometry: bounds, altitude planes, partition margins (shared by every stage)."""
    g = p.add_argument_group("scene")
    g.add_argument("--config_file", "--config", is_config_file=True, help="YAML config file")
    g.add_argument("--ray_altitude_range", nargs=2, type=float, default=None,
                   help="[top, ground] in metric DRB x (down), e.g. [-60, 2]: rays are truncated "
                        "to the slab between these planes; the top of the tallest structure you "
                        "care about, then ground level")
    g.add_argument("--near", type=float, default=1, help="near plane in metres")
    g.add_argument("--far", type=float, default=None, help="far plane in metres (default: auto)")
    g.add_argument("--no_center_pixels", dest="center_pixels", default=True, action="store_false",
                   help="cast rays through pixel corners instead of centres")
    g.add_argument("--boundary_margin", type=float, default=1.15,
                   help="cells are expanded by this ratio of distances (Voronoi margin)")
    g.add_argument("--blend_weights", choices=BLEND_WEIGHTS, default=None,
                   help="how cells are weighted in the band where several answer: inverse_distance "
                        "(Mega-NeRF's; a cell's weight steps from about 0.47 to 0 at the band's edge) or tapered "
                        "(falls continuously to 0 there, no step); merge stores it (default inverse_distance), "
                        "eval uses the container's unless given, seam refinement and --agreement_blend train "
                        "through it")
    g.add_argument("--ellipse_scale_factor", type=float, default=1.1,
                   help="foreground ellipsoid scale beyond the camera bounds")
    g.add_argument("--ellipse_footprint", default=False, action="store_true",
                   help="fit the foreground ellipsoid around the ground the images see as well as around the "
                        "cameras, so rays to the ground at image edges stay in the foreground instead of going "
                        "to the background model (prepare_dataset.py turns it on for aerial captures)")
    g.add_argument("--no_ellipse_bounds", dest="ellipse_bounds", default=True, action="store_false",
                   help="use a unit sphere at the origin instead of the fitted ellipsoid")
    g.add_argument("--cluster_2d", default=False, action="store_true",
                   help="partition on (right, back) only, ignoring altitude")
    g.add_argument("--train_every", type=int, default=1, help="keep every N-th training image")
    g.add_argument("--all_val", default=False, action="store_true",
                   help="train on every left-half pixel of validation images, not only masked ones")
    g.add_argument("--foreground_bounds", nargs=6, type=float, default=None,
                   metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX", "ZMAX"),
                   help="object-centric scenes: a box in metric DRB (like ray_altitude_range) that holds "
                        "the whole foreground, e.g. -1.5 -1.5 -1.5 1.5 1.5 1.5 for NeRF-Synthetic; it "
                        "replaces the ellipsoid around the cameras (cameras may lie outside it), rays are "
                        "clipped to it and the fields' box is this box; ray_altitude_range is not needed")


def add_model_options(p: configargparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model_type", choices=["hash", "vm", "grid", "mlp"], default="hash",
                   help="field backend: hash grid (Instant-NGP), TensoRF VM, voxel grid, NeRF MLP")
    g.add_argument("--appearance_dim", type=int, default=48, help="appearance embedding width (0 = off)")
    g.add_argument("--no_bg_nerf", dest="bg_nerf", default=True, action="store_false",
                   help="no background model for rays that leave the foreground ellipsoid")
    g.add_argument("--white_background", default=False, action="store_true",
                   help="light that passes through the foreground composites onto white (NeRF-Synthetic's "
                        "protocol) instead of the last sample being opaque; needs --no_bg_nerf; stored with "
                        "the model, so evaluation renders the same way")
    g.add_argument("--pos_dir_dim", type=int, default=4, help="view-direction encoding frequencies")
    g.add_argument("--layer_dim", type=int, default=64, help="decoder MLP width")
    g.add_argument("--bg_layer_dim", type=int, default=64, help="background MLP width")
    g.add_argument("--hash_levels", type=int, default=16, help="hash grid levels")
    g.add_argument("--hash_features", type=int, default=2, help="features per hash level")
    g.add_argument("--hash_log2_size", type=int, default=19, help="log2 entries per hash level")
    g.add_argument("--hash_base_resolution", type=int, default=16, help="coarsest grid resolution")
    g.add_argument("--hash_max_resolution", type=int, default=2048,
                   help="finest grid resolution over the cell's bounding box")
    g.add_argument("--geo_feat_dim", type=int, default=15, help="feature width from density to colour net")
    g.add_argument("--pos_xyz_dim", type=int, default=12, help="mlp: position encoding frequencies")
    g.add_argument("--mlp_layers", type=int, default=8, help="mlp: trunk layers")
    g.add_argument("--mlp_width", type=int, default=256, help="mlp: trunk width")
    g.add_argument("--mlp_skip", type=int, default=4, help="mlp: layer that sees the encoded input again")
    g.add_argument("--vm_resolution", type=int, default=300, help="vm: plane and line resolution")
    g.add_argument("--vm_density_rank", type=int, default=16, help="vm: density components per plane/line pair")
    g.add_argument("--vm_appearance_rank", type=int, default=48, help="vm: appearance components per pair")
    g.add_argument("--grid_resolution", type=int, default=128, help="grid: voxels per axis")
    g.add_argument("--grid_color", choices=["mlp", "sh"], default="mlp",
                   help="grid: colour from a small decoder or from degree-2 spherical harmonics")


def add_render_options(p: configargparse.ArgumentParser) -> None:
    g = p.add_argument_group("rendering")
    g.add_argument("--coarse_samples", type=int, default=64, help="stratified samples per ray")
    g.add_argument("--fine_samples", type=int, default=64, help="importance samples per ray")
    g.add_argument("--bg_samples", type=int, default=16, help="background samples per ray")
    g.add_argument("--occupancy_resolution", type=int, default=0,
                   help="occupancy grid cells per axis (0 = none: coarse + importance sampling)")
    g.add_argument("--occupancy_candidates", type=int, default=512,
                   help="with a grid: evenly spaced candidates per ray, of which the first "
                        "coarse_samples + fine_samples in occupied cells are rendered")
    g.add_argument("--occupancy_update_interval", type=int, default=16, help="grid refresh every N steps")
    g.add_argument("--occupancy_alpha_threshold", type=float, default=0.01,
                   help="a cell is empty when a candidate step through it is more transparent than this")
    g.add_argument("--min_transmittance", type=float, default=None,
                   help="rendering without gradients through an occupancy grid stops evaluating a ray once less "
                        "light than this is left for it (0: evaluate every sample; default 1e-3 on CPU, 0 on CUDA, "
                        "where checking costs more than it saves)")
    g.add_argument("--color_min_weight", type=float, default=0.0,
                   help="rendering without gradients through an occupancy grid evaluates density at every sample "
                        "first, then colour only where a sample's compositing weight is at least this, so a pixel "
                        "loses at most this much light per skipped sample (0: one pass, colour at every sample); "
                        "pays for models whose rays hold their weight in a few samples")
    g.add_argument("--model_chunk_size", type=int, default=256 * 1024, help="points per field call")
    g.add_argument("--image_pixel_batch_size", type=int, default=16 * 1024, help="rays per render call")


def add_train_options(p: configargparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--exp_name", type=str, required=True, help="experiment folder")
    g.add_argument("--dataset_path", type=str, required=True, help="Mega-NeRF layout dataset")
    g.add_argument("--chunk_paths", type=str, nargs="+", default=None,
                   help="scratch folders for this cell's shuffled ray chunks (written on first run)")
    g.add_argument("--num_chunks", type=int, default=200, help="number of chunk files")
    g.add_argument("--disk_flush_size", type=int, default=10_000_000, help="rays held in RAM before a flush")
    g.add_argument("--cluster_mask_path", type=str, default=None, help="MASKS/<cell> to train one cell")
    g.add_argument("--container_path", type=str, default=None, help="merged container (eval)")
    g.add_argument("--ckpt_path", type=str, default=None,
                   help="train.py: resume from this checkpoint; eval.py: evaluate this whole-scene model "
                        "(e.g. EXP/models/t60.pt)")
    g.add_argument("--train_scale_factor", type=int, default=1, help="downscale training images")
    g.add_argument("--val_scale_factor", type=int, default=4, help="downscale validation images")
    g.add_argument("--batch_size", type=int, default=1024, help="rays per step")
    g.add_argument("--lr", type=float, default=None,
                   help="initial learning rate (default per backend: hash 1e-2, vm 2e-2, grid 5e-2, mlp 5e-4)")
    g.add_argument("--lr_decay_factor", type=float, default=0.1, help="lr decays by this over training")
    g.add_argument("--train_iterations", type=int, default=500000, help="steps")
    g.add_argument("--ckpt_interval", type=int, default=10000, help="checkpoint every N steps")
    g.add_argument("--train_seconds", type=float, default=None,
                   help="stop after this many seconds of training-loop wall time (chunk writing, validation, "
                        "checkpoint saving and, on CUDA, one warm-up pass for just-in-time compilation are not "
                        "counted) instead of at train_iterations, which then only sets the lr schedule of "
                        "--lr_schedule iterations (lr stays at its final value past it)")
    g.add_argument("--lr_schedule", choices=["iterations", "time"], default="iterations",
                   help="the lr decays by lr_decay_factor over train_iterations, or (time, with --train_seconds) "
                        "over the training clock, whatever the speed of the device")
    g.add_argument("--checkpoint_at_seconds", type=float, nargs="+", default=[],
                   help="also save models/t<S>.pt (the model with 'elapsed_seconds', no optimizer state) when "
                        "the training-loop clock (counted as for --train_seconds) crosses each of these marks; "
                        "they are never rotated away; evaluate one with eval.py --ckpt_path")
    g.add_argument("--val_interval", type=int, default=500001, help="validate every N steps")
    g.add_argument("--no_amp", dest="amp", default=True, action="store_false",
                   help="no mixed precision (default on CUDA: fields run in bf16 for training and evaluation)")
    g.add_argument("--random_seed", type=int, default=42)
    g.add_argument("--device", type=str, default=None, help="cpu or cuda[:i] (default: cuda if available)")
    g.add_argument("--num_threads", type=int, default=None, help="CPU threads for torch")
    g.add_argument("--val_protocol", choices=["mega_nerf", "held_out"], default="mega_nerf",
                   help="mega_nerf: left halves of val images are trained, right halves scored; "
                        "held_out: val images are never trained, whole images scored")
    g.add_argument("--log_interval", type=int, default=50, help="TensorBoard scalars every N steps")


def add_regularizer_options(p: configargparse.ArgumentParser) -> None:
    g = p.add_argument_group("regularisers for sparse views")
    g.add_argument("--distortion_loss_weight", type=float, default=0.0, metavar="WEIGHT",
                   help="weight of Mip-NeRF 360's distortion loss (0 = off): pulls each ray's weight together, "
                        "against haze and floaters that fit the training views but no other")
    g.add_argument("--coarse_to_fine", type=float, default=0.0, metavar="FRACTION",
                   help="hash grids start with --coarse_to_fine_levels levels and switch the finer ones on one "
                        "after another until this fraction of training (0 = all levels from the start)")
    g.add_argument("--coarse_to_fine_levels", type=int, default=4, help="hash levels in use at the start")


def add_agreement_options(p: configargparse.ArgumentParser) -> None:
    g = p.add_argument_group("neighbour agreement (cells that agree at their borders)")
    g.add_argument("--neighbor_agreement", type=float, default=0.0, metavar="WEIGHT",
                   help="weight of the agreement loss (0 = off): in the overlap band where the container blends "
                        "this cell with a neighbour, the cell's clamped log-density and colour at its training "
                        "samples are pulled toward those of the neighbours that are already trained (their final "
                        "checkpoints in PREFIX<j>, frozen, loaded when first needed), weighted by the neighbour's "
                        "blend weight; neighbours still training are not used; a cell without trained "
                        "neighbours trains exactly as without the option; needs --cluster_mask_path.  The term "
                        "is a squared log-density difference, far larger than the photometric loss: use 0.01 or "
                        "less (0.1 and 1 cost 0.5 and 1.3 dB overall in bench/seams.py)")
    g.add_argument("--agreement_blend", action="store_true",
                   help="render this cell's training rays through the blend the container will use: wherever "
                        "a trained neighbour's routing weight is non-zero, density and colour are the routing-"
                        "weighted mean of this cell's and the trained neighbours' (frozen) predictions, "
                        "renormalised over the cells trained so far, so the cell learns what the merged model "
                        "shows at its borders instead of a copy of its neighbours; on its own (without "
                        "--neighbor_agreement) or with it; needs --cluster_mask_path")
    g.add_argument("--agreement_margin", type=float, default=None,
                   help="the band: samples where routing with this margin (a ratio of centroid distances, like "
                        "--boundary_margin, >= 1) gives both this cell and the neighbour a weight "
                        "(default: --boundary_margin, the band the container blends in)")
    g.add_argument("--agreement_appearance", type=float, default=0.0, metavar="WEIGHT",
                   help="with --neighbor_agreement or --agreement_blend: a fresh cell's appearance embeddings start from the trained "
                        "neighbours' rows of the same images (averaged), and this weight keeps them close "
                        "(mean squared distance per aligned row); 0 (default) = neither: the embeddings are the "
                        "cell's own, from zero.  On the brighton flight 0.01 cost 0.64 dB overall and raised the "
                        "border pixels' error; on the synthetic city it made no difference (bench/seams.py)")
    g.add_argument("--agreement_prefix", type=str, default=None,
                   help="cell j's experiment folder is AGREEMENT_PREFIX<j> (default: --exp_name less its "
                        "trailing cell index, e.g. EXP-3 -> EXP-, the layout of train_cells and "
                        "merge_submodules.py --ckpt_prefix)")


def add_depth_options(p: configargparse.ArgumentParser) -> None:
    g = p.add_argument_group("sparse depth supervision (structure-from-motion tracks, DS-NeRF style)")
    g.add_argument("--depth_loss_weight", type=float, default=0.0, metavar="WEIGHT",
                   help="weight of a depth loss (0 = off) on the pixels of training images where a sparse SfM "
                        "point was observed (DATASET/train/sparse_depth/, written by scripts/prepare_dataset.py "
                        "from a COLMAP model): a Huber loss on the relative error of the rendered depth (expected "
                        "distance along the ray), weighted by each point's confidence (reprojection error, track "
                        "length), averaged over the supervised rays of the step")
    g.add_argument("--depth_rays_per_batch", type=int, default=256,
                   help="with --depth_loss_weight: observed pixels (of this cell's mask, with masks) drawn each "
                        "step and rendered with the batch for the depth loss only, since random batches rarely "
                        "hold one")
    g.add_argument("--depth_loss_decay", type=float, default=1.0,
                   help="the depth loss weight is multiplied by this over training (like --lr_decay_factor; "
                        "1 = constant), so the photometric loss refines what the sparse points start")


def train_parser() -> configargparse.ArgumentParser:
    p = new_parser("Train one cell's submodule (with --cluster_mask_path) or one model on the whole scene.")
    add_scene_options(p)
    add_model_options(p)
    add_render_options(p)
    add_train_options(p)
    add_agreement_options(p)
    add_depth_options(p)
    add_regularizer_options(p)
    return p


def refine_seams_parser() -> configargparse.ArgumentParser:
    """train.py's options plus the refinement's (``scripts/refine_seams.py``)."""
    p = train_parser()
    p.description = ("Refine a trained grid at its seams: each cell, one after the other, trains a few more "
                     "iterations at its schedule's final learning rate with its rays rendered through the "
                     "blend the merged container shows, with every other cell trained and frozen. Cell k is "
                     "EXP_NAME-k (chunks CHUNK_PATHS-k, masks CLUSTER_MASK_PATH/k), as train_cells trains it.")
    for action in p._actions:
        if action.dest == "exp_name":
            action.help = "experiment prefix: cell k is EXP_NAME-k (trained by train_cells or the job list)"
        elif action.dest == "cluster_mask_path":
            action.help = "the mask folder (MASKS, with params.pt) the cells were trained with"
            action.required = True
        elif action.dest == "container_path":  # eval's option; the cells come from EXP_NAME-k
            action.help = configargparse.SUPPRESS
    g = p.add_argument_group("seam refinement")
    g.add_argument("--seam_refine_iterations", type=int, default=300,
                   help="iterations each cell trains through the blend (its newest checkpoint becomes "
                        "iteration N + this; the trained one at N is kept)")
    g.add_argument("--cells", type=int, nargs="+", default=None,
                   help="refine only these cells (default: every trained cell), in this order")
    return p


def train_cells_parser() -> configargparse.ArgumentParser:
    """train.py's options, for every cell of a grid at once (``mega_nerf.train_cells``)."""
    p = train_parser()
    p.description = ("Train every cell of a grid under torch.distributed.run: each rank (or group of "
                     "--gpus_per_cell ranks) takes the next untrained cell from a queue shared by every rank. "
                     "Cell k trains in EXP_NAME-k with chunks in CHUNK_PATHS-k and masks "
                     "CLUSTER_MASK_PATH/k, the layout of the parscript job list.")
    for action in p._actions:
        if action.dest == "exp_name":
            action.help = "experiment prefix: cell k trains in EXP_NAME-k; the grid's summary goes to EXP_NAME/"
        elif action.dest == "chunk_paths":
            action.help = "scratch prefixes: cell k's ray chunks go to CHUNK_PATHS-k (default: EXP_NAME-k/chunks)"
        elif action.dest == "cluster_mask_path":
            action.help = "the mask folder (MASKS, with params.pt): every cell that some ray reaches is trained"
            action.required = True
        elif action.dest == "container_path":  # eval's option; nothing here reads it
            action.help = configargparse.SUPPRESS
    g = p.add_argument_group("cells")
    g.add_argument("--cells", type=int, nargs="+", default=None,
                   help="train only these cells (default: every cell some ray reaches)")
    g.add_argument("--gpus_per_cell", type=int, default=1,
                   help="ranks that train one cell together, data-parallel (gradients all-reduced); a "
                        "divisor of the processes per node")
    g.add_argument("--chunks_only", default=False, action="store_true",
                   help="only write every cell's ray chunks (in parallel over the ranks), no training")
    g.add_argument("--cell_heartbeat_timeout", type=float, default=120.0,
                   help="seconds without a heartbeat after which a cell held by a rank is taken over by "
                        "another, from its last checkpoint")
    g.add_argument("--data_parallel_timeout", type=float, default=1800.0,
                   help="seconds a data-parallel group waits in a collective before it fails")
    g.add_argument("--progress_interval", type=float, default=10.0,
                   help="seconds between the grid's progress updates on rank 0")
    return p


def eval_parser() -> configargparse.ArgumentParser:
    p = train_parser()
    p.description = ("Evaluate a merged container (--container_path) or one model's checkpoint (--ckpt_path) "
                     "on the validation images (PSNR, SSIM, LPIPS, speed).")
    g = p.add_argument_group("evaluation")
    g.add_argument("--output_path", type=str, default=None,
                   help="where metrics and images go (default: EXP_NAME/eval)")
    g.add_argument("--max_val_images", type=int, default=None, help="evaluate only the first N")
    g.add_argument("--seam_metrics", default=False, action="store_true",
                   help="containers: also score the pixels whose visible surface lies in a band where cells "
                        "blend (PSNR, mean absolute colour error, and how far the cells' colours there differ) "
                        "against the other pixels; adds 'seams' to metrics.json (mega_nerf.evaluation.seams)")
    return p


def validate_common(args: argparse.Namespace) -> None:
    """Checks that argparse cannot express."""
    if getattr(args, "ray_altitude_range", None) is not None:
        top, ground = args.ray_altitude_range
        require(top < ground, f"--ray_altitude_range [{top}, {ground}]: the first value (top, "
                              f"metric DRB x = -altitude) must be smaller than the second (ground)")
    require(args.boundary_margin >= 1, f"--boundary_margin must be >= 1, got {args.boundary_margin}")
    for name in ("train_scale_factor", "val_scale_factor", "train_every"):
        if getattr(args, name, None) is not None:
            require(getattr(args, name) >= 1, f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("batch_size", "train_iterations", "ckpt_interval", "num_chunks", "coarse_samples"):
        if getattr(args, name, None) is not None:
            require(getattr(args, name) >= 1, f"--{name} must be >= 1, got {getattr(args, name)}")
    if getattr(args, "distortion_loss_weight", None) is not None:
        require(args.distortion_loss_weight >= 0,
                f"--distortion_loss_weight must be >= 0, got {args.distortion_loss_weight:g}")
    if getattr(args, "coarse_to_fine", None) is not None:
        require(0 <= args.coarse_to_fine <= 1, f"--coarse_to_fine must be in [0, 1], got {args.coarse_to_fine:g}")
        require(args.coarse_to_fine_levels >= 1,
                f"--coarse_to_fine_levels must be >= 1, got {args.coarse_to_fine_levels}")
    if getattr(args, "min_transmittance", None) is not None:
        require(0 <= args.min_transmittance < 1, f"--min_transmittance must be in [0, 1), got {args.min_transmittance:g}")
    if getattr(args, "color_min_weight", None) is not None:
        require(0 <= args.color_min_weight < 1, f"--color_min_weight must be in [0, 1), got {args.color_min_weight:g}")
    bounds = getattr(args, "foreground_bounds", None)
    if bounds is not None:
        require(all(lo < hi for lo, hi in zip(bounds[:3], bounds[3:])),
                f"--foreground_bounds {' '.join(f'{v:g}' for v in bounds)}: each minimum (first three values) "
                f"must be smaller than its maximum (last three)")
    if getattr(args, "white_background", False):
        require(not args.bg_nerf, "--white_background needs --no_bg_nerf: with a background model no light "
                                  "is left to composite onto white")
    seconds = getattr(args, "train_seconds", None)
    if seconds is not None:
        require(seconds > 0, f"--train_seconds must be > 0, got {seconds:g}")
    marks = getattr(args, "checkpoint_at_seconds", None) or []
    require(all(m > 0 for m in marks), f"--checkpoint_at_seconds must all be > 0, got {marks}")
    if getattr(args, "neighbor_agreement", 0.0):
        require(args.neighbor_agreement >= 0, f"--neighbor_agreement must be >= 0, got {args.neighbor_agreement:g}")
        require(args.agreement_appearance >= 0,
                f"--agreement_appearance must be >= 0, got {args.agreement_appearance:g}")
    if getattr(args, "agreement_margin", None) is not None:
        require(args.agreement_margin >= 1, f"--agreement_margin must be >= 1, got {args.agreement_margin:g}")
    if getattr(args, "depth_loss_weight", 0.0):
        require(args.depth_loss_weight >= 0, f"--depth_loss_weight must be >= 0, got {args.depth_loss_weight:g}")
        require(args.depth_rays_per_batch >= 0,
                f"--depth_rays_per_batch must be >= 0, got {args.depth_rays_per_batch}")
        require(args.depth_loss_decay > 0, f"--depth_loss_decay must be > 0, got {args.depth_loss_decay:g}")
    if getattr(args, "lr_schedule", "iterations") == "time":
        require(seconds is not None, "--lr_schedule time needs --train_seconds")
    if seconds is not None and marks:
        require(max(marks) <= seconds, f"--checkpoint_at_seconds {max(marks):g} is beyond --train_seconds "
                                       f"{seconds:g}: it would never be reached")


def parse(parser: configargparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse, turning a missing or unreadable config file into a one-line :class:`UserError`."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    for i, token in enumerate(tokens):
        name, _, value = token.partition("=")
        if name in ("--config_file", "--config"):
            path = value or (tokens[i + 1] if i + 1 < len(tokens) else "")
            require(os.path.isfile(path), f"{name} {path}: config file does not exist")
    try:
        args = parser.parse_args(argv)
    except OSError as e:
        raise UserError(f"cannot read config: {e}") from None
    validate_common(args)
    # Which options the command line itself set (not a config file, not a default): a setting stored
    # with a model (a student's render settings) gives way only to these.
    given = {token.partition("=")[0] for token in tokens if token.startswith("--")}
    args.command_line = sorted({a.dest for a in parser._actions if given & set(a.option_strings)})
    return args


def apply_render_settings(args: argparse.Namespace, model, where: str) -> dict:
    """Set the render flags stored with ``model`` (``render_settings``, e.g. a distilled student's
    ``occupancy_candidates``) on ``args``, except those given on the command line; returns the ones set."""
    applied = {}
    for name, value in (getattr(model, "render_settings", None) or {}).items():
        if hasattr(args, name) and name not in getattr(args, "command_line", ()) and getattr(args, name) != value:
            applied[name] = value
            setattr(args, name, value)
    if applied:
        flags = ", ".join(f"--{k} {v}" for k, v in applied.items())
        print(f"{where}: rendering with {flags}, as stored with the model (set the flag on the command line to "
              f"override)", flush=True)
    return applied
