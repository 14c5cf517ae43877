"""Run by tests/test_train_cells.py under ``torch.distributed.run --nproc_per_node 2``: one
training step's gradients of a data-parallel group (each rank renders half of the batch,
gradients all-reduced) against a single process's gradients on the whole batch.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dp_gradients_worker.py OUT.json TRAIN_ARGS...
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mega_nerf import distributed  # noqa: E402
from mega_nerf.config import parse, train_parser  # noqa: E402
from mega_nerf.data.chunks import ChunkStream  # noqa: E402
from mega_nerf.distributed.data_parallel import make_groups  # noqa: E402
from mega_nerf.training.ray_data import RayTable  # noqa: E402
from mega_nerf.training.trainer import Trainer  # noqa: E402


def gradients(trainer: Trainer, batch) -> tuple[dict, float]:
    table = RayTable(trainer.items, trainer.device, trainer.args.center_pixels)
    loss = trainer.compute_gradients(*batch, table, jitter=False)
    grads = {name: p.grad.detach().clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return grads, float(loss.detach())


def main() -> None:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    info = distributed.init_from_env("cpu")
    args = parse(train_parser(), argv)
    group = make_groups(2, 120)
    grouped = Trainer(args, group)
    chunks = grouped.prepare_group_chunks()
    batch = next(iter(ChunkStream(chunks, args.batch_size, args.random_seed)))
    dp_grads, dp_loss = gradients(grouped, batch)
    if info.rank == 0:
        single = Trainer(args)  # the same seed: the same initial weights
        ref_grads, ref_loss = gradients(single, batch)
        errors = {name: float((dp_grads[name] - g).norm() / g.norm().clamp_min(1e-30)) for name, g in ref_grads.items()}
        out.write_text(json.dumps({
            "same_parameters_with_gradients": sorted(dp_grads) == sorted(ref_grads),
            "relative_errors": errors, "loss_group": dp_loss, "loss_single": ref_loss,
            "batch": len(batch[1]), "parameters": len(ref_grads)}))
    distributed.barrier()
    distributed.shutdown()


if __name__ == "__main__":
    main()
