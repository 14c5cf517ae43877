"""Several ranks training one cell together (data parallel, ``train_cells --gpus_per_cell K``).

Every rank of the group holds the whole model and reads the same shuffled ray stream; of each batch
of ``--batch_size`` rays rank ``i`` renders rows ``i::K``, so the group's batch is exactly the one
a single process would train on.  After backward the gradients (appearance embeddings included:
they are parameters like the rest) are summed over the group in one flat all-reduce and divided by
K, which gives the gradient of the mean loss over the whole batch.  Initial weights are broadcast
from the group's leader (its first rank), occupancy grids after every refresh, so the replicas stay
identical; only the leader writes chunks, checkpoints, logs and the summary.
"""
from __future__ import annotations

import datetime
from typing import Any, Iterable, List, Sequence

import torch
import torch.distributed as dist
from torch import nn


class CellGroup:
    """The ranks ``ranks`` (global) training one cell; ``process_group`` spans exactly them."""

    def __init__(self, ranks: Sequence[int], process_group: Any):
        self.ranks = list(ranks)
        self.process_group = process_group
        self.rank = self.ranks.index(dist.get_rank())
        self.size = len(self.ranks)
        self.leader = self.ranks[0]

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    # --------------------------------------------------------------- batches
    def shard(self, *tensors: torch.Tensor) -> List[torch.Tensor]:
        """This rank's rows ``rank::size`` of each batch tensor (the group covers the batch once)."""
        return [t[self.rank::self.size].contiguous() for t in tensors]

    # ------------------------------------------------------------- gradients
    def all_reduce_gradients(self, parameters: Iterable[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Average gradients (and the loss) over the group in one collective; returns the group's loss.

        A parameter no ray of this rank reached has no gradient; it gets the group's gradient when
        any rank reached it and stays without one (as in a single process) when none did.
        """
        params = [p for p in parameters if p.requires_grad]
        device = loss.device
        pieces = [p.grad.reshape(-1).float() if p.grad is not None
                  else torch.zeros(p.numel(), device=device) for p in params]
        flags = torch.tensor([float(p.grad is not None) for p in params], device=device)
        flat = torch.cat(pieces + [flags, loss.detach().float().reshape(1)])
        dist.all_reduce(flat, group=self.process_group)
        total = sum(p.numel() for p in params)
        reached = flat[total:total + len(params)] > 0
        offset = 0
        for p, any_grad in zip(params, reached.tolist()):
            n = p.numel()
            if any_grad:
                grad = (flat[offset:offset + n] / self.size).view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = grad
                else:
                    p.grad.copy_(grad)
            else:
                p.grad = None
            offset += n
        return flat[-1] / self.size

    # ---------------------------------------------------------- replication
    def broadcast_tensors(self, tensors: Iterable[torch.Tensor]) -> None:
        """Copy the leader's values into every rank's ``tensors`` (in place; bool via uint8)."""
        with torch.no_grad():
            for t in tensors:
                if t.dtype == torch.bool:
                    carrier = t.to(torch.uint8)
                    dist.broadcast(carrier, src=self.leader, group=self.process_group)
                    t.copy_(carrier.bool())
                else:
                    dist.broadcast(t, src=self.leader, group=self.process_group)

    def broadcast_module(self, module: nn.Module) -> None:
        self.broadcast_tensors(list(module.parameters()) + list(module.buffers()))

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj if self.is_leader else None]
        dist.broadcast_object_list(box, src=self.leader, group=self.process_group)
        return box[0]

    def check_identical(self, module: nn.Module) -> None:
        """Raise when the replicas' weights or buffers (occupancy grids) differ: they must stay identical."""
        with torch.no_grad():
            tensors = list(module.parameters()) + list(module.buffers())
            sums = torch.stack([t.detach().double().sum() for t in tensors])
            both = torch.cat([sums, -sums])
            dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.process_group)
            n = len(sums)
            if not torch.equal(both[:n], -both[n:]):
                raise RuntimeError("data-parallel replicas diverged: their weights or buffers differ after training")


def make_groups(gpus_per_cell: int, timeout_seconds: float) -> CellGroup | None:
    """Split the world into groups of ``gpus_per_cell`` consecutive ranks (each within one node) and
    return this rank's; None for ``gpus_per_cell`` 1.  Called by every rank (``new_group`` is
    collective)."""
    if gpus_per_cell <= 1:
        return None
    world = dist.get_world_size()
    mine = None
    for start in range(0, world, gpus_per_cell):
        ranks = list(range(start, start + gpus_per_cell))
        group = dist.new_group(ranks, timeout=datetime.timedelta(seconds=timeout_seconds))
        if dist.get_rank() in ranks:
            mine = CellGroup(ranks, group)
    return mine
