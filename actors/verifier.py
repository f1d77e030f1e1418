"""Verifier actors: async Ray actors that judge groups of completions with the configured backend.

Many calls are in flight per actor (bounded by ``verifier.max_in_flight``). An actor that dies is
restarted by Ray (``max_restarts=-1``) and the calls it had not answered are re-sent by Ray
(``max_task_retries=-1``): the caller gets each answer exactly once, so nothing is lost or counted
twice. A verdict is a pure function of (problem, program), so re-running a call is safe.
"""

from __future__ import annotations

import asyncio
import os

import ray

from nous_ray.config import VerifierConfig
from nous_ray.data.problem import Problem
from nous_ray.verdicts import VerdictRecord


@ray.remote(max_restarts=-1, max_task_retries=-1)
class VerifierActor:
    def __init__(self, cfg: VerifierConfig):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from nous_ray.verify import make_backend

        self.cfg = cfg
        self.backend = make_backend(cfg)
        self._slots = asyncio.Semaphore(max(1, cfg.max_in_flight))
        self.calls = 0

    async def verify_group(self, problem: Problem, completions: list[str]) -> list[VerdictRecord]:
        """Verdicts for ``completions`` of one problem, in order: dicts of VerifyResult.to_dict()."""
        async with self._slots:
            results = await self.backend.averify([(problem, c) for c in completions])
        self.calls += 1
        return [r.to_dict() for r in results]

    async def check(self) -> None:
        """The backend's start-up check, from this actor's node and environment (Modal: one call of
        the deployed function; raises with the fix). Nothing to check for the local sandbox."""
        check = getattr(self.backend, "acheck", None)
        if check is not None:
            await check()

    def pid(self) -> int:
        return os.getpid()

    def num_calls(self) -> int:
        return self.calls


def create_verifiers(cfg: VerifierConfig, placement=None) -> list:
    """``cfg.num_actors`` verifier actors, in the placement group's bundles when one is given."""
    actors = []
    for i in range(cfg.num_actors):
        opts = dict(num_cpus=cfg.cpus_per_actor, max_concurrency=max(8, 2 * cfg.max_in_flight))
        if placement is not None:
            opts["scheduling_strategy"] = placement.strategy_for("verifier", i)
        actors.append(VerifierActor.options(**opts).remote(cfg))
    return actors
