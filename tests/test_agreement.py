"""Cells that agree (``--neighbor_agreement``) and the seam metrics: the pure agreement losses,
the option being a no-op without trained neighbours, a cell recording the neighbours it agreed
with, the seam pixel selection on a known geometry, and a tiny grid trained with the option,
merged and evaluated with ``--seam_metrics``."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers_pipeline import make_nadir_dataset, nadir_c2w

from mega_nerf.config import eval_parser, parse, train_parser
from mega_nerf.container.merge import merge, merge_parser
from mega_nerf.errors import UserError
from mega_nerf.evaluation.evaluator import evaluate, seam_line
from mega_nerf.evaluation.seams import (
    image_pixel_groups,
    summarize_seams,
)
from mega_nerf.geometry.bounds import SceneBounds, inside_foreground
from mega_nerf.partition.create_masks import create_cluster_masks, mask_parser
from mega_nerf.training.agreement import (
    agreement_loss,
    appearance_alignment_loss,
    appearance_targets,
    clamped_log_density,
)
from mega_nerf.training.neighbor_agreement import finished_checkpoint, neighbor_prefix
from mega_nerf.training.trainer import Trainer

ITERATIONS = 12
TINY = ["--batch_size", "64", "--coarse_samples", "8", "--fine_samples", "8", "--bg_samples", "2",
        "--hash_levels", "4", "--hash_log2_size", "10", "--hash_max_resolution", "64", "--layer_dim", "16",
        "--bg_layer_dim", "16", "--appearance_dim", "4", "--num_chunks", "2", "--num_threads", "1",
        "--log_interval", "5", "--val_scale_factor", "1", "--train_iterations", str(ITERATIONS),
        "--ckpt_interval", str(ITERATIONS)]
FLOOR = 0.5


# --------------------------------------------------------------------------- pure losses
def samples(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.randn(n, generator=g) * 2)  # both sides of the floor
    rgb = torch.rand(n, 3, generator=g)
    weight = torch.rand(n, generator=g)
    return sigma, rgb, weight


def test_agreement_loss_is_zero_for_identical_neighbours_and_positive_otherwise():
    sigma, rgb, weight = samples()
    assert (sigma < FLOOR).any() and (sigma > FLOOR).any()
    assert agreement_loss(sigma, rgb, sigma.clone(), rgb.clone(), weight, FLOOR).item() == 0.0
    # Both below the floor: agreement whatever the exact values.
    low = torch.full((4,), 0.01)
    assert agreement_loss(low, rgb[:4], low * 0.1, torch.rand(4, 3), torch.ones(4), FLOOR).item() == 0.0
    other_sigma, other_rgb, _ = samples(seed=1)
    assert agreement_loss(sigma, rgb, other_sigma, rgb, weight, FLOOR).item() > 0
    assert agreement_loss(sigma, rgb, sigma, other_rgb, weight, FLOOR).item() > 0
    # Zero weight (outside every band) and no samples: zero.
    assert agreement_loss(sigma, rgb, other_sigma, other_rgb, torch.zeros_like(weight), FLOOR).item() == 0.0
    empty = torch.zeros(0)
    assert agreement_loss(empty, torch.zeros(0, 3), empty, torch.zeros(0, 3), empty, FLOOR).item() == 0.0


def test_agreement_gradient_pulls_toward_the_neighbour():
    sigma, rgb, weight = samples()
    target_sigma, target_rgb, _ = samples(seed=2)
    # An empty cell where the neighbour sees a surface still gets a gradient (no clamp on its side).
    log_sigma = torch.log(sigma).clone()
    log_sigma[0], target_sigma[0] = math.log(FLOOR) - 5, 3 * FLOOR
    log_sigma.requires_grad_(True)
    logits = torch.logit(rgb.clamp(0.01, 0.99)).requires_grad_(True)

    @torch.no_grad()
    def distance():
        a = clamped_log_density(torch.exp(log_sigma), FLOOR)
        b = clamped_log_density(target_sigma, FLOOR)
        return float((a - b).abs().sum()), float((torch.sigmoid(logits) - target_rgb).abs().sum())

    before = agreement_loss(torch.exp(log_sigma), torch.sigmoid(logits), target_sigma, target_rgb, weight, FLOOR)
    before.backward()
    assert log_sigma.grad[0] < 0  # raise the empty sample's density toward the neighbour's
    d_before = distance()
    with torch.no_grad():
        log_sigma -= 0.5 * log_sigma.grad / weight.max()
        logits -= 5.0 * logits.grad
    after = agreement_loss(torch.exp(log_sigma), torch.sigmoid(logits), target_sigma, target_rgb, weight, FLOOR)
    d_after = distance()
    assert after < before
    assert d_after[0] < d_before[0] and d_after[1] < d_before[1]


def test_appearance_alignment_targets_only_learned_rows():
    a = torch.zeros(5, 3)
    a[1] = 1.0
    a[2] = 2.0
    b = torch.zeros(5, 3)
    b[2] = 4.0
    b[3] = -1.0
    target, rows = appearance_targets([a, b])
    assert rows.tolist() == [False, True, True, True, False]
    assert torch.allclose(target[2], torch.full((3,), 3.0)) and torch.allclose(target[1], torch.ones(3))
    assert appearance_alignment_loss(target.clone(), target, rows).item() == 0.0
    moved = target.clone()
    moved[0] = 9.0  # a row no neighbour learned: free
    assert appearance_alignment_loss(moved, target, rows).item() == 0.0
    moved[3] += 1.0
    assert appearance_alignment_loss(moved, target, rows).item() == pytest.approx(3.0 / 3)


# --------------------------------------------------------------------------- seam pixels
def test_seam_pixels_are_those_that_look_at_a_border():
    """A nadir camera over the border y = 0 between two cells, looking at the plane x = 0.3: the
    columns where the answering cells change are seam pixels, columns well inside a cell are not."""
    centroids = torch.tensor([[0.0, -0.5, 0.0], [0.0, 0.5, 0.0]])
    bounds = SceneBounds(origin_drb=[0.0, 0.0, 0.0], pose_scale_factor=1.0, near=0.0, far=None,
                         altitude_range=None, center=[0.0, 0.0, 0.0], radius=[1.0, 1.0, 1.0])
    assert inside_foreground(torch.tensor([[0.3, 0.0, 0.0], [0.3, 0.0, 5.0]]), bounds).tolist() == [True, False]
    W, H = 16, 4  # column j looks at y = (j + 0.5 - 8) * 0.05
    intrinsics = torch.tensor([float(W), float(W), W / 2, H / 2])
    depth = torch.full((H, W), 0.8)  # from the camera at x = -0.5 down to the plane x = 0.3

    def groups(margin, radius, d=depth):
        return image_pixel_groups(W, H, intrinsics, nadir_c2w(0.0, 0.0), d, bounds, centroids, margin, False,
                                  radius)[0]

    def columns(mask):
        return [j for j in range(W) if mask[:, j].all()]

    hard = groups(1.0, 1)  # hard routing: the seam is the border itself (columns 7 | 8), dilated by 1
    assert columns(hard["seam"]) == [6, 7, 8, 9] and not hard["seam"][:, [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]].any()
    assert columns(hard["interior"]) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15] and not hard["blend"].any()
    assert torch.equal(hard["rest"], hard["interior"] | hard["blend"])
    # Blending within margin 1.5: columns 5..10 see both cells; the seams are the band's edges.
    wide = groups(1.5, 0)
    assert columns(wide["seam"]) == [4, 5, 10, 11] and columns(wide["blend"]) == [6, 7, 8, 9]
    assert not (wide["seam"] & wide["interior"]).any() and wide["interior"][:, 0].all()
    # One flat surface: every seam pixel is a surface seam.
    assert torch.equal(hard["seam_surface"], hard["seam"]) and not hard["seam_edge"].any()
    # A roof (depth 0.4) over columns 0..7 against the ground (0.8) over 8..15: the change of
    # cells at the border is an occlusion edge too.
    roof = depth.clone()
    roof[:, :8] = 0.4
    stepped = groups(1.0, 1, roof)
    assert torch.equal(stepped["seam_edge"], stepped["seam"]) and not stepped["seam_surface"].any()
    assert columns(stepped["seam"]) == [6, 7, 8, 9]
    # A depth jump inside a cell is no seam at all.
    inner = depth.clone()
    inner[:, :3] = 0.4
    assert torch.equal(groups(1.0, 1, inner)["seam"], hard["seam"]) and not groups(1.0, 1, inner)["seam_edge"].any()
    # Visible points outside the foreground (the sky) are in no group.
    sky = groups(1.0, 1, torch.full((H, W), 50.0))
    assert not any(mask.any() for mask in sky.values())


# --------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("agreement")
    data = make_nadir_dataset(root / "dataset", n_images=9, W=16, H=12)
    create_cluster_masks(parse(mask_parser(), ["--config", str(data["config"]), "--dataset_path", str(data["path"]),
                                               "--output", str(root / "masks"), "--grid_dim", "2", "1",
                                               "--ray_samples", "32"]))
    return {"root": root, "data": data, "masks": root / "masks"}


def cell_argv(grid: dict, exp: Path, cell: int, extra=()) -> list[str]:
    return ["--config_file", str(grid["data"]["config"]), "--exp_name", f"{exp}-{cell}", "--dataset_path",
            str(grid["data"]["path"]), "--chunk_paths", str(grid["root"] / "chunks" / str(cell)),
            "--cluster_mask_path", str(grid["masks"] / str(cell)), *TINY, *extra]


def train(grid: dict, exp: Path, cell: int, extra=()) -> Trainer:
    trainer = Trainer(parse(train_parser(), cell_argv(grid, exp, cell, extra)))
    trainer.show_progress = False
    trainer.train()
    return trainer


def final_state(exp: Path, cell: int) -> dict:
    return torch.load(Path(f"{exp}-{cell}") / "models" / f"{ITERATIONS}.pt", map_location="cpu", weights_only=False)


AGREE = ["--neighbor_agreement", "1.0", "--agreement_appearance", "0.1"]


@pytest.fixture(scope="module")
def trained(grid) -> dict:
    """Cell 0 trained with and without the option (no neighbour is trained yet), then cell 1 with
    the option (cell 0 is its trained neighbour) and without it."""
    root = grid["root"]
    plain, agree = root / "plain" / "exp", root / "agree" / "exp"
    for cell in (0, 1):
        train(grid, plain, cell)
    first = train(grid, agree, 0, AGREE)
    second = train(grid, agree, 1, AGREE)
    return {"plain": plain, "agree": agree, "first": first, "second": second}


def test_option_is_a_no_op_without_trained_neighbours(trained):
    assert not trained["first"].agreeing
    a, b = final_state(trained["plain"], 0), final_state(trained["agree"], 0)
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key
    assert b["agreement"]["neighbors"] == {} and b["agreement"]["agreed_with"] == []


def test_a_cell_agrees_with_its_trained_neighbour_and_records_it(trained):
    second = trained["second"]
    assert second.agreeing and sorted(second.agreement.paths) == [0]
    assert second.agreement.used == {0} and "field" in second.agreement_parts  # band samples were compared
    assert second.agreement.models[0] is not None and not any(p.requires_grad for p in
                                                              second.agreement.models[0].parameters())
    state = final_state(trained["agree"], 1)
    record = state["agreement"]
    assert record["agreed_with"] == [0] and record["appearance_from"] == [0]
    assert record["neighbors"]["0"]["checkpoint"].endswith(f"{ITERATIONS}.pt")
    summary = json.loads((Path(f"{trained['agree']}-1") / "train_summary.json").read_text())
    assert summary["agreement"]["agreed_with"] == [0]
    plain = final_state(trained["plain"], 1)
    differs = [k for k, v in plain["model_state_dict"].items() if not torch.equal(v, state["model_state_dict"][k])]
    assert differs  # the agreement terms changed the training


def test_appearance_weight_zero_leaves_the_embeddings_alone(grid, trained, tmp_path):
    """``--agreement_appearance 0``: the field term alone; the cell's embeddings are its own from zero."""
    exp = tmp_path / "exp"
    shutil.copytree(Path(f"{trained['agree']}-0"), Path(f"{exp}-0"))  # the trained neighbour
    second = train(grid, exp, 1, ["--neighbor_agreement", "1.0", "--agreement_appearance", "0"])
    assert second.agreeing and second.agreement.used == {0} and "field" in second.agreement_parts
    assert "appearance" not in second.agreement_parts and second.agreement.appearance == {}
    assert final_state(exp, 1)["agreement"]["appearance_from"] == []


def test_unfinished_neighbours_are_not_used(grid, tmp_path):
    exp = tmp_path / "exp"
    (Path(f"{exp}-0") / "models").mkdir(parents=True)
    torch.save({"cell": 0}, Path(f"{exp}-0") / "models" / "5.pt")  # a checkpoint, no summary: still training
    assert finished_checkpoint(Path(f"{exp}-0")) is None
    trainer = Trainer(parse(train_parser(), cell_argv(grid, exp, 1, AGREE)))
    assert not trainer.agreeing and trainer.agreement.paths == {}
    assert neighbor_prefix(Path("runs/city-12"), 12, None) == "runs/city-"
    with pytest.raises(UserError, match="agreement_prefix"):
        neighbor_prefix(Path("runs/cellA"), 3, None)
    with pytest.raises(UserError, match="cluster_mask_path"):
        argv = cell_argv(grid, exp, 1, AGREE)
        i = argv.index("--cluster_mask_path")
        Trainer(parse(train_parser(), argv[:i] + argv[i + 2:]))


def test_merged_cells_evaluate_with_seam_metrics(grid, trained, capsys):
    root, data = grid["root"], grid["data"]
    container = root / "container.pt"
    merge(parse(merge_parser(), ["--config_file", str(data["config"]), "--ckpt_prefix", f"{trained['agree']}-",
                                 "--centroid_path", str(grid["masks"] / "params.pt"), "--output", str(container)]))
    metrics = evaluate(parse(eval_parser(), [
        "--config_file", str(data["config"]), "--exp_name", str(root / "eval_exp"), "--dataset_path",
        str(data["path"]), "--container_path", str(container), "--output_path", str(root / "eval"), *TINY,
        "--seam_metrics"]))
    seams = metrics["seams"]
    assert seams["seam"]["pixels"] > 0 and seams["rest"]["pixels"] > 0
    assert seams["seam"]["psnr"] > 0 and 0 <= seams["seam"]["mean_abs_error"] <= 1
    assert seams["rest"]["pixels"] == seams["blend"]["pixels"] + seams["interior"]["pixels"]
    assert seams["seam"]["pixels"] == seams["seam_surface"]["pixels"] + seams["seam_edge"]["pixels"]
    assert 0 < seams["seam_fraction"] < 1 and seams["cell_color_gap"] >= 0
    written = json.loads((root / "eval" / "metrics.json").read_text())
    assert written["seams"]["seam"]["pixels"] == seams["seam"]["pixels"]
    assert all("seams" in r for r in written["per_image"])
    assert summarize_seams([None]) is None
    printed = capsys.readouterr().out
    assert f"seams: {100 * seams['seam_fraction']:.1f} % of the foreground pixels look at a border" in printed
    assert f"PSNR there {seams['seam']['psnr']:.2f} dB" in printed
    assert "nothing to measure" in seam_line(None)


# --------------------------------------------------------------------------- --agreement_blend
def test_blend_is_what_the_merged_container_shows(grid, trained):
    """Cell 1's predictions blended with its trained neighbour (cell 0) equal the merged
    container's at the same points, inside the band and away from it; the gradient reaches cell
    1's own share only."""
    from mega_nerf.container.container import load_container

    root, data = grid["root"], grid["data"]
    container_path = root / "blend_container.pt"
    merge(parse(merge_parser(), ["--config_file", str(data["config"]), "--ckpt_prefix", f"{trained['agree']}-",
                                 "--centroid_path", str(grid["masks"] / "params.pt"), "--output",
                                 str(container_path)]))
    container = load_container(container_path).eval()
    agreement = trained["second"].agreement
    own = trained["second"].model.eval()  # cell 1 as trained, the container's second cell
    g = torch.Generator().manual_seed(3)
    center = container.centroids.mean(0)
    spread = (container.centroids - center).abs().max(0).values.clamp_min(0.05)
    x = center + (torch.rand(512, 3, generator=g) * 2 - 1) * 2 * spread
    d = torch.nn.functional.normalize(torch.randn(512, 3, generator=g), dim=-1)
    app = torch.zeros(512, dtype=torch.long)
    with torch.no_grad():
        want_sigma, want_rgb = container.foreground(x, d, app)
    own_params = [p for p in own.parameters() if p.requires_grad]
    sigma, rgb = own.foreground(x, d, app)
    got_sigma, got_rgb = agreement.blend(x, sigma, rgb, lambda m, i: m.foreground(x[i], d[i], app[i]))
    torch.testing.assert_close(got_sigma, want_sigma, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_rgb, want_rgb, rtol=1e-4, atol=1e-5)
    weights = agreement.routing(x)
    shared, alone, none = ((weights[:, 0] > 0) & (weights[:, 1] > 0), weights[:, 1] == 0, weights[:, 0] == 0)
    assert shared.any() and alone.any() and none.any()  # the points cover both cells and the band
    # Where no trained neighbour is routed to, the cell's own values pass through unchanged.
    assert torch.equal(got_sigma[none], sigma[none].float())
    # The neighbour's share carries no gradient: points routed to cell 0 only give none.
    grads = torch.autograd.grad(got_sigma[alone].sum() + got_rgb[alone].sum(), own_params, allow_unused=True,
                                retain_graph=True)
    assert all(gr is None or not gr.any() for gr in grads)
    grads = torch.autograd.grad(got_sigma[shared].sum(), own_params, allow_unused=True)
    assert any(gr is not None and gr.any() for gr in grads)


def test_a_cell_trains_through_the_blend(grid, trained, tmp_path):
    """--agreement_blend alone: the cell trains against its trained neighbour's blend, records it,
    and ends up differently from an independent cell; it needs a cell to train."""
    exp = tmp_path / "blend" / "exp"
    extra = ["--agreement_blend", "--agreement_prefix", f"{trained['agree']}-"]
    trainer = train(grid, exp, 1, extra)
    assert trainer.agreeing and trainer.agreement.blends_rays and trainer.agreement.weight == 0
    assert trainer.agreement.used == {0} and "field" not in trainer.agreement_parts
    state = final_state(exp, 1)
    assert state["agreement"]["blend"] is True and state["agreement"]["agreed_with"] == [0]
    plain = final_state(trained["plain"], 1)
    assert any(not torch.equal(v, state["model_state_dict"][k]) for k, v in plain["model_state_dict"].items())
    argv = cell_argv(grid, tmp_path / "other", 1, extra)
    i = argv.index("--cluster_mask_path")
    with pytest.raises(UserError, match="--agreement_blend needs --cluster_mask_path"):
        Trainer(parse(train_parser(), argv[:i] + argv[i + 2:]))


# --------------------------------------------------------------------------- seam refinement
def refine_argv(grid: dict, exp: Path, iterations: int) -> list[str]:
    """Only where the cells are: their model sizes, iterations and chunks come from their hparams.txt."""
    return ["--config_file", str(grid["data"]["config"]), "--exp_name", str(exp), "--dataset_path",
            str(grid["data"]["path"]), "--cluster_mask_path", str(grid["masks"]), "--num_threads", "1",
            "--seam_refine_iterations", str(iterations)]


def copy_cells(source: Path, exp: Path) -> None:
    for cell in (0, 1):
        shutil.copytree(Path(f"{source}-{cell}"), Path(f"{exp}-{cell}"))


def test_seam_refinement_continues_each_cell_through_the_blend(grid, trained, tmp_path, capsys):
    """Each trained cell trains on through the blend with the other (the second one refined sees
    the first refined), at the schedule's final lr; the trained checkpoint is kept, a longer
    refinement resumes where a shorter one ended, merge --train_iterations takes the refined cells,
    and the control (blend=False) continues the cells alone."""
    from mega_nerf.config import refine_seams_parser
    from mega_nerf.container.merge import _final_checkpoint
    from mega_nerf.training.seam_refine import refine_seams

    exp, control = tmp_path / "refine" / "exp", tmp_path / "control" / "exp"
    copy_cells(trained["plain"], exp)
    copy_cells(trained["plain"], control)
    first = refine_seams(parse(refine_seams_parser(), refine_argv(grid, exp, 2)))
    result = refine_seams(parse(refine_seams_parser(), refine_argv(grid, exp, 4)))  # resumes at 14
    order = result["order"]
    assert sorted(order) == [0, 1] and first["order"] == order
    assert result["cells"][str(order[0])]["neighbors"] == [order[1]]
    assert result["cells"][str(order[1])]["neighbors"] == [order[0]]
    args = parse(train_parser(), cell_argv(grid, exp, 0))
    final_lr = Trainer(args).lr * args.lr_decay_factor
    for cell in (0, 1):
        cell_dir = Path(f"{exp}-{cell}")
        record = result["cells"][str(cell)]
        assert record["from_iteration"] == ITERATIONS and record["end_iteration"] == ITERATIONS + 4
        assert sorted(int(p.stem) for p in (cell_dir / "models").glob("*.pt")) == [ITERATIONS, ITERATIONS + 4]
        refined = torch.load(cell_dir / "models" / f"{ITERATIONS + 4}.pt", map_location="cpu", weights_only=False)
        assert refined["seam_refine"] == {"from_iteration": ITERATIONS, "iterations": 4, "blend": True}
        assert refined["agreement"]["blend"] is True and refined["agreement"]["agreed_with"] == [1 - cell]
        assert all(g["lr"] == pytest.approx(final_lr) for g in refined["optimizer"]["param_groups"])
        trained_state = final_state(trained["plain"], cell)["model_state_dict"]
        assert any(not torch.equal(v, refined["model_state_dict"][k]) for k, v in trained_state.items())
        summary = json.loads((cell_dir / "train_summary.json").read_text())
        assert summary["iterations"] == ITERATIONS + 4 and summary["seam_refine"]["from_iteration"] == ITERATIONS
        assert _final_checkpoint(cell_dir, ITERATIONS).name == f"{ITERATIONS + 4}.pt"
    assert json.loads((exp / "seam_refine.json").read_text())["order"] == order
    merge(parse(merge_parser(), ["--config_file", str(grid["data"]["config"]), "--ckpt_prefix", f"{exp}-",
                                 "--centroid_path", str(grid["masks"] / "params.pt"), "--output",
                                 str(tmp_path / "refined.pt"), "--train_iterations", str(ITERATIONS)]))
    assert f"0: {ITERATIONS + 4}.pt (refined from {ITERATIONS}), 1: {ITERATIONS + 4}.pt" in capsys.readouterr().out
    # --unrefined takes the checkpoints the cells were refined from: the trained weights.
    base = ["--config_file", str(grid["data"]["config"]), "--ckpt_prefix", f"{exp}-", "--centroid_path",
            str(grid["masks"] / "params.pt"), "--output", str(tmp_path / "unrefined.pt"), "--unrefined"]
    unrefined = merge(parse(merge_parser(), base))
    assert f"0: {ITERATIONS}.pt, 1: {ITERATIONS}.pt" in capsys.readouterr().out
    plain = final_state(trained["plain"], 0)["model_state_dict"]
    assert all(torch.equal(v, plain[f"fg.{k}"]) for k, v in unrefined.sub_modules[0].state_dict().items())
    with pytest.raises(UserError, match="was refined from iteration .*drop one of --unrefined"):
        merge(parse(merge_parser(), [*base, "--overwrite", "--train_iterations", str(ITERATIONS + 4)]))
    # Refined cells are not refined again.
    before = {cell: (Path(f"{exp}-{cell}") / "models" / f"{ITERATIONS + 4}.pt").stat().st_mtime_ns for cell in (0, 1)}
    again = refine_seams(parse(refine_seams_parser(), refine_argv(grid, exp, 3)))
    assert all(c["status"] == "already refined" and c["end_iteration"] == ITERATIONS + 4 for c in again["cells"].values())
    assert all((Path(f"{exp}-{c}") / "models" / f"{ITERATIONS + 4}.pt").stat().st_mtime_ns == t
               for c, t in before.items())
    # The control continues alone: no neighbour, other weights than the blend's.
    alone = refine_seams(parse(refine_seams_parser(), refine_argv(grid, control, 4)), blend=False)
    assert all(alone["cells"][str(c)]["neighbors"] == [] for c in (0, 1))
    for cell in (0, 1):
        mine = torch.load(Path(f"{control}-{cell}") / "models" / f"{ITERATIONS + 4}.pt", map_location="cpu",
                          weights_only=False)
        assert mine["seam_refine"]["blend"] is False and "agreement" not in mine
        blended = torch.load(Path(f"{exp}-{cell}") / "models" / f"{ITERATIONS + 4}.pt", map_location="cpu",
                             weights_only=False)
        assert any(not torch.equal(v, blended["model_state_dict"][k]) for k, v in mine["model_state_dict"].items())


def test_seam_refinement_needs_trained_cells(grid, trained, tmp_path):
    from mega_nerf.config import refine_seams_parser
    from mega_nerf.training.seam_refine import main

    exp = tmp_path / "half" / "exp"
    shutil.copytree(Path(f"{trained['plain']}-0"), Path(f"{exp}-0"))  # cell 1 never trained
    argv = refine_argv(grid, exp, 4)
    assert parse(refine_seams_parser(), argv).seam_refine_iterations == 4
    with pytest.raises(UserError, match="exp-1: no such folder; --exp_name is the prefix"):
        main(argv)
    (Path(f"{exp}-1") / "models").mkdir(parents=True)  # still training: a checkpoint, no summary
    shutil.copy(Path(f"{exp}-0") / "models" / f"{ITERATIONS}.pt", Path(f"{exp}-1") / "models" / "5.pt")
    with pytest.raises(UserError, match="exp-1: not trained to the end"):
        main(argv)
    with pytest.raises(UserError, match="--seam_refine_iterations must be > 0"):
        main(refine_argv(grid, exp, 0))
    with pytest.raises(UserError, match="--ckpt_path is not for refine_seams.py"):
        main([*argv, "--ckpt_path", str(Path(f"{exp}-0") / "models" / f"{ITERATIONS}.pt")])
    assert not (Path(f"{exp}-0") / "models" / f"{ITERATIONS + 4}.pt").exists()
