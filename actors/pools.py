"""The rollout and verifier pools the driver and the evaluator talk to: async facades over the Ray actors.

Each pool turns actor calls into awaitables (so one asyncio loop can keep them all busy) and owns
the recovery of its actors: a rollout worker that dies is replaced by a fresh one in the same
placement bundle; verifier actors restart themselves (see ``actors/verifier.py``). The learner's
facade is :class:`actors.learner.Learner`, the weight sync :class:`actors.weight_sync.WeightSync`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from actors.refs import result_of
from actors.rollout import RolloutWorker, rollout_actor_options
from actors.verifier import create_verifiers
from nous_ray.config import Config
from nous_ray.data.problem import Problem
from nous_ray.samples import GenerationRequest, Sample
from nous_ray.verdicts import VerdictRecord

log = logging.getLogger(__name__)


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

    async def generate(self, i: int, requests: list[GenerationRequest], n: int, sampling: dict,
                       max_tokens: int) -> list[Sample]:
        """``n`` samples for each request, flattened."""
        groups = await result_of(self.workers[i].generate.remote(
            [q.prompt_ids for q in requests], n, {**sampling, "max_tokens": max_tokens},
            problem_ids=[q.problem_id for q in requests], group_ids=[q.group_id for q in requests]))
        return [s for g in groups for s in g]

    async def score(self, i: int, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """Worker ``i``'s log-probs (temperature 1) of ``response_ids`` after ``prompt_ids``."""
        return await result_of(self.workers[i].score.remote(prompt_ids, response_ids))

    async def update_weights(self, i: int, version: int, buckets: list, reset: bool = False) -> None:
        await result_of(self.workers[i].update_weights.remote(version, buckets, reset))

    async def replace(self, i: int) -> None:
        """Start a fresh worker in place of worker ``i`` (which died); done once it is ready. Its bundle
        may have to wait for a node (one lost with the old worker): this waits as long as Ray does."""
        try:
            ray.kill(self.workers[i])
        except Exception:
            pass
        self.workers[i] = self._start(i)
        await result_of(self.workers[i].ready.remote())

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

    async def verify_group(self, problem: Problem, completions: list[str]) -> list[VerdictRecord]:
        i = min(range(len(self.actors)), key=self._in_flight.__getitem__)
        self._in_flight[i] += 1
        ref = self.actors[i].verify_group.remote(problem, completions)
        self._calls.add(ref)
        try:
            verdicts = await result_of(ref)
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
