"""CPU transport: buckets through Ray's object store, one ``update_weights`` call per sync.

The learner (rank 0) fills one bucket at a time into a reused staging buffer and ``ray.put``s it;
each rollout worker gets the list of refs in one call and fetches the buckets one at a time as its
engine loads them (:func:`fetch_buckets`), zero-copy from the object store: a worker holds at most
the bucket being loaded and the next one, never a version's every bucket.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from nous_ray.weight_sync.buckets import Bucket, bucket_nbytes, iter_buckets, unpack_bucket, zero_gaps


class BucketPublisher:
    """Packs and ``ray.put``s a state dict bucket by bucket through one reused staging buffer.

    Memory held beyond the object store: one bucket. ``publish`` returns the refs to hand to
    ``RolloutWorker.update_weights(version, refs)``; keep them alive until every worker loaded.
    """

    def __init__(self, bucket_bytes: int):
        if bucket_bytes <= 0:
            raise ValueError(f"BucketPublisher: bucket_bytes must be positive, got {bucket_bytes}")
        self.bucket_bytes = bucket_bytes
        self._staging: np.ndarray | None = None

    def publish(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list:
        import ray

        if self._staging is None:
            self._staging = np.empty(self.bucket_bytes, dtype=np.uint8)
        return [ray.put(b) for b in iter_buckets(named_tensors, self.bucket_bytes, staging=self._staging)]


def put_filled(plan: Sequence[Bucket], fill: Callable[[Bucket, torch.Tensor], None],
               device: torch.device | str = "cpu") -> list:
    """``ray.put`` every bucket of ``plan``, each filled by ``fill(table, out)`` (e.g. gathered from
    shards) into one reused buffer on ``device``; a device buffer is copied to host before the put.
    Returns the refs. Memory: one bucket (two with a device buffer)."""
    import ray

    size = max((bucket_nbytes(t) for t in plan), default=0)
    staging = np.empty(size, dtype=np.uint8)
    host = torch.from_numpy(staging)
    device = torch.device(device)
    buf = host if device.type == "cpu" else torch.empty(size, dtype=torch.uint8, device=device)
    refs = []
    for table in plan:
        n = bucket_nbytes(table)
        fill(table, buf[:n])
        zero_gaps(table, buf[:n])
        if buf is not host:
            host[:n].copy_(buf[:n])
        refs.append(ray.put(Bucket(table.names, table.shapes, table.dtypes, table.offsets, staging[:n])))
    return refs


class HeldBytes:
    """Bytes of fetched buckets still alive (anything viewing them keeps them), their peak, and the
    largest bucket seen."""

    def __init__(self):
        self.now = 0
        self.peak = 0
        self.largest = 0
        self._lock = threading.Lock()

    def hold(self, data, nbytes: int) -> None:
        with self._lock:
            self.now += nbytes
            self.peak = max(self.peak, self.now)
            self.largest = max(self.largest, nbytes)
        weakref.finalize(data, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self.now -= nbytes


def fetch_buckets(refs: Sequence, held: HeldBytes | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the tensors of the buckets behind ``refs`` in order, fetching bucket ``i`` only when the
    consumer asks for its first tensor (bucket ``i + 1`` is pulled to this node meanwhile, into the
    object store, not into this process). Blocks: run it off an event loop."""
    import ray

    for i, ref in enumerate(refs):
        if i + 1 < len(refs) and isinstance(refs[i + 1], ray.ObjectRef):
            ray.wait([refs[i + 1]], timeout=0, fetch_local=True)
        bucket = ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref
        if held is not None and bucket.data is not None:
            held.hold(bucket.data, bucket.nbytes)
        yield from unpack_bucket(bucket)
        del bucket
