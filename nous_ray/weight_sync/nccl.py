"""GPU transport: learner rank 0 broadcasts the weights to every rollout engine over NCCL, bucket by
bucket, while the engines load each bucket as it arrives.

One group per sync topology: rank 0 is learner rank 0, the rollout engines' GPUs follow (engine ``i``
with tensor parallelism ``tp`` holds ranks ``1 + i*tp .. (i+1)*tp``). The group is vLLM's own
(``vllm.distributed.weight_transfer.nccl_common.stateless_init_process_group``: a
``PyNcclCommunicator`` over a ``StatelessProcessGroup``), so it never touches ``torch.distributed``'s
default group, which FSDP and vLLM's tensor parallelism use.

Two wire formats, one per engine layout:

- one-GPU engines (the recipe; vLLM's in-process ``uni`` executor): the layer-aligned buckets of
  :func:`nous_ray.weight_sync.buckets.plan_buckets`, one broadcast each. Both sides compute the tables
  from names, shapes and dtypes, so only bytes cross the wire. The sender gathers each bucket into one
  of two reused device buffers and broadcasts it while it gathers the next (:func:`send_buckets`); a
  receiver receives into two reused buffers and hands each bucket's tensors to vLLM's in-place reload
  as it arrives (:func:`receive_tensors`). Device memory on either side: two buckets.
- engines of several GPUs (vLLM's ``mp`` executor, workers in other processes): vLLM's own packed
  protocol (``vllm/distributed/weight_transfer/packed_tensor.py``), sent with
  :func:`send_packed`; each engine receives it through its ``NCCLWeightTransferEngine``
  (``weight_transfer_config={"backend": "nccl"}``, driven by ``collective_rpc``; see
  :mod:`nous_ray.rollout.weights`). vLLM double-buffers the same way (``packed_num_buffers=2``).

Runs on GPUs only in production. On this machine the communicator is the one thing replaced (tests
pass an object with the same ``broadcast(tensor, src, stream=None)``); everything around it runs.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator, Sequence

import torch

from nous_ray.weight_sync.buckets import Bucket, bucket_nbytes, unpack_bucket, zero_gaps

log = logging.getLogger(__name__)

NUM_BUFFERS = 2


def open_group(host: str, port: int, rank: int, world_size: int, device: int | torch.device):
    """Join the broadcast group as ``rank`` (every member calls this at once; it blocks until all
    have joined). Returns vLLM's ``PyNcclCommunicator``."""
    from vllm.distributed.weight_transfer.nccl_common import stateless_init_process_group

    if not 0 <= rank < world_size:
        raise ValueError(f"weight group: rank {rank} outside a world of {world_size}")
    return stateless_init_process_group(host, port, rank, world_size, device)


def first_rank(engine: int, tensor_parallel_size: int) -> int:
    """Group rank of rollout engine ``engine``'s first GPU: rank 0 is the learner, then
    ``tensor_parallel_size`` ranks per engine."""
    return 1 + engine * tensor_parallel_size


def _use_count(t: torch.Tensor) -> int:
    # Tensors viewing this buffer's memory hold its storage; the count says whether any outlive a load.
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


class BucketBuffers:
    """Two byte buffers of ``nbytes`` on ``device``, taken in turn for consecutive buckets.

    Before handing out a buffer again ``take`` checks that no tensor still views it. Views that
    remain after a bucket was consumed are either data the consumer will still read (vLLM's reload
    holds a layer's tensors until the layer is complete) or leftovers in finished frames of the
    consumer's loader; ``holds(buffer)``, when given, tells which (True: still needed). A buffer still
    needed, or any viewed buffer without ``holds``, is left to its holders and a fresh one allocated
    (logged, counted in ``replaced``). ``allocated_bytes`` is every byte allocated.
    """

    def __init__(self, nbytes: int, device: torch.device | str,
                 holds: Callable[[torch.Tensor], bool] | None = None):
        self.nbytes = int(nbytes)
        self.device = torch.device(device)
        self.holds = holds
        self._bufs: list[torch.Tensor | None] = [None] * NUM_BUFFERS
        self._base = [0] * NUM_BUFFERS
        self.allocated_bytes = 0
        self.replaced = 0

    def take(self, slot: int) -> torch.Tensor:
        buf = self._bufs[slot]
        if buf is not None and _use_count(buf) > self._base[slot] and (self.holds is None or self.holds(buf)):
            self.replaced += 1
            log.warning("weight sync: tensors of a loaded bucket are still needed; allocating a fresh buffer "
                        "instead of overwriting them (%d bytes)", self.nbytes)
            buf = None
        if buf is None:
            buf = torch.empty(self.nbytes, dtype=torch.uint8, device=self.device)
            self.allocated_bytes += self.nbytes
            self._bufs[slot] = buf
            self._base[slot] = _use_count(buf)
        return buf


class _Streams:
    """CUDA: transfers on a side stream, ordered against the current one by events, so a bucket
    travels while the next is gathered (sender) or the previous one loads (receiver). CPU: no-ops."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.current = torch.cuda.current_stream(device)
            self.side = torch.cuda.Stream(device)

    def mark(self, on_side: bool = False):
        if not self.cuda:
            return None
        return (self.side if on_side else self.current).record_event()

    def side_waits(self, event) -> None:
        if event is not None:
            self.side.wait_event(event)

    def current_waits(self, event) -> None:
        if event is not None:
            self.current.wait_event(event)

    @property
    def stream(self):
        return self.side if self.cuda else None

    def drain(self) -> None:
        if self.cuda:
            self.side.synchronize()
            self.current.synchronize()


def receive_tensors(comm, plan: Sequence[Bucket], buffers: BucketBuffers) -> Iterator[tuple[str, torch.Tensor]]:
    """Ranks >= 1: yield ``(name, tensor)`` of every bucket of ``plan`` in order, as views of the
    buffer it was received into.

    Bucket ``i + 1`` is received into the buffer of bucket ``i - 1`` while bucket ``i`` loads: as
    soon as the consumer comes back for a tensor after the first of bucket ``i``. By then it holds
    nothing of bucket ``i - 1`` (a loop that consumes this stream keeps only its current item; vLLM's
    layerwise reload holds a layer's tensors until the layer is complete, and buckets end at layer
    boundaries). If something still views that buffer, :class:`BucketBuffers` allocates a new one.
    """
    if not plan:
        return
    streams = _Streams(buffers.device)
    taken: list = [None] * NUM_BUFFERS
    received: list = [None] * NUM_BUFFERS

    def issue(i: int) -> None:
        slot = i % NUM_BUFFERS
        taken[slot] = buffers.take(slot)
        streams.side_waits(streams.mark())  # after every load enqueued so far (bucket i - 2 included)
        comm.broadcast(taken[slot][: bucket_nbytes(plan[i])], src=0, stream=streams.stream)
        received[slot] = streams.mark(on_side=True)

    issue(0)
    for i, table in enumerate(plan):
        slot = i % NUM_BUFFERS
        streams.current_waits(received[slot])
        pending = i + 1 < len(plan)
        # No reference to the bucket's bytes stays in this frame: take() checks for views.
        for item in unpack_bucket(Bucket(table.names, table.shapes, table.dtypes, table.offsets,
                                         taken[slot][: bucket_nbytes(table)])):
            yield item
            del item
            if pending:
                issue(i + 1)
                pending = False
        if pending:
            issue(i + 1)
    streams.drain()


def send_buckets(comm, plan: Sequence[Bucket], fill: Callable[[Bucket, torch.Tensor], None],
                 buffers: BucketBuffers) -> int:
    """Rank 0: for each bucket of ``plan``, ``fill(table, out)`` writes its tensors into ``out`` (one
    of two reused buffers, e.g. by gathering shards into it), then broadcast it; bucket ``i`` is sent
    while bucket ``i + 1`` fills. Returns the number of bytes sent."""
    streams = _Streams(buffers.device)
    sent: list = [None] * NUM_BUFFERS
    total = 0
    for i, table in enumerate(plan):
        slot = i % NUM_BUFFERS
        n = bucket_nbytes(table)
        out = buffers.take(slot)[:n]
        streams.current_waits(sent[slot])  # bucket i - 2 has left this buffer
        fill(table, out)
        zero_gaps(table, out)
        streams.side_waits(streams.mark())
        comm.broadcast(out, src=0, stream=streams.stream)
        sent[slot] = streams.mark(on_side=True)
        total += n
    streams.drain()
    return total


# ---- engines of several GPUs: vLLM's packed protocol --------------------------------------------

def vllm_update_info(metas: Iterable[tuple[str, Sequence[int], str]]) -> dict:
    """``update_info`` of vLLM's ``NCCLWeightTransferEngine.update_weights`` for tensors sent in this
    order (``NCCLWeightTransferUpdateInfo``: names, dtype names, shapes)."""
    metas = list(metas)
    return {"names": [m[0] for m in metas], "dtype_names": [str(m[2]) for m in metas],
            "shapes": [list(m[1]) for m in metas]}


def vllm_init_info(host: str, port: int, first_rank: int, world_size: int, bucket_bytes: int) -> dict:
    """``init_info`` of vLLM's ``NCCLWeightTransferEngine`` (``NCCLWeightTransferInitInfo``) for an
    engine whose workers take ranks ``first_rank ..`` (vLLM adds each worker's own rank)."""
    return {"master_address": host, "master_port": port, "rank_offset": first_rank, "world_size": world_size,
            "packed": True, "packed_buffer_size_bytes": int(bucket_bytes), "packed_num_buffers": NUM_BUFFERS}


def send_packed(comm, named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> None:
    """Rank 0: send ``(name, full tensor on the device)`` in vLLM's packed format, two buffers of
    ``bucket_bytes``; the receivers' ``update_info`` must list the same tensors in the same order."""
    from vllm.distributed.weight_transfer.packed_tensor import packed_nccl_broadcast_producer

    packed_nccl_broadcast_producer(iterator=iter(named_tensors), group=comm, src=0,
                                   post_iter_func=lambda item: item[1], buffer_size_bytes=int(bucket_bytes),
                                   num_buffers=NUM_BUFFERS)
