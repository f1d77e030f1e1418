"""Weights from the learner to the rollout engines, after every training step, over the configured transport.

The learner's side is :class:`actors.learner.Learner`'s public weight methods; the engines' side is
each rollout worker's ``update_weights`` (object store) or ``join_weight_group`` /
``update_weights_nccl`` (NCCL). The logic of buckets and transports is in
:mod:`nous_ray.train.publish` and :mod:`nous_ray.weight_sync`; this is the orchestration.
"""

from __future__ import annotations

import asyncio

from actors.learner import Learner
from actors.pools import RolloutPool
from actors.refs import result_of
from nous_ray.config import Config


class WeightSync:
    """Publishes the learner's weights to the rollout workers over the configured transport.

    ``object_store`` (CPU and the default): rank 0 puts the buckets into Ray's object store once and
    each worker loads them with one call, fetching bucket by bucket as its engine loads; a version
    still queued on a worker when the next arrives is dropped there. ``nccl`` (GPU): learner rank 0
    and every engine GPU form one broadcast group; the receivers learn the bucket tables (or vLLM's
    ``update_info``) once, then each publish is a single stream: the learner gathers layer by layer
    and broadcasts as it goes while every engine loads each bucket as it arrives, after its running
    requests have finished. Publishes therefore wait for the engines' drains, and one runs at a time.
    A worker that restarts loads through the object store when it has one GPU; otherwise the group
    is rebuilt (its membership changed) and everyone receives the current weights again.
    """

    def __init__(self, cfg: Config, learner: Learner, rollout: RolloutPool):
        self.cfg, self.learner, self.rollout = cfg, learner, rollout
        self.transport = cfg.weight_sync.transport
        self.tp = cfg.rollout.tensor_parallel_size
        self._group_members: list | None = None  # the workers the NCCL group was built with
        self._payload = None  # what receivers need before the bytes; fixed for a model
        self._round = asyncio.Lock()  # one NCCL broadcast at a time

    async def publish(self, version: int, reset: bool = False) -> dict[int, asyncio.Future]:
        """Send the weights as ``version``; returns, per worker, a future that completes once that
        worker has loaded them (workers load between requests)."""
        if self.transport == "nccl":
            return await self._publish_nccl(version, reset)
        buckets = await self.learner.export_weight_buckets(self.cfg.weight_sync.bucket_mb)
        return {i: asyncio.ensure_future(self.rollout.update_weights(i, version, buckets, reset))
                for i in range(self.rollout.size)}

    async def sync_one(self, i: int, version: int) -> None:
        """Worker ``i`` (just restarted) loads the current weights."""
        if self.transport == "nccl" and self.tp > 1:
            done = await self._publish_nccl(version, True)
            await done[i]
            return
        buckets = await self.learner.export_weight_buckets(self.cfg.weight_sync.bucket_mb)
        await self.rollout.update_weights(i, version, buckets, True)

    async def _publish_nccl(self, version: int, reset: bool) -> dict[int, asyncio.Future]:
        bucket_mb = self.cfg.weight_sync.bucket_mb
        async with self._round:
            workers = list(self.rollout.workers)
            if self._group_members != workers:
                await self._join_nccl(workers)
            if self._payload is None:
                self._payload = await self.learner.weight_payload(bucket_mb, self.tp)
            done = {i: asyncio.ensure_future(result_of(w.update_weights_nccl.remote(version, self._payload, reset)))
                    for i, w in enumerate(workers)}
            # Returns once the last bucket has left rank 0; the engines load as the buckets arrive.
            await self.learner.broadcast_weights(bucket_mb, self.tp)
            return done

    async def _join_nccl(self, workers: list) -> None:
        from nous_ray.weight_sync.buckets import bucket_bytes_from_mb
        from nous_ray.weight_sync.nccl import first_rank

        host, port = await self.learner.rendezvous()
        world = 1 + len(workers) * self.tp
        bucket_bytes = bucket_bytes_from_mb(self.cfg.weight_sync.bucket_mb)
        joins = [result_of(w.join_weight_group.remote(host, port, first_rank(r, self.tp), world, bucket_bytes))
                 for r, w in enumerate(workers)]
        await asyncio.gather(self.learner.join_weight_group(host, port, world), *joins)
        self._group_members = workers
