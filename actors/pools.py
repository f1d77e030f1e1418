"""The worker pools the driver and the evaluator talk to: async facades over the Ray actors.

Each pool turns actor calls into awaitables (so one asyncio loop can keep them all busy) and owns
the recovery of its actors: a rollout worker that dies is replaced by a fresh one in the same
placement bundle; verifier actors restart themselves (see ``actors/verifier.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import ray

from actors.learner import LearnerGroup
from actors.rollout import RolloutWorker, rollout_actor_options
from actors.verifier import create_verifiers
from nous_ray.config import Config, OptimConfig
from nous_ray.data.problem import Problem
from nous_ray.samples import Sample

log = logging.getLogger(__name__)


async def _wait(ref):
    return await asyncio.wrap_future(ref.future())


class RolloutPool:
    """``rollout.num_workers`` vLLM workers; requests go to the worker the caller names."""

    def __init__(self, cfg: Config, model_path: str, placement=None, hf_overrides: dict | None = None,
                 max_model_len: int | None = None):
        self.cfg, self.model_path, self.placement = cfg, model_path, placement
        self.hf_overrides, self.max_model_len = hf_overrides, max_model_len
        self.workers = [self._start(i) for i in range(cfg.rollout.num_workers)]
        # Engines start in parallel; wait for all so a broken model fails here, clearly.
        ray.get([w.ready.remote() for w in self.workers])

    @property
    def size(self) -> int:
        return len(self.workers)

    def _start(self, i: int):
        r = self.cfg.rollout
        opts: dict[str, Any] = rollout_actor_options(r)
        if self.placement is not None:
            opts["scheduling_strategy"] = self.placement.strategy_for("rollout", i)
        return RolloutWorker.options(**opts).remote(
            self.model_path, r, dtype=self.cfg.model.dtype, seed=self.cfg.model.seed + i,
            hf_overrides=self.hf_overrides, max_model_len=self.max_model_len)

    async def generate(self, i: int, requests: list[dict], n: int, sampling: dict, max_tokens: int) -> list[Sample]:
        """``n`` samples for each request ``{group_id, problem_id, prompt_ids}``, flattened."""
        groups = await _wait(self.workers[i].generate.remote(
            [q["prompt_ids"] for q in requests], n, {**sampling, "max_tokens": max_tokens},
            problem_ids=[q["problem_id"] for q in requests], group_ids=[q["group_id"] for q in requests]))
        return [s for g in groups for s in g]

    async def score(self, i: int, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """Worker ``i``'s log-probs (temperature 1) of ``response_ids`` after ``prompt_ids``."""
        return await _wait(self.workers[i].score.remote(prompt_ids, response_ids))

    async def update_weights(self, i: int, version: int, buckets: list, reset: bool = False) -> None:
        await _wait(self.workers[i].update_weights.remote(version, buckets, reset))

    async def replace(self, i: int) -> None:
        """Start a fresh worker in place of worker ``i`` (which died); done once it is ready. Its bundle
        may have to wait for a node (one lost with the old worker): this waits as long as Ray does."""
        try:
            ray.kill(self.workers[i])
        except Exception:
            pass
        self.workers[i] = self._start(i)
        await _wait(self.workers[i].ready.remote())

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []


class VerifierPool:
    """Verifier actors; each call goes to the actor with the fewest calls in flight."""

    def __init__(self, cfg: Config, placement=None):
        self._serve(create_verifiers(cfg.verifier, placement))

    def _serve(self, actors: list) -> None:
        """Dispatch over ``actors`` (the stand-in pool passes its own)."""
        self.actors = actors
        self._in_flight = [0] * len(self.actors)
        self._calls: set = set()  # ObjectRefs of calls not answered yet (a caller may have stopped waiting)

    async def verify_group(self, problem: Problem, completions: list[str]) -> list[dict]:
        i = min(range(len(self.actors)), key=self._in_flight.__getitem__)
        self._in_flight[i] += 1
        ref = self.actors[i].verify_group.remote(problem, completions)
        self._calls.add(ref)
        try:
            verdicts = await _wait(ref)
        except asyncio.CancelledError:
            raise  # the caller stopped waiting; the call runs on in the actor, and shutdown lets it finish
        except BaseException:
            self._calls.discard(ref)
            raise
        finally:
            self._in_flight[i] -= 1
        self._calls.discard(ref)
        return verdicts

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Let calls still running finish (at most ``grace_s``), then kill the actors. Killed mid-call,
        an actor that Ray restarts and retries for (``max_task_retries=-1``) reports every such call as
        failed on the console of whoever started the run."""
        running = list(self._calls)
        if running:
            ray.wait(running, num_returns=len(running), timeout=grace_s)
        self._calls.clear()
        for a in self.actors:
            ray.kill(a)
        self.actors = []


class AsyncLearner:
    """The learner group as the driver sees it: every call awaits all ranks, returns rank 0's answer."""

    def __init__(self, cfg: Config, model_path: str, placement=None):
        n = cfg.learner.num_ranks
        strategies = [placement.strategy_for("learner", r) for r in range(n)] if placement else None
        self.cfg = cfg
        self.group = LearnerGroup(model_path, cfg.learner, cfg.algo, dtype=cfg.model.dtype,
                                  scheduling_strategies=strategies)

    async def _all(self, method: str, *args):
        results = await asyncio.gather(*(_wait(r) for r in self.group.submit(method, *args)))
        return results[0]

    async def train_step(self, samples: list[Sample], temperature: float = 1.0,
                         policy_version: Optional[int] = None) -> dict:
        # The engine's log-probs are of the tempered distribution; the learner's must be too.
        return await self._all("train_step", ray.put(list(samples)), temperature, policy_version)

    async def sft_step(self, samples: list[Sample]) -> dict:
        return await self._all("sft_step", ray.put(list(samples)))

    async def compute_logprobs(self, samples: list[Sample], temperature: float = 1.0) -> list[list[float]]:
        return await self._all("compute_logprobs", ray.put(list(samples)), temperature)

    async def configure_optimizer(self, optim: OptimConfig) -> None:
        await self._all("configure_optimizer", optim)

    async def export_weight_buckets(self) -> list:
        """Rank 0's buckets as ObjectRefs (every rank joins the gather)."""
        return await self._all("export_weight_buckets", self.cfg.weight_sync.bucket_mb)

    async def save_checkpoint(self, path: str) -> str:
        return await self._all("save_checkpoint", path)

    async def load_checkpoint(self, path: str) -> dict:
        return await self._all("load_checkpoint", path)

    async def export_hf(self, out_dir: str) -> str:
        return await self._all("export_hf", out_dir)

    def shutdown(self) -> None:
        self.group.shutdown()


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

    def __init__(self, cfg: Config, learner: "AsyncLearner", rollout: RolloutPool):
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
        buckets = await self.learner.export_weight_buckets()
        return {i: asyncio.ensure_future(self.rollout.update_weights(i, version, buckets, reset))
                for i in range(self.rollout.size)}

    async def sync_one(self, i: int, version: int) -> None:
        """Worker ``i`` (just restarted) loads the current weights."""
        if self.transport == "nccl" and self.tp > 1:
            done = await self._publish_nccl(version, True)
            await done[i]
            return
        buckets = await self.learner.export_weight_buckets()
        await self.rollout.update_weights(i, version, buckets, True)

    async def _publish_nccl(self, version: int, reset: bool) -> dict[int, asyncio.Future]:
        bucket_mb = self.cfg.weight_sync.bucket_mb
        async with self._round:
            workers = list(self.rollout.workers)
            if self._group_members != workers:
                await self._join_nccl(workers)
            if self._payload is None:
                self._payload = await self.learner._all("weight_payload", bucket_mb, self.tp)
            done = {i: asyncio.ensure_future(_wait(w.update_weights_nccl.remote(version, self._payload, reset)))
                    for i, w in enumerate(workers)}
            # Returns once the last bucket has left rank 0; the engines load as the buckets arrive.
            await self.learner._all("broadcast_weights", bucket_mb, self.tp)
            return done

    async def _join_nccl(self, workers: list) -> None:
        from nous_ray.weight_sync.buckets import bucket_bytes_from_mb
        from nous_ray.weight_sync.nccl import first_rank

        host, port = await _wait(self.learner.group.actors[0].rendezvous.remote())
        world = 1 + len(workers) * self.tp
        bucket_bytes = bucket_bytes_from_mb(self.cfg.weight_sync.bucket_mb)
        joins = [_wait(w.join_weight_group.remote(host, port, first_rank(r, self.tp), world, bucket_bytes))
                 for r, w in enumerate(workers)]
        await asyncio.gather(self.learner._all("join_weight_group", host, port, world), *joins)
        self._group_members = workers


def make_rollout_pool(cfg: Config, model_path: str, placement=None, hf_overrides: dict | None = None,
                      max_model_len: int | None = None) -> RolloutPool:
    return RolloutPool(cfg, model_path, placement, hf_overrides, max_model_len)


def make_verifier_pool(cfg: Config, placement=None) -> VerifierPool:
    return VerifierPool(cfg, placement)


def make_learner_group(cfg: Config, model_path: str, placement=None) -> AsyncLearner:
    return AsyncLearner(cfg, model_path, placement)


def make_weight_sync(cfg: Config, learner: AsyncLearner, rollout: RolloutPool) -> WeightSync:
    return WeightSync(cfg, learner, rollout)
