"""The rollout worker: a Ray actor owning one vLLM engine (logic in :mod:`nous_ray.rollout`).

An async actor: concurrent ``generate`` calls share the engine's running batch, and
``update_weights`` lands between engine steps: at once, running requests continuing under the new
weights (``rollout.weight_update=inflight``), or once they have finished (``drain``).
See :mod:`nous_ray.rollout.engine` for why the engine is the
in-process ``LLMEngine`` rather than vLLM's ``AsyncLLM``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import ray

from nous_ray.config import RolloutConfig

# Environment the engine needs in the actor's process, set before torch or vLLM load there.
_PASS_THROUGH_ENV = (
    "HF_HUB_OFFLINE", "VLLM_HOST_IP", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR",
    "VLLM_CPU_KVCACHE_SPACE", "TOKENIZERS_PARALLELISM", "VLLM_LOGGING_LEVEL",
)


def rollout_actor_options(cfg: RolloutConfig) -> dict[str, Any]:
    """Ray resources and environment of one rollout worker."""
    if cfg.gpus_per_worker and cfg.gpus_per_worker < cfg.tensor_parallel_size:
        raise ValueError(
            f"rollout.gpus_per_worker ({cfg.gpus_per_worker}) must cover "
            f"rollout.tensor_parallel_size ({cfg.tensor_parallel_size})"
        )
    env = {k: os.environ[k] for k in _PASS_THROUGH_ENV if k in os.environ}
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if not cfg.gpus_per_worker:
        # Several actors share few cores; one OpenMP thread each keeps them from thrashing.
        env["OMP_NUM_THREADS"] = "1"
    return dict(
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker,
        runtime_env={"env_vars": env},
        max_concurrency=1000,
    )


@ray.remote
class RolloutWorker:
    def __init__(self, model_path: str, cfg: RolloutConfig, *, dtype: str = "auto", seed: int = 0,
                 version: int = 0, hf_overrides: dict | None = None, max_model_len: int | None = None):
        if max_model_len is not None:
            cfg = dataclasses.replace(cfg, max_model_len=max_model_len)
        self._args = (model_path, cfg, dtype, seed, version)
        self._hf_overrides = hf_overrides
        self._stream = None
        self._starting: asyncio.Lock | None = None
        self._nccl = None
        self._tp = cfg.tensor_parallel_size

    async def _engine(self):
        # Built on the actor's event loop thread, where every later engine call runs.
        if self._stream is None:
            if self._starting is None:
                self._starting = asyncio.Lock()
            async with self._starting:
                if self._stream is None:
                    from nous_ray.rollout.engine import build_engine
                    from nous_ray.rollout.stream import StreamingEngine

                    model_path, cfg, dtype, seed, version = self._args
                    self._stream = StreamingEngine(
                        build_engine(model_path, cfg, dtype=dtype, seed=seed, hf_overrides=self._hf_overrides),
                        version, weight_update=cfg.weight_update)
        return self._stream

    async def ready(self) -> int:
        """Start the engine (if not yet); returns the loaded policy version."""
        return (await self._engine()).version

    async def engine_info(self) -> dict:
        """What the running engine was built with: max_model_len and the model config's rope settings."""
        s = await self._engine()
        hf = s.engine.model_config.hf_config
        rope = getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None)
        return {"max_model_len": s.max_model_len, "rope": dict(rope) if rope else None,
                "max_position_embeddings": getattr(hf, "max_position_embeddings", None)}

    async def version(self) -> int:
        return (await self._engine()).version

    async def stats(self) -> dict:
        """The engine's steps, seconds stepping and loading weights (busy fractions in benchmarks)."""
        return (await self._engine()).stats()

    async def generate(self, prompts: list[list[int]], n: int = 1, sampling: dict | None = None, *,
                       problem_ids: list[str] | None = None, group_ids: list[int] | None = None,
                       issued_step: int = 0):
        """``n`` :class:`~nous_ray.samples.Sample` per token-id prompt, grouped per prompt."""
        s = await self._engine()
        return await s.generate(prompts, n, sampling, problem_ids=problem_ids, group_ids=group_ids,
                                issued_step=issued_step)

    async def score(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """Log-probs of ``response_ids`` after ``prompt_ids`` under the loaded weights (temperature 1)."""
        return await (await self._engine()).score(prompt_ids, response_ids)

    async def update_weights(self, version: int, bucket_refs: list, reset: bool = False) -> dict:
        """Object-store transport: load the buckets (``ObjectRef``s of
        :class:`~nous_ray.weight_sync.buckets.Bucket`, or buckets) in place as ``version``, fetching
        each as the engine loads it. Dropped, never fetched, if a later update arrives while this one
        waits for its turn (an update in progress, or the running requests when draining). Returns
        the update's summary with ``peak_held_bytes`` (bucket
        bytes alive at once) and ``largest_bucket_bytes``."""
        from nous_ray.rollout.weights import load_from_store
        from nous_ray.weight_sync.object_store import HeldBytes

        s = await self._engine()
        held = HeldBytes()
        out = await s.update_weights(version, lambda engine: load_from_store(engine, bucket_refs, held), reset=reset)
        return {**out, "peak_held_bytes": held.peak, "largest_bucket_bytes": held.largest}

    # ---- NCCL transport (GPU only) -------------------------------------------------------
    async def join_weight_group(self, host: str, port: int, first_rank: int, world_size: int,
                                bucket_bytes: int) -> None:
        """Join learner rank 0's broadcast group at ranks ``first_rank ..`` (one per GPU of the
        engine); blocks until every member has joined. A one-GPU engine joins with a communicator of
        its own; an engine of several GPUs through vLLM's weight transfer (each worker joins)."""
        from nous_ray.weight_sync.nccl import open_group, vllm_init_info

        s = await self._engine()
        if self._tp == 1:
            import torch

            old, self._nccl = self._nccl, None
            if old is not None:
                old.destroy()
            self._nccl = await asyncio.to_thread(open_group, host, port, first_rank, world_size,
                                                 torch.cuda.current_device())
        else:
            from nous_ray.rollout.weights import join_weight_transfer

            info, rejoin = vllm_init_info(host, port, first_rank, world_size, bucket_bytes), self._nccl is not None
            self._nccl = None
            await s.run_idle(lambda engine: join_weight_transfer(engine, info, rejoin))
            self._nccl = "vllm"  # the group lives in vLLM's workers

    async def update_weights_nccl(self, version: int, payload, reset: bool = False) -> dict:
        """Receive learner rank 0's broadcast and load it as ``version``, bucket by bucket as it
        arrives (between two engine steps; when draining, after the running requests finish).
        ``payload``: the bucket tables
        (``plan_buckets``) for a one-GPU engine, vLLM's ``update_info`` for a larger one. Never
        dropped: the sender is already broadcasting to every member of the group."""
        if self._nccl is None:
            raise RuntimeError("update_weights_nccl: call join_weight_group first")
        s = await self._engine()
        if self._tp > 1:
            from nous_ray.rollout.weights import receive_weight_transfer

            return await s.update_weights(version, lambda engine: receive_weight_transfer(engine, payload),
                                          reset=reset, droppable=False)
        import torch

        from nous_ray.rollout.weights import load_broadcast
        from nous_ray.weight_sync.buckets import bucket_nbytes
        from nous_ray.weight_sync.nccl import BucketBuffers

        buffers = BucketBuffers(max(bucket_nbytes(t) for t in payload), torch.device("cuda", torch.cuda.current_device()))
        out = await s.update_weights(version, lambda engine: load_broadcast(engine, self._nccl, payload, buffers),
                                     reset=reset, droppable=False)
        return {**out, "buffer_bytes": buffers.allocated_bytes, "replaced_buffers": buffers.replaced}
