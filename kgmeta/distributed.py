"""Multi-process meta-training through ``torch.distributed`` (``torchrun``).

``torchrun --nproc_per_node N -m kgmeta train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` set. Each process builds the
same model (the GNN is replicated), takes the meta-batch items whose index ``j`` satisfies
``j % world == rank``, backpropagates its share ``sum_j loss_j / meta_batch`` and the gradients
are summed across processes with ``all_reduce`` before every process takes the same optimiser
step. The result equals the single-process run with the same total meta-batch (tested with gloo
on CPU). Episodes are drawn from generators seeded by (seed, step, global item index), so each
rank draws different episodes, reproducibly. Only rank 0 writes the run folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from kgmeta.errors import ConfigError

__all__ = ["DistContext", "all_reduce_grads", "all_reduce_sum", "broadcast_object", "init_from_env",
           "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module initialised the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and results."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def items(self, meta_batch: int) -> list[int]:
        """Meta-batch item indices this rank computes."""
        return [j for j in range(meta_batch) if j % self.world == self.rank]


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment variables, if any.

    Args:
        device: the device the model will use (nccl on CUDA, gloo on CPU).

    Returns:
        A single-process context when ``WORLD_SIZE`` is unset or 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot join the torch.distributed group (rank {rank} of {world}): "
                              f"{str(exc).splitlines()[0]}; start with torchrun or unset WORLD_SIZE") from None
        owns = True
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, owns_group=owns)


def all_reduce_grads(params: Iterable[torch.nn.Parameter], ctx: DistContext) -> None:
    """Sum every parameter's gradient over the processes (missing gradients count as zero)."""
    if not ctx.active:
        return
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective per step
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def all_reduce_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``value`` over the processes (a copy; ``value`` itself is left alone)."""
    if not ctx.active:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(ctx: DistContext) -> None:
    """Wait for every process, then leave the group if this module joined it."""
    if ctx.active:
        dist.barrier()
        if ctx.owns_group:
            dist.destroy_process_group()
