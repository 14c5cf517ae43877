"""Every cell of a grid trained by ``mega_nerf.train_cells`` under torch.distributed.run (gloo, CPU):
the shared queue hands each cell out once (also to two launches acting as two nodes), a dead
rank's cell is finished from its checkpoint (by another rank or by the elastic restart), 1 and 3
processes give the same weights, data-parallel gradients equal a single process's, a finished
grid is not trained again; the queue's claim / heartbeat / release logic in-process."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from helpers_pipeline import make_nadir_dataset
from mega_nerf.config import parse, train_cells_parser, train_parser
from mega_nerf.distributed.cell_queue import WAIT, CellQueue, launch_store
from mega_nerf.errors import UserError
from mega_nerf.partition.create_masks import create_cluster_masks, mask_parser
from mega_nerf.training import cell_lock
from mega_nerf.training.cells import cell_args, grid_cells, largest_first, run_events
from mega_nerf.training.grid_runner import EXIT_AFTER_CHECKPOINT
from mega_nerf.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
CELLS = 4  # a 2 x 2 grid
ITERATIONS = 20
TINY = ["--batch_size", "64", "--coarse_samples", "8", "--fine_samples", "8", "--bg_samples", "2",
        "--hash_levels", "4", "--hash_log2_size", "10", "--hash_max_resolution", "64", "--layer_dim", "16",
        "--bg_layer_dim", "16", "--appearance_dim", "4", "--num_chunks", "2", "--num_threads", "1",
        "--log_interval", "5", "--val_scale_factor", "1", "--train_iterations", str(ITERATIONS),
        "--ckpt_interval", "10"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("train_cells")
    data = make_nadir_dataset(root / "dataset", n_images=9, W=16, H=12)
    create_cluster_masks(parse(mask_parser(), ["--config", str(data["config"]), "--dataset_path", str(data["path"]),
                                               "--output", str(root / "masks"), "--grid_dim", "2", "2",
                                               "--ray_samples", "32"]))
    return {"root": root, "data": data, "masks": root / "masks"}


def cell_argv(grid: dict, name: str, extra: list[str] = (), mask_path: str | None = None) -> list[str]:
    root = grid["root"]
    return ["--config_file", str(grid["data"]["config"]), "--exp_name", str(root / name / "exp"), "--dataset_path",
            str(grid["data"]["path"]), "--chunk_paths", str(root / name / "chunks"), "--cluster_mask_path",
            mask_path or str(grid["masks"]), *TINY, *extra]


def env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def torchrun(nproc: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), *flags]


def launch(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180, check=False, **kw)


def train_cells(grid: dict, name: str, nproc: int = 0, extra=(), flags=(), **env_extra):
    """``nproc`` 0: a plain process (no torch.distributed.run)."""
    prefix = torchrun(nproc, "--standalone", *flags) if nproc else [sys.executable]
    argv = cell_argv(grid, name, ["--progress_interval", "0.5", *extra])
    return launch(prefix + ["-m", "mega_nerf.train_cells", *argv], env=env(**env_extra))


def starts(grid: dict, name: str, cell: int) -> list[dict]:
    return [e for e in run_events(grid["root"] / name / f"exp-{cell}") if e["event"] == "start"]


def final_state(grid: dict, name: str, cell: int) -> dict:
    return torch.load(grid["root"] / name / f"exp-{cell}" / "models" / f"{ITERATIONS}.pt", weights_only=False)


def summary(grid: dict, name: str) -> dict:
    return json.loads((grid["root"] / name / "exp" / "cells_summary.json").read_text())


def assert_every_cell_trained_once(grid: dict, name: str) -> None:
    for cell in range(CELLS):
        assert len(starts(grid, name, cell)) == 1, (cell, starts(grid, name, cell))
        assert final_state(grid, name, cell)["iteration"] == ITERATIONS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- processes
def test_three_processes_train_each_cell_once_like_one_process_and_a_relaunch_trains_nothing(grid):
    three = train_cells(grid, "three", nproc=3)
    assert three.returncode == 0, three.stdout[-3000:] + three.stderr[-3000:]
    assert_every_cell_trained_once(grid, "three")
    trained_by = {starts(grid, "three", c)[0]["rank"] for c in range(CELLS)}
    assert trained_by <= {0, 1, 2} and len(trained_by) >= 2
    one = train_cells(grid, "one")  # a plain process: the cells one after another
    assert one.returncode == 0, one.stderr[-3000:]
    assert_every_cell_trained_once(grid, "one")
    for cell in range(CELLS):  # each cell's training depends on its seed, never on the rank
        a, b = final_state(grid, "three", cell), final_state(grid, "one", cell)
        for key, value in a["model_state_dict"].items():
            assert torch.allclose(value.float(), b["model_state_dict"][key].float(), rtol=1e-6, atol=1e-7), (cell, key)
    report = summary(grid, "three")
    assert report["world_size"] == 3 and report["cells_done"] == list(range(CELLS))
    assert sorted(report["cells_trained_this_launch"]) == list(range(CELLS))
    assert report["aggregate_rays_per_second"] > 0
    for cell, entry in report["cells"].items():
        assert entry["iterations"] == ITERATIONS and entry["resumed_from"] == 0 and entry["rays_per_second"] > 0
        assert entry["rank"] in (0, 1, 2) and entry["host"] == socket.gethostname() and entry["device"] == "cpu"
        assert entry["val_psnr"] is not None
    assert "cells:" in three.stdout and "done" in three.stdout  # rank 0's grid progress

    again = train_cells(grid, "three", nproc=2)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"nothing to do: all {CELLS} cells" in again.stdout
    assert_every_cell_trained_once(grid, "three")
    assert summary(grid, "three")["world_size"] == 3  # the launch that trained keeps its figures


def test_two_launches_acting_as_two_nodes_share_one_queue(grid):
    port = free_port()
    common = ["--nnodes", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "t2n"]
    argv = ["-m", "mega_nerf.train_cells", *cell_argv(grid, "nodes", ["--progress_interval", "0.5"])]
    nodes = [subprocess.Popen(torchrun(1, *common, "--node_rank", str(n)) + argv, cwd=REPO, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in (0, 1)]
    outputs = [p.communicate(timeout=180)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert_every_cell_trained_once(grid, "nodes")
    assert summary(grid, "nodes")["world_size"] == 2
    assert {starts(grid, "nodes", c)[0]["rank"] for c in range(CELLS)} <= {0, 1}


def test_a_dead_ranks_cell_is_taken_over_from_its_checkpoint(grid):
    """Rank 1 vanishes (exit status 0, so torchrun lets the others run) after its first checkpoint;
    its heartbeat stops and another rank resumes the cell from that checkpoint."""
    result = train_cells(grid, "dead", nproc=3, extra=["--cell_heartbeat_timeout", "2"], flags=["--max_restarts", "0"],
                         **{EXIT_AFTER_CHECKPOINT: "1:0"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test hook: exiting" in result.stdout
    died = next(c for c in range(CELLS) if starts(grid, "dead", c)[0]["rank"] == 1)
    first, second = starts(grid, "dead", died)
    assert first["rank"] == 1 and first["from_iteration"] == 0
    assert second["rank"] != 1 and second["from_iteration"] == 10 and second["takeover_from"].startswith("rank1@")
    assert final_state(grid, "dead", died)["iteration"] == ITERATIONS
    assert summary(grid, "dead")["cells"][str(died)]["resumed_from"] == 10
    assert "taken over from rank1@" in result.stdout
    for cell in set(range(CELLS)) - {died}:
        assert len(starts(grid, "dead", cell)) == 1


def test_the_elastic_restart_resumes_a_crashed_ranks_cell(grid):
    """Rank 1 crashes (exit status 3) after its first checkpoint; torchrun restarts the workers
    (--max_restarts 1), which find on disk what is done and resume the rest."""
    result = train_cells(grid, "restart", nproc=3, flags=["--max_restarts", "1"],
                         TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1", **{EXIT_AFTER_CHECKPOINT: "1:3"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    died = next(c for c in range(CELLS) if starts(grid, "restart", c)[0]["rank"] == 1)
    runs = starts(grid, "restart", died)
    assert runs[0]["from_iteration"] == 0 and runs[-1]["from_iteration"] == 10
    for cell in range(CELLS):
        assert final_state(grid, "restart", cell)["iteration"] == ITERATIONS
    assert summary(grid, "restart")["cells"][str(died)]["resumed_from"] == 10


def test_data_parallel_gradients_equal_a_single_processs(grid, tmp_path):
    out = tmp_path / "gradients.json"
    argv = cell_argv(grid, "dp_gradients", mask_path=str(grid["masks"] / "1"))
    result = launch(torchrun(2, "--standalone") + ["tests/dp_gradients_worker.py", str(out), *argv], env=env())
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["same_parameters_with_gradients"] and report["parameters"] > 10
    assert max(report["relative_errors"].values()) < 1e-6, report["relative_errors"]
    assert report["loss_group"] == pytest.approx(report["loss_single"], rel=1e-6)


def test_data_parallel_cells_train_with_one_writer(grid):
    """Two ranks train each cell (with an occupancy grid, refreshed and broadcast by the leader); the
    replicas end bit-identical (checked by the trainer) and only the leader writes."""
    result = train_cells(grid, "dp", nproc=2, extra=["--gpus_per_cell", "2", "--occupancy_resolution", "8",
                                                      "--occupancy_candidates", "32", "--occupancy_update_interval", "5"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_every_cell_trained_once(grid, "dp")
    for cell in range(CELLS):
        exp = grid["root"] / "dp" / f"exp-{cell}"
        assert json.loads((exp / "train_summary.json").read_text())["data_parallel_ranks"] == 2
        assert len(list((exp / "tb").glob("events.out.tfevents.*"))) == 1  # the leader's only
        assert starts(grid, "dp", cell)[0]["ranks"] == [0, 1]


# ----------------------------------------------------------------------- in-process
def test_queue_hands_out_each_cell_once_then_waits_then_ends():
    store = dist.HashStore()
    a, b = (CellQueue(store, [3, 5, 7], name, timeout=60) for name in ("a", "b"))
    claims = [a.claim(), b.claim(), a.claim()]
    assert sorted(c.cell for c in claims) == [3, 5, 7]
    assert b.claim() == WAIT  # everything is held by live owners
    for c in claims:
        a.resolve(c.cell, {"status": "done"})
    a.resolve(3, {"status": "done", "again": True})  # resolved once only
    assert a.resolved_count() == 3 and b.claim() is None and a.claim() is None
    assert a.first_to_finish() and not b.first_to_finish()


def test_queue_takes_over_a_cell_whose_heartbeat_stopped():
    now = [0.0]
    store = dist.HashStore()
    owner = CellQueue(store, [0, 1], "owner", timeout=10, clock=lambda: now[0])
    other = CellQueue(store, [0, 1], "other", timeout=10, clock=lambda: now[0])
    held = owner.claim()
    mine = other.claim()
    assert {held.cell, mine.cell} == {0, 1}
    other.resolve(mine.cell, {"status": "done"})
    assert other.claim() == WAIT  # first look starts the watch
    for _ in range(3):  # a beating owner is never stale
        now[0] += 8
        owner.beat(held.cell, 0.5)
        assert other.claim() == WAIT
    now[0] += 11  # silent for longer than the timeout
    taken = other.claim()
    assert taken.cell == held.cell and taken.takeover_from == held.token
    assert not owner.owns(held) and other.owns(taken)
    assert owner.claim() == WAIT  # the new owner's heartbeat is watched afresh


def test_a_released_cell_is_taken_by_another_worker_first():
    now = [0.0]
    store = dist.HashStore()
    a = CellQueue(store, [0], "a", timeout=10, clock=lambda: now[0])
    b = CellQueue(store, [0], "b", timeout=10, clock=lambda: now[0])
    claim = a.claim()
    a.release(claim, retry_after=5)
    assert a.claim() == WAIT  # a waits before it looks at the cell again
    assert b.claim().cell == 0


def test_grid_cells_skip_unreached_cells_and_use_the_parscript_layout(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    torch.save({"centroids": torch.zeros(4, 3), "cell_pixel_counts": torch.tensor([5, 0, 7, 3])}, masks / "params.pt")
    assert grid_cells(masks) == ([0, 2, 3], [1])
    assert largest_first(masks, [0, 2, 3]) == [2, 0, 3]  # the queue's order
    assert grid_cells(masks, only=[1, 2]) == ([2], [1])
    with pytest.raises(UserError, match="--cells 4"):
        grid_cells(masks, only=[4])
    args = parse(train_cells_parser(), ["--exp_name", "runs/E", "--dataset_path", "D", "--chunk_paths", "/s1/P", "/s2/P",
                                        "--cluster_mask_path", str(masks)])
    cell = cell_args(args, 2)  # what write_parscript.py's job line gives cell 2
    assert (cell.exp_name, cell.chunk_paths, cell.cluster_mask_path) == ("runs/E-2", ["/s1/P-2", "/s2/P-2"],
                                                                         str(masks / "2"))
    assert args.exp_name == "runs/E"


def test_launch_store_without_a_process_group_is_private():
    store, generation = launch_store()
    assert generation == 1 and isinstance(store, dist.HashStore)


def test_snapshot_reports_owner_progress_and_records():
    store = dist.HashStore()
    q = CellQueue(store, [0, 1], "w", timeout=10)
    claim = q.claim()
    q.beat(claim.cell, 0.25)
    q.resolve(1, {"status": "failed", "error": "x"}) if claim.cell == 0 else q.resolve(0, {"status": "failed"})
    snap = {e["cell"]: e for e in q.snapshot()}
    assert snap[claim.cell]["owner"] == claim.token and snap[claim.cell]["progress"] == 0.25
    other = 1 - claim.cell
    assert snap[other]["record"]["status"] == "failed" and snap[other]["progress"] == 1.0


def test_cell_lock_is_exclusive_across_processes_and_reentrant(grid, tmp_path):
    exp = tmp_path / "exp-0"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from mega_nerf.training import cell_lock
        cell_lock.acquire({str(exp)!r})
        print("locked", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(cell_lock.CellBusy, match="another process is training this cell"):
            cell_lock.acquire(exp)
        args = parse(train_parser(), ["--config_file", str(grid["data"]["config"]), "--exp_name", str(exp),
                                      "--dataset_path", str(grid["data"]["path"]), "--cluster_mask_path",
                                      str(grid["masks"] / "0"), *TINY])
        with pytest.raises(UserError, match="another process is training this cell"):
            Trainer(args).train()  # train.py (and so parscript) refuses a cell train_cells holds
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 5
    while True:  # the OS drops the lock with its process
        try:
            cell_lock.acquire(exp)
            break
        except cell_lock.CellBusy:
            assert time.time() < deadline
            time.sleep(0.05)
    cell_lock.acquire(exp)  # re-entrant in one process
    cell_lock.release(exp)
    cell_lock.release(exp)
