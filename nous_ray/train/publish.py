"""Publishing a learner's weights: gathered one tensor at a time in the engines' dtype, on the
learner's device, into buckets that leave as soon as they are full.

Every function here is collective: all ranks of the learner group call it with the same arguments;
rank 0 alone holds buckets (the object store's refs, or the broadcast), the others only send their
shards. Memory on rank 0: two buckets (NCCL) or one (object store), never the whole model.
"""

from __future__ import annotations

from typing import Any

import torch

from nous_ray.weight_sync.buckets import Bucket, bucket_nbytes, plan_buckets, unpack_bucket
from nous_ray.weight_sync.nccl import BucketBuffers, send_buckets, send_packed, vllm_update_info
from nous_ray.weight_sync.object_store import put_filled

__all__ = ["fill_bucket", "weight_plan", "put_weights", "broadcast_weights", "receiver_payload"]


def weight_plan(trainer, bucket_bytes: int) -> list[Bucket]:
    """The bucket tables of ``trainer``'s published weights (no gathering; the same on every rank)."""
    return plan_buckets(trainer.weight_metas(), bucket_bytes)


def fill_bucket(trainer, table: Bucket, out: torch.Tensor | None) -> None:
    """Gather the tensors of one bucket; rank 0 writes them into ``out``, the bucket's bytes."""
    views = None
    if out is not None:
        views = [t for _, t in unpack_bucket(Bucket(table.names, table.shapes, table.dtypes, table.offsets, out))]
    trainer.gather_weights(table.names, views)


def put_weights(trainer, bucket_bytes: int) -> list:
    """Object-store transport: rank 0 returns one ``ObjectRef`` per bucket, the others []."""
    plan = weight_plan(trainer, bucket_bytes)
    if trainer.rank == 0:
        return put_filled(plan, lambda t, out: fill_bucket(trainer, t, out), trainer.device)
    for table in plan:
        fill_bucket(trainer, table, None)
    return []


def receiver_payload(trainer, bucket_bytes: int, tensor_parallel_size: int) -> Any:
    """What NCCL receivers need before the bytes: the bucket tables for one-GPU engines, vLLM's
    ``update_info`` for engines of several GPUs."""
    if tensor_parallel_size == 1:
        return weight_plan(trainer, bucket_bytes)
    return vllm_update_info(trainer.weight_metas())


def broadcast_weights(trainer, comm, bucket_bytes: int, tensor_parallel_size: int) -> dict:
    """NCCL transport: rank 0 broadcasts over ``comm`` as it gathers (``comm`` is None elsewhere):
    layer-aligned buckets through two reused buffers to one-GPU engines, vLLM's packed format (two
    buffers as well) to larger ones. Returns rank 0's counts ({} elsewhere)."""
    rank0 = trainer.rank == 0
    if rank0 and comm is None:
        raise RuntimeError("broadcast_weights: rank 0 has no broadcast group (join_weight_group first)")
    if tensor_parallel_size == 1:
        plan = weight_plan(trainer, bucket_bytes)
        if not rank0:
            for table in plan:
                fill_bucket(trainer, table, None)
            return {}
        buffers = BucketBuffers(max(bucket_nbytes(t) for t in plan), trainer.device)
        sent = send_buckets(comm, plan, lambda t, out: fill_bucket(trainer, t, out), buffers)
        return {"bytes": sent, "buckets": len(plan), "buffer_bytes": buffers.allocated_bytes}
    names = [m[0] for m in trainer.weight_metas()]
    gathered = trainer.iter_weights(names)
    if not rank0:
        for _ in gathered:
            pass
        return {}
    send_packed(comm, gathered, bucket_bytes)
    return {"tensors": len(names)}
