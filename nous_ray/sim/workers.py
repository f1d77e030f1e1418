"""Stand-in worker pools in one process, implementing the driver's protocols (:mod:`nous_ray.driver.workers`).

Every operation takes the time the cost model gives it, on a :class:`~nous_ray.sim.clock.SimClock`;
run on a :class:`~nous_ray.sim.clock.VirtualClockLoop` a simulated 14B run of many steps takes
seconds. The Ray-actor versions (``actors/sim.py``) wrap the same pieces. Faults can be injected:
:meth:`SimRolloutPool.crash` (a worker dies), :meth:`SimLearner.crash` (a learner rank dies),
``sim.infra_error_rate`` (verifications fail).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
from dataclasses import dataclass
from pathlib import Path

from nous_ray.config import Config, OptimConfig
from nous_ray.data.problem import Problem
from nous_ray.driver.workers import Workers
from nous_ray.samples import Sample
from nous_ray.sim.clock import SimClock
from nous_ray.sim.cost import CostModel
from nous_ray.sim.engine import EngineRecords, SimEngine
from nous_ray.sim.host import SharedHost
from nous_ray.sim.workload import NO_CODE, PASS, Workload


def verdict_of(text: str) -> dict:
    if text == PASS:
        return {"verdict": "accepted", "reward": 1.0}
    if text == NO_CODE:
        return {"verdict": "no_code", "reward": -1.0}
    return {"verdict": "wrong_answer", "reward": -1.0}


class SimVerifier:
    """Programs run ``slots`` at a time (``cost.verify_slots()`` by default), first come first served;
    each takes ``cost.program_s``. A response without code runs nothing, and a group's repeated
    programs run once (``sim.distinct_programs``). On a machine of its own the queue is computed, not
    awaited per program (each slot's next free time is known, so a group waits once); on a shared host
    each program is work that the other roles slow down."""

    def __init__(self, cost: CostModel, clock: SimClock, seed: int = 0, slots: int | None = None,
                 host: SharedHost | None = None):
        self.cost, self.clock, self.host = cost, clock, host or SharedHost()
        self.rng = random.Random(f"{seed}:verify")
        n = slots or cost.verify_slots()
        self._free_at = [0.0] * n  # a heap: when each slot is next free
        self._slots = asyncio.Semaphore(n)
        self.program_s = 0.0  # program-seconds of verification done (on an idle machine)
        self.programs = 0

    def _durations(self, problem: Problem, completions: list[str]) -> tuple[list[float], list[dict]]:
        sim, durations, out = self.cost.sim, [], []
        for k, text in enumerate(completions):
            d = self.cost.program_s(text == PASS, self.rng.random(), len(problem.tests) or None)
            if text != NO_CODE and (k == 0 or self.rng.random() < sim.distinct_programs):
                durations.append(d)
            infra = self.rng.random() < sim.infra_error_rate
            out.append({"verdict": "infra_error", "reward": None, "detail": "stand-in infra error"} if infra
                       else verdict_of(text))
        self.program_s += sum(durations)
        self.programs += len(durations)
        return durations, out

    async def _run(self, d: float) -> None:
        async with self._slots:
            await self.host.work(self.clock, d)

    async def verify_group(self, problem: Problem, completions: list[str]) -> list[dict]:
        durations, out = self._durations(problem, completions)
        if self.host.cores:
            await asyncio.gather(*(self._run(d) for d in durations))
            return out
        now = done = self.clock.now()
        for d in durations:
            end = max(now, heapq.heappop(self._free_at)) + d
            heapq.heappush(self._free_at, end)
            done = max(done, end)
        await self.clock.sleep(done - now)
        return out


@dataclass
class LearnerRecords:
    """Seconds the learner group spent training and publishing weights; steps trained."""

    train_s: float = 0.0
    sync_s: float = 0.0
    steps: int = 0


class LearnerLost(RuntimeError):
    pass


class SimLearner:
    """The learner group: every call takes the cost model's time for the whole group."""

    def __init__(self, cost: CostModel, clock: SimClock, host: SharedHost | None = None):
        self.cost, self.clock, self.host = cost, clock, host or SharedHost()
        self.records = LearnerRecords()
        self._lost: str | None = None
        lc = cost.cfg.learner
        self.threads = lc.num_ranks * max(1, int(lc.cpus_per_rank))  # torch threads per rank (actors/learner.py)

    def crash(self, why: str = "learner rank died") -> None:
        self._lost = why

    def _check(self) -> None:
        if self._lost:
            raise LearnerLost(self._lost)

    async def _busy(self, seconds: float) -> None:
        self._check()
        await self.host.work(self.clock, seconds, self.threads)
        self._check()

    async def train_lengths(self, seq_lens: list[int], response_tokens: int) -> dict:
        """One RL step over sequences of these lengths (prompt + response)."""
        d = self.cost.train_step_s(seq_lens)
        await self._busy(d)
        self.records.train_s += d
        self.records.steps += 1
        return {"loss": 0.0, "tokens": response_tokens}

    async def forward_lengths(self, seq_lens: list[int]) -> None:
        await self._busy(self.cost.logprobs_s(seq_lens))

    async def train_step(self, samples: list[Sample], temperature: float = 1.0,
                         policy_version: int | None = None) -> dict:
        return await self.train_lengths([s.num_tokens for s in samples], sum(len(s.response_ids) for s in samples))

    async def sft_step(self, samples: list[Sample]) -> dict:
        await self.forward_lengths([3 * s.num_tokens for s in samples])  # forward + backward
        return {"loss": 0.0}

    async def configure_optimizer(self, optim: OptimConfig) -> None:
        self._check()

    async def compute_logprobs(self, samples: list[Sample], temperature: float = 1.0) -> list[list[float]]:
        await self.forward_lengths([s.num_tokens for s in samples])
        return [[0.0] * len(s.response_ids) for s in samples]

    async def publish_weights(self) -> None:
        d = self.cost.sync_learner_s()
        await self._busy(d)
        self.records.sync_s += d

    async def save_checkpoint(self, path: str, shard: str = "rank_0") -> str:
        """Writes ``<path>/<shard>.json`` (a rank's shard of the learner state); rank 0 also writes the
        real learner checkpoint's layout (DCP's index and shard, of a one-element stand-in state, and
        the state file), so a resume verifies it as it verifies a real one."""
        self._check()
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        state = {"train_steps": self.records.steps}
        if shard == "rank_0":
            import torch
            import torch.distributed.checkpoint as dcp

            from nous_ray.train.checkpoint import STATE_FILE

            dcp.save({"stand_in": torch.zeros(1)}, checkpoint_id=str(p), no_dist=True)
            (p / STATE_FILE).write_text(json.dumps(state))
        (p / f"{shard}.json").write_text(json.dumps(state))
        return path

    async def load_checkpoint(self, path: str, shard: str = "rank_0") -> dict:
        self._check()
        f = Path(path) / f"{shard}.json"
        if not f.exists():
            raise FileNotFoundError(f"{f}: no stand-in learner state in this checkpoint")
        return json.loads(f.read_text())


class SimRolloutPool:
    """``rollout.num_workers`` stand-in engines; requests go to the worker the caller names."""

    def __init__(self, cfg: Config, cost: CostModel, clock: SimClock, host: SharedHost | None = None):
        self.cfg, self.cost, self.clock, self.host = cfg, cost, clock, host
        self.workload = Workload(cfg.sim)
        self._incarnation = 0
        self.engines = [self._new(i) for i in range(cfg.rollout.num_workers)]
        self.retired: list[EngineRecords] = []  # records of engines that were replaced

    def _new(self, i: int) -> SimEngine:
        self._incarnation += 1
        return SimEngine(self.cost, self.workload, self.clock, seed=hash((self.cfg.sim.seed, i, self._incarnation)),
                         host=self.host)

    @property
    def size(self) -> int:
        return len(self.engines)

    async def generate(self, i: int, requests: list[dict], n: int, sampling: dict, max_tokens: int) -> list[Sample]:
        groups = await self.engines[i].generate(
            [q["prompt_ids"] for q in requests], n, {**sampling, "max_tokens": max_tokens},
            [q["problem_id"] for q in requests], [q["group_id"] for q in requests])
        return [s for g in groups for s in g]

    async def score(self, i: int, prompt_ids, response_ids) -> list[float]:
        return [0.0] * len(response_ids)

    async def update_weights(self, i: int, version: int, buckets: list, reset: bool = False) -> None:
        await self.engines[i].update_weights(version, reset)

    def crash(self, i: int) -> None:
        self.engines[i].crash(f"stand-in rollout worker {i} crashed")

    async def replace(self, i: int) -> None:
        """A fresh engine in place of worker ``i`` after ``sim.engine_start_s``."""
        old = self.engines[i]
        old.crash("replaced")
        await self.clock.sleep(self.cfg.sim.engine_start_s)
        self.retired.append(old.records)
        self.engines[i] = self._new(i)


class SimWeightSync:
    """The learner's publish (gather + send), then each engine's load (after its drain, in drain mode).
    Works on the in-process pools and on the Ray ones (``actors/sim.py``): the buckets are implied."""

    def __init__(self, learner: SimLearner, rollout: SimRolloutPool):
        self.learner, self.rollout = learner, rollout

    async def publish(self, version: int, reset: bool = False) -> dict:
        await self.learner.publish_weights()
        return {i: asyncio.ensure_future(self.rollout.update_weights(i, version, [], reset))
                for i in range(self.rollout.size)}

    async def sync_one(self, i: int, version: int) -> None:
        await self.learner.publish_weights()
        await self.rollout.update_weights(i, version, [], True)


def make_sim_workers(cfg: Config, clock: SimClock | None = None) -> Workers:
    """Stand-in rollout pool, verifiers, learner and weight sync for ``cfg`` (on ``clock``)."""
    clock = clock or SimClock()
    cost = CostModel.from_config(cfg)
    host = SharedHost(cfg.sim.host_cores, cfg.sim.host_background)
    rollout = SimRolloutPool(cfg, cost, clock, host)
    learner = SimLearner(cost, clock, host)
    return Workers(rollout=rollout, verifiers=SimVerifier(cost, clock, cfg.sim.seed, host=host), learner=learner,
                   sync=SimWeightSync(learner, rollout))
