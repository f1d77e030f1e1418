"""Building the vLLM engine a rollout worker owns.

The engine is vLLM's ``LLMEngine`` with its core in this process (``InprocClient``), not
``AsyncLLM``: in vLLM 0.32 ``AsyncLLM.__init__`` always starts the engine core in a child process
(``EngineCoreClient.make_async_mp_client``), so new weights would have to be serialized across a
process boundary and the model could not be reached in place. :mod:`nous_ray.rollout.stream` drives
this engine step by step from an asyncio loop instead, which gives the same streaming (requests join
and leave the running batch at every step) with the model in reach.

With one GPU (the recipe's engines) the model itself is in this process too (``uni`` executor). With
tensor parallelism the workers are processes of vLLM's ``mp`` executor on the actor's GPUs, and new
weights reach them through vLLM's NCCL weight transfer (:mod:`nous_ray.rollout.weights`).
"""

from __future__ import annotations

import os
from typing import Any

from nous_ray.config import RolloutConfig

# Behaviour log-probs must be those of the distribution tokens were drawn from (after temperature,
# top-k and top-p), since the loss uses them as the old policy. vLLM's default, "raw_logprobs", is
# the untempered model's.
LOGPROBS_MODE = "processed_logprobs"


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def executor_backend(tensor_parallel_size: int) -> str:
    """vLLM's executor for an engine of ``tensor_parallel_size`` GPUs inside a rollout actor.

    One GPU: ``uni``, the worker in this process, so weights load in place with no copy across
    processes. More: ``mp``, worker processes on the actor's GPUs. Left to itself, vLLM picks its
    Ray executor inside a placement group (``vllm/config/parallel.py``), which wants one GPU per
    bundle (``vllm/v1/executor/ray_utils.py``) while our actor holds all of the engine's GPUs in one.
    """
    return "uni" if tensor_parallel_size == 1 else "mp"


def engine_kwargs(
    model_path: str, cfg: RolloutConfig, *, dtype: str = "auto", seed: int = 0, cpu: bool | None = None,
    hf_overrides: dict | None = None,
) -> dict[str, Any]:
    """The ``vllm.EngineArgs`` fields for one rollout engine (a pure function of the config)."""
    if cfg.tensor_parallel_size < 1:
        raise ValueError(f"rollout.tensor_parallel_size must be >= 1, got {cfg.tensor_parallel_size}")
    cpu = on_cpu() if cpu is None else cpu
    kw: dict[str, Any] = dict(
        model=model_path,
        dtype=dtype,
        seed=seed,
        max_model_len=cfg.max_model_len,
        enforce_eager=cfg.enforce_eager,
        tensor_parallel_size=cfg.tensor_parallel_size,
        distributed_executor_backend=executor_backend(cfg.tensor_parallel_size),
        logprobs_mode=LOGPROBS_MODE,
        enable_prefix_caching=True,
        # Per-step stats cost time on every engine step; the driver measures what it reports.
        disable_log_stats=True,
    )
    if cpu:
        # A small fixed KV cache: by default vLLM-CPU reserves most of the machine's memory.
        kw["kv_cache_memory_bytes"] = cfg.kv_cache_memory_bytes
    else:
        kw["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    for key in ("max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill"):
        if getattr(cfg, key) is not None:
            kw[key] = getattr(cfg, key)
    if cfg.tensor_parallel_size > 1:
        # The workers are other processes: new weights reach them through vLLM's own NCCL weight
        # transfer (nous_ray.rollout.weights.join_weight_transfer), which this creates in each worker.
        kw["weight_transfer_config"] = {"backend": "nccl"}
    if hf_overrides:
        # Model-config overrides, e.g. YaRN rope scaling for long-context evaluation.
        kw["hf_overrides"] = dict(hf_overrides)
    return kw


def build_engine(model_path: str, cfg: RolloutConfig, *, dtype: str = "auto", seed: int = 0,
                 hf_overrides: dict | None = None):
    """Start an in-process ``LLMEngine`` for ``model_path``."""
    # Must be set before vLLM reads its environment: keep the engine core in this process.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import EngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.llm_engine import LLMEngine

    args = EngineArgs(**engine_kwargs(model_path, cfg, dtype=dtype, seed=seed, hf_overrides=hf_overrides))
    # LLM_CLASS: the offline scheduler defaults (vllm.LLM's), not the engine context's smaller ones
    # (on CPU 256 sequences / 4,096 tokens per step instead of 128 / 2,048: half the engine steps).
    return LLMEngine.from_engine_args(args, usage_context=UsageContext.LLM_CLASS)
