"""Collectives for multi-process (DDP) training that keep gradients exact.

Every helper here is a no-op in a single process (``torch.distributed`` not initialised,
or a world of one), so models and regularisers call them unconditionally.

Why the gradients are exact: DDP averages each parameter's gradient over the W ranks, so
it back-propagates ``(1/W) * sum_r L_r`` (``L_r``: rank r's loss). The collectives below
are autograd-aware (`all_reduce_sum`: its backward is an all-reduce SUM of the incoming
gradients), so that sum is differentiated through the
whole multi-rank graph, statistics of other ranks' samples included. A batch statistic
(SIGReg's characteristic function, BatchNorm's mean and variance) computed over the union
batch is the same on every rank, and a per-sample mean loss averaged over equal shards
equals the union-batch mean, so ``(1/W) * sum_r L_r`` is the single-process loss on the
union batch, and its gradient is the single-process gradient.
"""

from __future__ import annotations

from typing import Any

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


class _AllReduceSum(torch.autograd.Function):
    """All-reduce (SUM) whose backward all-reduces (SUM) the gradient: the derivative of
    ``sum_r x_r`` seen from every rank's loss (as ``torch.distributed.nn.functional.all_reduce``,
    which torch has deprecated)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` (any shape) over the ranks, differentiable (backward: the sum of the
    ranks' gradients); ``tensor`` itself in a single process."""
    if not is_distributed():
        return tensor
    device = _comm_device(tensor)
    return _AllReduceSum.apply(tensor.to(device)).to(tensor.device)


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


class DistributedBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm (1d/2d/3d) whose train-mode statistics are those of the union batch of all ranks.

    A stand-in for ``torch.nn.SyncBatchNorm``, which runs only on GPUs: this one works with
    any backend (gloo on CPU included) through two autograd-aware all-reduces (the sums,
    then the squared deviations from the union mean). Same parameters, buffers and
    ``state_dict`` keys as the ``nn.BatchNorm*`` it replaces; in eval mode, or in a single
    process, it is exactly ``nn.BatchNorm*``. The running variance is updated with the
    unbiased union-batch variance, as one process with the union batch would.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """input (N, C, *) -> normalised (N, C, *)."""
        self._check_input_dim(input)
        if not (self.training and is_distributed()):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        count = all_reduce_sum(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = all_reduce_sum(x.sum(dim=dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce_sum(centred.square().sum(dim=dims)) / count  # biased: what normalises
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
        return y.to(input.dtype)


def convert_batchnorm(module: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` by one computing union-batch statistics.

    On CUDA (NCCL) torch's ``SyncBatchNorm``; elsewhere `DistributedBatchNorm`. Parameters and
    buffers are moved over, so the weights, the optimiser's references to them and the
    ``state_dict`` keys stay the same. Returns ``module`` (changed in place; a bare
    BatchNorm is returned converted).
    """
    if device is not None and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    bn_types = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    if isinstance(module, bn_types) and not isinstance(module, DistributedBatchNorm):
        new = DistributedBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = convert_batchnorm(child, device)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
