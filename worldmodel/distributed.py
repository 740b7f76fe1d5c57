"""Collectives for multi-process (DDP) training that keep gradients exact.

Every helper here is a no-op in a single process (``torch.distributed`` not initialised,
or a world of one), so models and regularisers call them unconditionally.

Why the gradients are exact: DDP averages each parameter's gradient over the W ranks, so
it back-propagates ``(1/W) * sum_r L_r`` (``L_r``: rank r's loss). The collectives below
are autograd-aware (``torch.distributed.nn.functional.all_reduce``: its backward is an
all-reduce SUM of the incoming gradients), so that sum is differentiated through the
whole multi-rank graph, statistics of other ranks' samples included. A batch statistic
(SIGReg's characteristic function, BatchNorm's mean and variance) computed over the union
batch is the same on every rank, and a per-sample mean loss averaged over equal shards
equals the union-batch mean, so ``(1/W) * sum_r L_r`` is the single-process loss on the
union batch, and its gradient is the single-process gradient.
"""

from __future__ import annotations

import torch


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised ``torch.distributed`` group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default group; ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _comm_device(tensor: torch.Tensor | None = None) -> torch.device:
    """The device the default group's backend communicates on (NCCL: this rank's GPU)."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return tensor.device if tensor is not None and tensor.is_cuda else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if tensor is None or tensor.is_cuda else tensor.device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` (any shape) over the ranks, differentiable (backward: the sum of the
    ranks' gradients); ``tensor`` itself in a single process."""
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_reduce

    device = _comm_device(tensor)
    return all_reduce(tensor.to(device)).to(tensor.device)


def gather_batch(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Concatenate every rank's ``x`` along ``dim`` (rank order), differentiably.

    All ranks must pass the same shape. Built from one autograd all-reduce of a zero-padded
    (W, *x.shape) buffer rather than ``all_gather``, whose backward needs reduce-scatter or
    all-to-all (not every backend has them); each rank's gradient is the sum over ranks of
    the gradients reaching its slot.
    """
    if not is_distributed():
        return x
    rank, world = rank_and_world()
    slots = [torch.zeros_like(x) if r != rank else x for r in range(world)]
    gathered = all_reduce_sum(torch.stack(slots))  # (W, *x.shape)
    return torch.cat(gathered.unbind(0), dim=dim)


def broadcast_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (a 64-bit integer); ``value`` in a single process."""
    if not is_distributed():
        return int(value)
    import torch.distributed as dist

    t = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device())
    dist.broadcast(t, src=0)
    return int(t.item())
