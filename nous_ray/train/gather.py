"""Full weights out of FSDP2 shards, one tensor at a time, onto learner rank 0 only.

A weight sync needs each full tensor once, on one rank, in the engine's dtype. ``DTensor.full_tensor``
(an all-gather) would put every full tensor on every rank, and ``get_model_state_dict`` gathers them
all at once in the master weights' dtype. Here each rank casts its own shard to the engine's dtype
(half the bytes for bf16 engines of fp32 master weights) and ``torch.distributed.gather`` sends the
shards to rank 0, into the destination the caller gives (a slice of a bucket buffer), so rank 0 holds
one bucket of full tensors and the other ranks never hold a full tensor.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather_to_rank0"]


def _shard0(param) -> bool:
    from torch.distributed.tensor import DTensor, Shard

    return (isinstance(param, DTensor) and param.device_mesh.ndim == 1
            and tuple(param.placements) == (Shard(0),) and param.dim() > 0)


def gather_to_rank0(param: Tensor, dtype: torch.dtype, out: Tensor | None = None) -> Tensor | None:
    """Every rank calls with its (sharded) ``param``; rank 0 gets the full tensor in ``dtype``,
    written into ``out`` when given (shape and dtype of the full tensor), the other ranks None.

    FSDP2 shards dim 0 in ``torch.chunk`` pieces (``ceil(N / world)`` rows, the last ranks fewer or
    none); each rank pads its piece to that size so the gather's pieces are equal.
    """
    if not _shard0(param):
        # Not a dim-0 shard of a 1-D mesh (a replicated or unsharded tensor): every rank has it whole.
        full = param.full_tensor() if hasattr(param, "full_tensor") else param
        if dist.is_initialized() and dist.get_rank() != 0:
            return None
        full = full.detach().to(dtype)
        return out.copy_(full) if out is not None else full
    group = param.device_mesh.get_group()
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    local = param.to_local().detach().to(dtype)
    rows = param.shape[0]
    chunk = -(-rows // world)
    if local.shape[0] != chunk:
        padded = local.new_zeros((chunk,) + tuple(local.shape[1:]))
        padded[: local.shape[0]].copy_(local)
        local = padded
    local = local.contiguous()
    if rank != 0:
        dist.gather(local, None, group=group, group_dst=0)
        return None
    if out is None:
        out = torch.empty(tuple(param.shape), dtype=dtype, device=local.device)
    # Whole pieces land in place; a short or empty last piece goes through a piece-sized buffer.
    pieces = [out[r * chunk : (r + 1) * chunk] for r in range(world)]
    short = [r for r in range(world) if pieces[r].shape[0] != chunk]
    recv = [torch.empty_like(local) if r in short else pieces[r] for r in range(world)]
    dist.gather(local, recv, group=group, group_dst=0)
    for r in short:
        pieces[r].copy_(recv[r][: pieces[r].shape[0]])
    return out
