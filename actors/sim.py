"""Stand-in workers as Ray actors, on the real placement: a simulated cluster without GPUs.

The same stand-ins as ``nous_ray.sim`` (engines, learner ranks, verifiers, whose durations come from
the cost model) as Ray actors in the placement groups of ``actors/placement.py``, each on its own
bundle of (fake) GPUs, driven by the real :class:`~nous_ray.driver.loop.Driver` through the
production pools where they apply (:class:`actors.pools.RolloutPool` for requests and worker
replacement, :class:`actors.pools.VerifierPool` for dispatch). Time is compressed: ``sim.speedup``
simulated seconds per real second (see :mod:`nous_ray.sim.clock`).

``start_sim_cluster`` builds the cluster of ``cluster.yaml`` with ``ray.cluster_utils.Cluster``: a
CPU head and ``sim.nodes`` nodes of ``sim.gpus_per_node`` fake GPUs.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import ray

from actors.pools import RolloutPool, VerifierPool, _wait
from nous_ray.config import Config, OptimConfig
from nous_ray.driver.workers import Workers
from nous_ray.sim.clock import SimClock
from nous_ray.sim.cost import CostModel
from nous_ray.sim.engine import SimEngine
from nous_ray.sim.workers import SimLearner, SimVerifier, SimWeightSync
from nous_ray.sim.workload import Workload

# Resources of one GPU node and of the head, as cluster.yaml gives them.
NODE_CPUS, HEAD_CPUS = 192, 16


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


@ray.remote
class SimRolloutActor:
    """One stand-in engine; the methods :class:`actors.pools.RolloutPool` calls on a rollout worker."""

    def __init__(self, cfg: Config, seed: int):
        self.cfg, self.seed = cfg, seed
        self.engine: SimEngine | None = None

    def _engine(self) -> SimEngine:
        if self.engine is None:  # built on the actor's event loop
            cost = CostModel.from_config(self.cfg)
            self.engine = SimEngine(cost, Workload(self.cfg.sim), SimClock(self.cfg.sim.speedup), self.seed)
        return self.engine

    async def ready(self) -> int:
        e = self._engine()
        await e.clock.sleep(self.cfg.sim.engine_start_s)
        return e.version

    async def generate(self, prompts, n: int = 1, sampling: dict | None = None, *, problem_ids=None,
                       group_ids=None, issued_step: int = 0):
        return await self._engine().generate(prompts, n, sampling or {}, problem_ids, group_ids)

    async def score(self, prompt_ids, response_ids) -> list[float]:
        return [0.0] * len(response_ids)

    async def update_weights(self, version: int, bucket_refs: list, reset: bool = False) -> int:
        return await self._engine().update_weights(version, reset)

    async def records(self) -> dict:
        """The engine's own records (simulated seconds), busy periods still open closed at ``now``."""
        e = self._engine()
        return {**e.records.summary(), "busy_intervals": e.busy_intervals(),
                "load_intervals": list(e.records.load_intervals), "node": _node_id(), "now": e.clock.now()}

    async def node(self) -> str:
        return _node_id()


class SimRolloutPool(RolloutPool):
    """The production pool (requests, replacement in the same bundle) over stand-in engines."""

    def __init__(self, cfg: Config, placement=None):
        self._seed = 0
        super().__init__(cfg, model_path="sim", placement=placement)

    def _start(self, i: int):
        r = self.cfg.rollout
        opts = {"num_cpus": r.cpus_per_worker, "num_gpus": r.gpus_per_worker, "max_concurrency": 1000}
        if self.placement is not None:
            opts["scheduling_strategy"] = self.placement.strategy_for("rollout", i)
        self._seed += 1
        return SimRolloutActor.options(**opts).remote(self.cfg, self.cfg.sim.seed * 100_003 + self._seed)

    def records(self) -> list[dict]:
        return ray.get([w.records.remote() for w in self.workers])


@ray.remote
class SimLearnerRank:
    """One learner rank: sleeps what the whole group's operation takes (the ranks work in lockstep)."""

    def __init__(self, cfg: Config, rank: int):
        self.rank = rank
        self.learner = SimLearner(CostModel.from_config(cfg), SimClock(cfg.sim.speedup))

    async def train(self, seq_lens: list[int], response_tokens: int) -> dict:
        return await self.learner.train_lengths(seq_lens, response_tokens)

    async def forward(self, seq_lens: list[int]) -> None:
        await self.learner.forward_lengths(seq_lens)

    async def publish_weights(self) -> None:
        await self.learner.publish_weights()

    async def configure_optimizer(self, optim: OptimConfig) -> None:
        await self.learner.configure_optimizer(optim)

    async def save_checkpoint(self, path: str) -> str:
        """Each rank writes its shard, as DCP does (rank 0's path is the answer)."""
        return await self.learner.save_checkpoint(path, shard=f"rank_{self.rank}")

    async def load_checkpoint(self, path: str) -> dict:
        return await self.learner.load_checkpoint(path, shard=f"rank_{self.rank}")

    async def records(self) -> dict:
        return {"train_s": self.learner.records.train_s, "sync_s": self.learner.records.sync_s,
                "steps": self.learner.records.steps, "node": _node_id()}

    async def node(self) -> str:
        return _node_id()


class SimLearnerGroup:
    """``learner.num_ranks`` stand-in ranks on the learner bundles; each call awaits every rank."""

    def __init__(self, cfg: Config, placement=None):
        lc = cfg.learner
        self.actors = []
        for r in range(lc.num_ranks):
            opts = {"num_cpus": lc.cpus_per_rank, "num_gpus": lc.gpus_per_rank}
            if placement is not None:
                opts["scheduling_strategy"] = placement.strategy_for("learner", r)
            self.actors.append(SimLearnerRank.options(**opts).remote(cfg, r))
        ray.get([a.node.remote() for a in self.actors])

    async def _all(self, method: str, *args):
        return (await asyncio.gather(*(_wait(getattr(a, method).remote(*args)) for a in self.actors)))[0]

    async def train_step(self, samples, temperature: float = 1.0, policy_version: int | None = None) -> dict:
        return await self._all("train", [s.num_tokens for s in samples], sum(len(s.response_ids) for s in samples))

    async def sft_step(self, samples) -> dict:
        await self._all("forward", [3 * s.num_tokens for s in samples])  # forward + backward
        return {"loss": 0.0}

    async def compute_logprobs(self, samples, temperature: float = 1.0) -> list[list[float]]:
        await self._all("forward", [s.num_tokens for s in samples])
        return [[0.0] * len(s.response_ids) for s in samples]

    async def configure_optimizer(self, optim: OptimConfig) -> None:
        await self._all("configure_optimizer", optim)

    async def publish_weights(self) -> None:
        await self._all("publish_weights")

    async def save_checkpoint(self, path: str) -> str:
        return await self._all("save_checkpoint", path)

    async def load_checkpoint(self, path: str) -> dict:
        return await self._all("load_checkpoint", path)

    def records(self) -> list[dict]:
        return ray.get([a.records.remote() for a in self.actors])

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []


@ray.remote(max_restarts=-1, max_task_retries=-1)  # as actors/verifier.py: lost with a node, restarted elsewhere
class SimVerifierActor:
    """Programs of the groups it is sent run ``slots`` at a time (its share of the verification bound)."""

    def __init__(self, cfg: Config, index: int, slots: int):
        self.verifier = SimVerifier(CostModel.from_config(cfg), SimClock(cfg.sim.speedup),
                                    seed=cfg.sim.seed * 1009 + index, slots=slots)

    async def verify_group(self, problem, completions: list[str]) -> list[dict]:
        return await self.verifier.verify_group(problem, completions)


class SimVerifierPool(VerifierPool):
    """The production dispatch (fewest calls in flight first) over stand-in verifier actors."""

    def __init__(self, cfg: Config, placement=None):
        v = cfg.verifier
        slots = math.ceil(CostModel.from_config(cfg).verify_slots() / max(1, v.num_actors))
        actors = []
        for k in range(v.num_actors):
            opts = {"num_cpus": v.cpus_per_actor, "max_concurrency": 1000}
            if placement is not None:
                opts["scheduling_strategy"] = placement.strategy_for("verifier", k)
            actors.append(SimVerifierActor.options(**opts).remote(cfg, k, slots))
        self._serve(actors)


def make_sim_ray_workers(cfg: Config, placement=None) -> Workers:
    """Stand-in rollout engines, learner ranks and verifiers in ``placement``'s bundles, and their sync."""
    rollout = SimRolloutPool(cfg, placement)
    learner = SimLearnerGroup(cfg, placement)
    return Workers(rollout=rollout, verifiers=SimVerifierPool(cfg, placement), learner=learner,
                   sync=SimWeightSync(learner, rollout))


def start_sim_cluster(nodes: int, gpus_per_node: int, env: dict | None = None):
    """A head with CPUs only and ``nodes`` nodes of ``gpus_per_node`` fake GPUs; connects this process.
    Returns the ``ray.cluster_utils.Cluster`` (``remove_node`` / ``add_node`` / ``shutdown``)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": HEAD_CPUS, "num_gpus": 0})
    for _ in range(nodes):
        cluster.add_node(num_cpus=NODE_CPUS, num_gpus=gpus_per_node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env={"env_vars": env or {}}, log_to_driver=False)
    return cluster


def checkpoint_shards(path: str | Path) -> list[str]:
    return sorted(p.name for p in Path(path).glob("rank_*.json"))
