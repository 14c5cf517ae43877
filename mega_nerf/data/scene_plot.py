"""``scripts/plot_scene.py``: a picture of where the scene sits, and the checks behind it.

One PNG with a top view and two side views, all in metres of the user's frame (altitude = -DRB x
upwards; east / north when the dataset came from a z-up ENU world): cameras with small frusta
(train and val in two colours), the scene's points (``points3d.pt``, or ground-truth depth maps),
the altitude planes of ``ray_altitude_range``, the foreground ellipsoid (or ``foreground_bounds``
box) exactly as training computes it, and the cells (``MASKS/params.pt`` or ``--grid_dim``) as a
nearest-centroid map with each cell's index.  The warnings of :mod:`mega_nerf.data.scene_check`
are printed on the picture, on the console and into ``<output stem>_check.json``.
"""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from mega_nerf.config import add_scene_options, new_parser, parse
from mega_nerf.data.scene_check import (SceneInputs, SceneReport, add_check_options, check_scene, fmt,
                                        load_scene_inputs, report_json)
from mega_nerf.errors import cli_entry, require
from mega_nerf.io_utils import atomic_write_text, atomic_write_with

TRAIN_COLOR, VAL_COLOR = "#1f5fbf", "#e07000"
TOP_COLOR, GROUND_COLOR, FOREGROUND_COLOR = "#d62728", "#7a4a12", "#9b30c8"
#: Frusta drawn per view at most (cameras beyond are dots).
MAX_FRUSTA = 400

# A view: (horizontal DRB axis, its sign), (vertical DRB axis, its sign); metric DRB in, plot out.
TOP_VIEW = ((1, 1.0), (2, -1.0))  # east / DRB y right, north / -DRB z up: a map seen from above
SIDE_Y = ((1, 1.0), (0, -1.0))  # altitude against DRB y, seen from +z (the south for ENU)
SIDE_Z = ((2, -1.0), (0, -1.0))  # altitude against -DRB z, seen from +y (the east for ENU)


def plot_parser() -> argparse.ArgumentParser:
    p = new_parser("Draw where the cameras, the scene's points, the altitude planes, the foreground ellipsoid "
                   "and the cells lie (top and side views, metres) and check they agree.")
    add_scene_options(p)
    add_check_options(p)
    p.add_argument("--output", type=str, default="scene.png",
                   help="PNG to write; the check's summary goes next to it as <stem>_check.json")
    return p


def _project(points: np.ndarray, view) -> tuple:
    (h, hs), (v, vs) = view
    return hs * points[..., h], vs * points[..., v]


def _axis_names(inputs: SceneInputs) -> dict:
    unit = inputs.frame.unit
    if inputs.frame.enu:
        return {(1, 1.0): f"east [{unit}]  (DRB y)", (2, -1.0): f"north [{unit}]  (= -DRB z)",
                (0, -1.0): f"altitude [{unit}]  (= -DRB x)"}
    return {(1, 1.0): f"DRB y (right) [{unit}]", (2, -1.0): f"-DRB z (forward; z is 'back') [{unit}]",
            (0, -1.0): f"altitude [{unit}]  (= -DRB x; DRB x points down)"}


def _frusta(inputs: SceneInputs, length: float) -> tuple:
    """``(apex (N, 3), corners (N, 4, 3), is_val (N,))`` metric DRB for every camera."""
    items = inputs.dataset.train + inputs.dataset.val
    apex = inputs.metric(torch.stack([m.c2w[:, 3] for m in items]))
    corners = []
    for m in items:
        fx, fy, cx, cy = (float(v) for v in m.intrinsics)
        d = np.array([[(i - cx) / fx, -(j - cy) / fy, -1.0] for i, j in ((0, 0), (m.W, 0), (m.W, m.H), (0, m.H))])
        corners.append(d @ m.c2w[:, :3].double().numpy().T)
    corners = apex[:, None, :] + length * np.stack(corners)
    return apex, corners, np.array([m.split == "val" for m in items])


def _subsample(count: int, limit: int, seed: int = 0) -> np.ndarray:
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def _limits(values: Sequence[np.ndarray], pad: float = 0.06) -> tuple:
    v = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in values if np.size(x)])
    lo, hi = float(v.min()), float(v.max())
    span = max(hi - lo, 1e-6)
    return lo - pad * span, hi + pad * span


def _cell_raster(inputs: SceneInputs, xlim, ylim, resolution: int = 420) -> tuple:
    """RGBA nearest-centroid map of the top view (fills and borders) and the cell colours."""
    from matplotlib import colormaps

    u = np.linspace(*xlim, resolution)
    v = np.linspace(*ylim, resolution)
    uu, vv = np.meshgrid(u, v)  # row 0 = bottom (imshow origin='lower')
    ds = inputs.dataset
    origin, scale = ds.origin_drb.double().numpy(), ds.pose_scale_factor
    # Plot (u, v) = (y, -z) metric -> normalised (y, z); cells depend on (y, z) only (centroids share x).
    grid = np.stack([(uu - origin[1]) / scale, (-vv - origin[2]) / scale], -1).reshape(-1, 2)
    cents = inputs.centroids[:, 1:].double().numpy()
    label = ((grid[:, None, :] - cents[None]) ** 2).sum(-1).argmin(1).reshape(uu.shape)
    cmap = colormaps["Set3"]
    colors = np.array([cmap(i % 12) for i in range(len(cents))])
    rgba = colors[label].copy()
    rgba[..., 3] = 0.22
    border = np.zeros_like(label, dtype=bool)
    border[:, 1:] |= label[:, 1:] != label[:, :-1]
    border[1:, :] |= label[1:, :] != label[:-1, :]
    rgba[border] = (0.15, 0.15, 0.15, 0.9)
    return rgba, colors


def draw_scene(inputs: SceneInputs, report: SceneReport, output: Path, max_points: int = 20000,
               dpi: int = 100) -> Path:
    """Write the picture to ``output`` (PNG, atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse, Patch, Rectangle

    ds, bounds, unit = inputs.dataset, inputs.bounds, inputs.frame.unit
    scale = ds.pose_scale_factor
    names = _axis_names(inputs)
    cams = inputs.metric(ds.camera_positions)
    center = inputs.metric(torch.tensor(bounds.center))
    radius = np.asarray(bounds.radius) * scale
    alt = bounds.altitude_range
    planes = None if alt is None else [-(a * scale + float(ds.origin_drb[0])) for a in alt]  # altitudes

    pts = colors = outside_slab = None
    if inputs.points is not None and len(inputs.points):
        keep = _subsample(len(inputs.points), max_points)
        pts = inputs.metric(inputs.points[keep])
        if inputs.point_colors is not None:
            colors = inputs.point_colors[keep].numpy() / 255.0
        if alt is not None:
            x = inputs.points[:, 0]
            out = ((x < alt[0]) | (x > alt[1])).nonzero().reshape(-1).numpy()
            outside_slab = inputs.metric(inputs.points[out[_subsample(len(out), 3000, seed=1)]]) if len(out) else None

    # Extents: cameras, the bulk of the points, the foreground, the planes, the centroids.
    centroids = None if inputs.centroids is None else inputs.metric(inputs.centroids)
    horizontal = [cams[:, 1:]]
    if pts is not None:
        horizontal.append(np.percentile(pts[:, 1:], [0.5, 99.5], axis=0))
    horizontal.append(np.stack([center[1:] - radius[1:], center[1:] + radius[1:]]))
    span = float(np.ptp(np.concatenate(horizontal), axis=0).max())
    frustum_length = 0.06 * span
    apex, corners, is_val = _frusta(inputs, frustum_length)

    lines = [("WARNING: " + w, "#b00000") for w in report.warnings] + [("note: " + n, "#555555") for n in report.notes]
    if not report.warnings:
        checked = ["cameras above the ground plane" if inputs.bounds.altitude_range is not None else
                   "foreground " + ("box" if inputs.bounds.box else "ellipsoid") + " around the cameras"]
        if report.summary["points"]["count"]:
            checked.append("points inside the altitude slab and the foreground")
        if inputs.centroids is not None:
            checked.append("every cell seen by a camera")
        lines.insert(0, ("checks passed: " + ", ".join(checked), "#1a7f1a"))
    lines = [(textwrap.fill(text, 215, subsequent_indent="    "), color) for text, color in lines[:8]]
    text_rows = sum(text.count("\n") + 1 for text, _ in lines)
    height = 9.5 + 0.2 * text_rows
    fig = Figure(figsize=(16, height), dpi=dpi)
    FigureCanvasAgg(fig)
    legend_top = 0.25 + 0.2 * text_rows + 0.6  # inches from the bottom: warnings, then the legend
    bottom = (legend_top + 0.55) / height
    gs = fig.add_gridspec(2, 2, width_ratios=[1.05, 1], left=0.055, right=0.985, top=1 - 1.3 / height,
                          bottom=bottom, wspace=0.16, hspace=0.3)
    ax_top = fig.add_subplot(gs[:, 0])
    ax_sides = [fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, 1])]
    views = [(ax_top, TOP_VIEW), (ax_sides[0], SIDE_Y), (ax_sides[1], SIDE_Z)]

    for ax, view in views:
        side = view is not TOP_VIEW
        (hax, hs), (vax, vs) = view
        # Limits first (the cell raster needs them).
        hv = [_project(cams, view), _project(corners.reshape(-1, 3), view),
              _project(np.stack([center - radius, center + radius]), view)]
        if pts is not None:
            ph, pv = _project(pts, view)
            hv.append((np.percentile(ph, [0.5, 99.5]), np.percentile(pv, [0.5, 99.5])))
        if centroids is not None and not side:
            hv.append(_project(centroids, view))
        xlim = _limits([h for h, _ in hv])
        ylim = _limits([v for _, v in hv] + ([np.asarray(planes)] if side and planes else []))
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)

        if not side and centroids is not None:
            rgba, cell_colors = _cell_raster(inputs, xlim, ylim)
            ax.imshow(rgba, origin="lower", extent=(*xlim, *ylim), interpolation="nearest", zorder=0, aspect="auto")
            unseen = set(report.summary.get("cells", {}).get("unseen", []))
            for k, (h, v) in enumerate(zip(*_project(centroids, view))):
                ax.plot(h, v, "k+", ms=9, mew=1.5, zorder=6)
                ax.annotate(f"cell {k}" + (" (no camera!)" if k in unseen else ""), (h, v), xytext=(4, 4),
                            textcoords="offset points", fontsize=11, fontweight="bold", zorder=7,
                            color="#b00000" if k in unseen else "black",
                            bbox=dict(boxstyle="round,pad=0.2", fc=(*cell_colors[k][:3], 0.75), ec="none"))

        if side and planes is not None:
            top, ground = planes
            ax.axhspan(ground, top, color="#2ca02c", alpha=0.06, zorder=0)
            ax.axhline(top, color=TOP_COLOR, ls="--", lw=1.6, zorder=5)
            ax.axhline(ground, color=GROUND_COLOR, ls="-", lw=1.6, zorder=5)
            label = dict(transform=ax.get_yaxis_transform(), ha="right", fontsize=9, zorder=8,
                         bbox=dict(fc="white", alpha=0.5, ec="none", pad=0.5))
            ax.text(0.995, top, f"top plane {fmt(top)} {unit}", va="bottom", color=TOP_COLOR, **label)
            ax.text(0.995, ground, f"ground plane {fmt(ground)} {unit}", va="top", color=GROUND_COLOR, **label)

        if pts is not None:
            ph, pv = _project(pts, view)
            order = np.argsort(pv) if not side else np.arange(len(ph))  # top view: highest points drawn last
            c = colors[order] if colors is not None else None
            ax.scatter(ph[order], pv[order], s=2 if len(ph) > 5000 else 4, c=c if c is not None else
                       -pts[order, 0], cmap=None if c is not None else "viridis", linewidths=0, zorder=2,
                       rasterized=True)
            if side and outside_slab is not None:
                oh, ov = _project(outside_slab, view)
                ax.scatter(oh, ov, s=14, marker="x", c="red", linewidths=0.8, zorder=4)

        # Foreground ellipsoid (its section through the centre) or box.
        ch, cv = _project(center[None], view)
        if bounds.box:
            ax.add_patch(Rectangle((ch[0] - radius[hax], cv[0] - radius[vax]), 2 * radius[hax], 2 * radius[vax],
                                   fill=False, ec=FOREGROUND_COLOR, lw=1.8, ls="-", zorder=5))
        else:
            ax.add_patch(Ellipse((ch[0], cv[0]), 2 * radius[hax], 2 * radius[vax], fill=False,
                                 ec=FOREGROUND_COLOR, lw=1.8, zorder=5))

        # Cameras: dots, plus frusta for up to MAX_FRUSTA of them.
        show = _subsample(len(apex), MAX_FRUSTA)
        for val, color in ((False, TRAIN_COLOR), (True, VAL_COLOR)):
            idx = show[is_val[show] == val]
            if len(idx):
                a = np.stack(_project(apex[idx], view), -1)  # (n, 2)
                c = np.stack(_project(corners[idx], view), -1)  # (n, 4, 2)
                segs = [np.stack([a, c[:, k]], 1) for k in range(4)]
                segs += [np.stack([c[:, k], c[:, (k + 1) % 4]], 1) for k in range(4)]
                ax.add_collection(LineCollection(np.concatenate(segs), colors=color, linewidths=0.7,
                                                 alpha=0.8, zorder=6))
            ah, av = _project(apex[is_val == val], view)
            ax.scatter(ah, av, s=10, c=color, zorder=7, linewidths=0)

        ax.set_xlabel(names[(hax, hs)])
        ax.set_ylabel(names[(vax, vs)])
        ax.grid(True, lw=0.3, alpha=0.5)
        hspan, vspan = xlim[1] - xlim[0], ylim[1] - ylim[0]
        if side:
            # Equal scales unless the scene is much wider than tall: then stretch altitude (and say so).
            exaggeration = max(1.0, (hspan / vspan) / 3.0)
            ax.set_aspect(exaggeration, adjustable="box")
            where = (("from the south, looking north", "from the east, looking west") if inputs.frame.enu else
                     ("looking along -DRB z", "looking along -DRB y"))[view is SIDE_Z]
            ax.set_title(f"side view ({where})" + (f"; altitude stretched x{exaggeration:.1f}"
                                                   if exaggeration > 1.05 else ""), fontsize=11)
        else:
            ax.set_aspect("equal", adjustable="box")
            ax.set_title("top view (looking down" + (", north up)" if inputs.frame.enu else ")"), fontsize=11)

    # Legend.
    handles = [Line2D([], [], marker="o", color=TRAIN_COLOR, ls="-", lw=0.7, ms=4,
                      label=f"train camera ({len(ds.train)}) and frustum"),
               Line2D([], [], marker="o", color=VAL_COLOR, ls="-", lw=0.7, ms=4,
                      label=f"val camera ({len(ds.val)})")]
    if pts is not None:
        handles.append(Line2D([], [], marker=".", color="grey", ls="", label=f"points: {inputs.points_source}"
                              + ("" if colors is not None else ", coloured by altitude")))
    handles.append(Patch(fill=False, ec=FOREGROUND_COLOR, lw=1.8,
                         label="foreground box (foreground_bounds)" if bounds.box else
                         "foreground ellipsoid (as training computes it)" if inputs.ellipse_bounds else
                         "unit sphere (--no_ellipse_bounds)"))
    if planes is not None:
        handles += [Line2D([], [], color=TOP_COLOR, ls="--", label=f"top plane: altitude {fmt(planes[0])} {unit} "
                                                                    f"(ray_altitude_range[0] = {fmt(-planes[0])})"),
                    Line2D([], [], color=GROUND_COLOR, label=f"ground plane: altitude {fmt(planes[1])} {unit} "
                                                             f"(ray_altitude_range[1] = {fmt(-planes[1])})")]
        if outside_slab is not None:
            handles.append(Line2D([], [], marker="x", color="red", ls="", label="points outside the altitude slab"))
    if centroids is not None:
        handles.append(Patch(fc=(0.5, 0.5, 0.5, 0.25), ec=(0.15, 0.15, 0.15), label=f"cells: {inputs.cells_source}"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, legend_top / height), ncol=4,
               fontsize=9, frameon=False)

    # Title and check results.
    s = report.summary
    kind = f", {inputs.scene_kind} capture" if inputs.scene_kind else ""
    fig.suptitle(f"{ds.path.resolve().name}: {len(ds.train)} train + {len(ds.val)} val images, pose_scale_factor "
                 f"{scale:.4g}, origin_drb [{', '.join(fmt(v) for v in ds.origin_drb.tolist())}]{kind}",
                 fontsize=14, fontweight="bold", y=1 - 0.12 / height)
    ca = s["camera_altitude"]
    sub = [f"cameras at altitude {fmt(ca['min'])} .. {fmt(ca['max'])} {unit} (median {fmt(ca['median'])})"]
    if "ray_altitude_range" in s:
        t, g = s["ray_altitude_range"]["altitude"]
        sub.append(f"ray_altitude_range [{', '.join(fmt(v) for v in s['ray_altitude_range']['drb_x'])}] "
                   f"= altitude {fmt(t)} (top) to {fmt(g)} (ground) {unit}")
    else:
        sub.append("ray_altitude_range NOT SET")
    sub2 = []
    if s["points"]["count"]:
        q = s["points"]["altitude_percentiles"]
        sub2.append(f"points' altitude at 0.1 / 1 / 50 / 99 / 99.9 %: "
                    f"{' / '.join(fmt(q[k], 3) for k in ('0.1', '1', '50', '99', '99.9'))} {unit}")
    else:
        sub2.append("no points (no points3d.pt or depth maps): only the cameras tell where the scene is")
    if inputs.frame.note:
        sub2.append(inputs.frame.note)
    fig.text(0.5, 1 - 0.5 / height, ";   ".join(sub), ha="center", va="top", fontsize=10.5)
    fig.text(0.5, 1 - 0.72 / height, ";   ".join(sub2), ha="center", va="top", fontsize=10.5)

    y = 1 - (height - 0.25 - 0.2 * text_rows) / height
    for text, color in lines:
        fig.text(0.012, y, text, fontsize=9.5, color=color, va="top")
        y -= 0.2 * (text.count("\n") + 1) / height

    output = Path(output)
    atomic_write_with(output, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    return output


def check_json_path(output: Path) -> Path:
    """Where the summary of ``output``'s check goes: ``<stem>_check.json`` beside it (never the
    synthetic city's own ``scene.json``)."""
    output = Path(output)
    return output.with_name(f"{output.stem}_check.json")


def plot_scene(args: argparse.Namespace) -> tuple:
    """Check the scene, draw it, write the JSON summary.  Returns ``(png, json, report)``."""
    output = Path(args.output)
    require(output.suffix.lower() == ".png", f"--output {output}: must be a .png file")
    require(args.max_points >= 0, f"--max_points must be >= 0, got {args.max_points}")
    inputs = load_scene_inputs(args)
    report = check_scene(inputs)
    draw_scene(inputs, report, output, args.max_points)
    json_path = check_json_path(output)
    atomic_write_text(report_json(report), json_path)
    return output, json_path, report


def write_dataset_plot(dataset_path: Path, config_path: Optional[Path], output: Path,
                       grid_dim: Optional[Sequence[int]] = None) -> tuple:
    """The picture of a dataset with its config (what ``prepare_dataset.py`` calls at the end)."""
    argv = ["--dataset_path", str(dataset_path), "--output", str(output)]
    if config_path is not None:
        argv += ["--config_file", str(config_path)]
    if grid_dim is not None:
        argv += ["--grid_dim", *map(str, grid_dim)]
    return plot_scene(parse(plot_parser(), argv))


def main(argv=None) -> None:
    png, json_path, report = plot_scene(parse(plot_parser(), argv))
    print(report.text())
    print(f"wrote {png} (and {json_path})")


def cli() -> None:
    """Console entry point."""
    cli_entry(main)()
