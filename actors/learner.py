"""The learner ranks as Ray actors: N :class:`LearnerActor` in one torch.distributed group.

:class:`Learner` creates the actors, picks MASTER_ADDR (rank 0's node) and a free port there, and
calls every method on all ranks at once (FSDP collectives need every rank), awaiting them all and
answering rank 0's result: it is the driver's :class:`nous_ray.driver.workers.Learner`. Batches
travel as one Ray object: the learner ``ray.put``s a list of samples once and each rank fetches it,
so the driver never sends a copy per rank.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Optional, Sequence

import ray

from actors.refs import result_of
from nous_ray.config import AlgoConfig, Config, LearnerConfig, OptimConfig
from nous_ray.samples import Sample

__all__ = ["LearnerActor", "Learner"]


def _resolve(samples):
    # A list of per-sample ObjectRefs (a driver that keeps samples in the object store) is fetched
    # here, on the rank, so the samples never pass through the driver.
    if isinstance(samples, list) and samples and isinstance(samples[0], ray.ObjectRef):
        return ray.get(samples)
    return samples


@ray.remote
class LearnerActor:
    """One rank: a :class:`nous_ray.train.PolicyTrainer` behind Ray methods."""

    def __init__(self, num_threads: int = 1):
        import torch

        # Ray gives the actor its CPU share, not the machine: torch must not start a thread per core.
        torch.set_num_threads(max(1, num_threads))
        self.trainer = None
        self._nccl = None

    def rendezvous(self) -> tuple[str, int]:
        """This node's IP and a port free on it (asked of rank 0 for MASTER_ADDR/PORT)."""
        from nous_ray.train.dist import free_port

        return ray.util.get_node_ip_address(), free_port()

    def init(self, model_path: str, cfg: LearnerConfig, algo: AlgoConfig, dtype: str, rank: int,
             world_size: int, master_addr: str, master_port: int) -> int:
        from nous_ray.train import PolicyTrainer

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK="0")
        self.trainer = PolicyTrainer(model_path, cfg, algo, dtype=dtype, rank=rank, world_size=world_size,
                                     master_addr=master_addr, master_port=master_port)
        return rank

    def train_step(self, samples, temperature: float = 1.0, policy_version: Optional[int] = None) -> dict:
        return self.trainer.train_step(_resolve(samples), temperature, policy_version)

    def sft_step(self, samples) -> dict:
        return self.trainer.sft_step(_resolve(samples))

    def compute_logprobs(self, samples, temperature: float = 1.0) -> list[list[float]]:
        return self.trainer.compute_logprobs(_resolve(samples), temperature)

    def configure_optimizer(self, optim: OptimConfig) -> None:
        self.trainer.configure_optimizer(optim)

    def save_checkpoint(self, path: str, extra: Optional[dict] = None) -> str:
        return self.trainer.save_checkpoint(path, extra)

    def load_checkpoint(self, path: str) -> dict:
        return self.trainer.load_checkpoint(path)

    def export_hf(self, out_dir: str) -> Optional[str]:
        return self.trainer.export_hf(out_dir)

    # ---- weights to the rollout engines (logic in nous_ray.train.publish) ------------------
    def export_weight_buckets(self, bucket_mb: float) -> list:
        """Object-store transport. Every rank joins the gathers; rank 0 puts one bucket at a time
        into the object store and returns the refs, the others []."""
        from nous_ray.train.publish import put_weights
        from nous_ray.weight_sync.buckets import bucket_bytes_from_mb

        return put_weights(self.trainer, bucket_bytes_from_mb(bucket_mb))

    def weight_payload(self, bucket_mb: float, tensor_parallel_size: int):
        """What a NCCL receiver needs before the bytes (names, shapes and dtypes; no gathering)."""
        from nous_ray.train.publish import receiver_payload
        from nous_ray.weight_sync.buckets import bucket_bytes_from_mb

        return receiver_payload(self.trainer, bucket_bytes_from_mb(bucket_mb), tensor_parallel_size)

    def join_weight_group(self, host: str, port: int, world_size: int) -> None:
        """Rank 0 joins the broadcast group as its rank 0 (blocks until every engine joined)."""
        if self.trainer.rank != 0:
            return
        import torch

        from nous_ray.weight_sync.nccl import open_group

        old, self._nccl = self._nccl, None
        if old is not None:
            old.destroy()
        self._nccl = open_group(host, port, 0, world_size, torch.cuda.current_device())

    def broadcast_weights(self, bucket_mb: float, tensor_parallel_size: int) -> dict:
        """NCCL transport: every rank joins the gathers, rank 0 broadcasts as it goes."""
        from nous_ray.train.publish import broadcast_weights
        from nous_ray.weight_sync.buckets import bucket_bytes_from_mb

        return broadcast_weights(self.trainer, self._nccl, bucket_bytes_from_mb(bucket_mb), tensor_parallel_size)

    def full_state(self, with_optimizer: bool = False) -> tuple[dict, dict]:
        """(HF-named weights, optimizer state) unsharded on rank 0; ({}, {}) elsewhere. For tests."""
        weights = dict(self.trainer.full_weights())
        optim = self.trainer.full_optimizer_state() if with_optimizer else {}
        return weights, optim

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.close()


class Learner:
    """``cfg.num_ranks`` learner actors training one model together; every call runs on all ranks,
    awaits them all and answers rank 0's result (they agree).

    Args:
        model_path: Hugging Face folder (e.g. from ``resolve_model_path``).
        cfg: learner settings; ``cpus_per_rank``/``gpus_per_rank`` are each actor's Ray resources.
        algo: objective settings.
        dtype: parameter dtype on CPU (``ModelConfig.dtype``).
        scheduling_strategies: one per rank (e.g. ``Placement.strategy_for("learner", i)``); None
            lets Ray place them.

    Construction blocks until every rank has loaded the model.
    """

    def __init__(self, model_path: str, cfg: LearnerConfig, algo: AlgoConfig, dtype: str = "float32",
                 scheduling_strategies: Optional[Sequence[Any]] = None):
        n = cfg.num_ranks
        if n < 1:
            raise ValueError(f"learner.num_ranks must be >= 1, got {n}")
        if scheduling_strategies is not None and len(scheduling_strategies) != n:
            raise ValueError(f"Learner: {len(scheduling_strategies)} scheduling strategies for {n} ranks")
        threads = max(1, int(cfg.cpus_per_rank))
        env = {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        self.cfg = cfg
        self.actors = []
        for r in range(n):
            opts: dict[str, Any] = {"num_cpus": cfg.cpus_per_rank, "num_gpus": cfg.gpus_per_rank,
                                    "runtime_env": {"env_vars": env}}
            if scheduling_strategies is not None:
                opts["scheduling_strategy"] = scheduling_strategies[r]
            self.actors.append(LearnerActor.options(**opts).remote(threads))
        addr, port = ray.get(self.actors[0].rendezvous.remote())
        ray.get([a.init.remote(model_path, cfg, algo, dtype, r, n, addr, port) for r, a in enumerate(self.actors)])

    @classmethod
    def for_run(cls, cfg: Config, model_path: str, placement=None) -> "Learner":
        """The run's learner: ``cfg.learner`` ranks on ``placement``'s learner bundles (None: Ray places them)."""
        n = cfg.learner.num_ranks
        strategies = [placement.strategy_for("learner", r) for r in range(n)] if placement else None
        return cls(model_path, cfg.learner, cfg.algo, dtype=cfg.model.dtype, scheduling_strategies=strategies)

    async def _all(self, method: str, *args):
        results = await asyncio.gather(*(result_of(getattr(a, method).remote(*args)) for a in self.actors))
        return results[0]

    @staticmethod
    def _batch(samples):
        # One object for all ranks; an ObjectRef or a list of ObjectRefs passes through.
        if isinstance(samples, ray.ObjectRef):
            return samples
        if isinstance(samples, list) and samples and isinstance(samples[0], ray.ObjectRef):
            return samples
        return ray.put(list(samples))

    # ---- training -------------------------------------------------------------------------------

    async def train_step(self, samples: Sequence[Sample], temperature: float = 1.0,
                         policy_version: Optional[int] = None) -> dict[str, Any]:
        # The engine's log-probs are of the tempered distribution; the learner's must be too.
        return await self._all("train_step", self._batch(samples), temperature, policy_version)

    async def sft_step(self, samples: Sequence[Sample]) -> dict[str, Any]:
        return await self._all("sft_step", self._batch(samples))

    async def compute_logprobs(self, samples: Sequence[Sample], temperature: float = 1.0) -> list[list[float]]:
        return await self._all("compute_logprobs", self._batch(samples), temperature)

    async def configure_optimizer(self, optim: OptimConfig) -> None:
        await self._all("configure_optimizer", optim)

    async def save_checkpoint(self, path: str, extra: Optional[dict] = None) -> str:
        return await self._all("save_checkpoint", str(path), extra)

    async def load_checkpoint(self, path: str) -> dict:
        return await self._all("load_checkpoint", str(path))

    async def export_hf(self, out_dir: str) -> str:
        return await self._all("export_hf", str(out_dir))

    async def full_state(self, with_optimizer: bool = False) -> tuple[dict, dict]:
        """(HF-named weights, optimizer state) unsharded (for tests and inspection)."""
        return await self._all("full_state", with_optimizer)

    # ---- weights to the rollout engines (what actors/weight_sync.py drives) ---------------------

    async def export_weight_buckets(self, bucket_mb: float) -> list[ray.ObjectRef]:
        """Object-store transport: rank 0's buckets as ObjectRefs (every rank joins the gathers)."""
        return await self._all("export_weight_buckets", bucket_mb)

    async def rendezvous(self) -> tuple[str, int]:
        """Rank 0's node IP and a port free there: where a NCCL weight group can meet."""
        return await result_of(self.actors[0].rendezvous.remote())

    async def weight_payload(self, bucket_mb: float, tensor_parallel_size: int):
        """What a NCCL receiver needs before the bytes (names, shapes, dtypes; nothing gathered)."""
        return await self._all("weight_payload", bucket_mb, tensor_parallel_size)

    async def join_weight_group(self, host: str, port: int, world_size: int) -> None:
        """Rank 0 joins the NCCL weight group as its rank 0 (done once every engine joined)."""
        await self._all("join_weight_group", host, port, world_size)

    async def broadcast_weights(self, bucket_mb: float, tensor_parallel_size: int) -> dict:
        """NCCL transport: every rank joins the gathers, rank 0 broadcasts bucket by bucket; done
        once the last bucket has left rank 0."""
        return await self._all("broadcast_weights", bucket_mb, tensor_parallel_size)

    def shutdown(self) -> None:
        try:
            ray.get([a.close.remote() for a in self.actors], timeout=60)
        except Exception:  # a dead rank must not keep the others alive
            pass
        for a in self.actors:
            ray.kill(a)
        self.actors = []
