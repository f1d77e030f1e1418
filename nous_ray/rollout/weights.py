"""Loading new weights into a running vLLM engine in place (no restart).

One-GPU engines (vLLM's in-process ``uni`` executor, the recipe's): :func:`load_tensors` hands a
stream of ``(name, tensor)`` to the worker's ``model_runner.reload_weights`` in this process, which
loads each tensor as it is pulled from the stream, so buckets can arrive (object store or NCCL) while
earlier ones load, and nothing is copied across a process boundary.

Engines of several GPUs (vLLM's ``mp`` executor: the workers are other processes, which a CUDA
tensor cannot be pickled to) take the weights through vLLM's own weight-transfer mechanism: the
engine is built with ``weight_transfer_config={"backend": "nccl"}`` and driven with ``collective_rpc``
(``init_weight_transfer_engine`` once, then ``start_weight_update`` / ``update_weights`` /
``finish_weight_update`` per sync; ``vllm/v1/worker/gpu_worker.py``). Each worker receives the
learner's broadcast and loads its own shard (:func:`join_weight_transfer`,
:func:`receive_weight_transfer`).

Why not ``model.load_weights``: vLLM post-processes weights after loading (on CPU, linear layers are
repacked for oneDNN and their ``weight`` emptied), so writing parameters directly misses or breaks
them. ``model_runner.reload_weights`` re-runs that processing layer by layer and copies the result
into the original storage. It does not reach a tied output head: the head shares the embedding's
parameter but keeps its own packed copy, so we re-tie it and re-run its processing.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch

from nous_ray.weight_sync.buckets import Bucket
from nous_ray.weight_sync.nccl import BucketBuffers, receive_tensors
from nous_ray.weight_sync.object_store import HeldBytes, fetch_buckets


def _worker(obj):
    # collective_rpc hands callables vLLM's WorkerWrapperBase; the worker is inside it.
    return getattr(obj, "worker", obj)


def ties_embeddings(model: torch.nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))


def retie_output_head(model: torch.nn.Module) -> bool:
    """Point a tied ``lm_head`` at the embedding again and redo its kernel processing.

    Returns whether the model ties them. No-op for untied models.
    """
    tied = ties_embeddings(model)
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if not tied or head is None or embed is None or not hasattr(head, "tie_weights"):
        return False
    head.tie_weights(embed)
    qm = getattr(head, "quant_method", None)
    if qm is not None and hasattr(qm, "process_weights_after_loading"):
        qm.process_weights_after_loading(head)  # CPU: re-packs the head from the new embedding
    return True


@torch.no_grad()
def load_named_tensors(worker, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
    """Load checkpoint-format ``(name, tensor)`` pairs into ``worker``'s model; returns the count
    loaded. A tied model's ``lm_head.weight`` (transformers' state dicts list it beside the
    embedding it shares) is skipped: the head follows the embedding."""
    worker = _worker(worker)
    skip = {"lm_head.weight"} if ties_embeddings(worker.model_runner.get_model()) else set()
    count = 0

    def counted():
        nonlocal count
        for name, t in named_tensors:
            if name in skip:
                continue
            count += 1
            yield name, t

    worker.model_runner.reload_weights(weights_iterator=counted(), is_checkpoint_format=True)
    retie_output_head(worker.model_runner.get_model())
    return count


def in_process(engine) -> bool:
    """Whether the engine's one worker runs in this process (vLLM's ``uni`` executor)."""
    return engine.vllm_config.parallel_config.distributed_executor_backend == "uni"


def load_tensors(engine, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
    """Load a stream of checkpoint-format tensors into an in-process engine (``uni`` executor);
    returns the count. ``collective_rpc`` calls the worker in this process, so the stream is pulled
    lazily by vLLM's loader, tensor by tensor."""
    if not in_process(engine):
        raise RuntimeError("load_tensors: the engine's workers run in other processes (tensor parallelism); "
                           "load through vLLM's weight transfer (weight_sync.transport=nccl)")
    (count,) = engine.collective_rpc(load_named_tensors, args=(named_tensors,))
    return int(count)


def _engine_core(engine):
    """The ``EngineCore`` of an in-process ``LLMEngine`` (``InprocClient``: the scheduler lives in this
    process whatever the executor, see nous_ray/rollout/engine.py)."""
    core = getattr(engine.engine_core, "engine_core", None)
    if core is None or not hasattr(core, "scheduler"):
        raise RuntimeError("in-flight weight update: the engine core is not in this process "
                           "(VLLM_ENABLE_V1_MULTIPROCESSING must be 0); use rollout.weight_update=drain")
    return core


def reset_prefix_cache(engine) -> None:
    """Make sure no request reuses KV blocks computed with the old weights.

    Without running requests vLLM drops its whole prefix cache. With running requests (an in-flight
    update) it refuses (``BlockPool.reset_prefix_cache``), so every block leaves the prefix-cache table
    instead (``BlockPool.evict_blocks``: blocks in use stay with their requests, which keep their KV;
    free ones become plain free blocks): no request, waiting or new, can hit a block of the old weights.
    """
    if engine.reset_prefix_cache():
        return
    pool = _engine_core(engine).scheduler.kv_cache_manager.block_pool
    pool.evict_blocks(set(range(len(pool.blocks))))
    if len(pool.cached_block_hash_to_block):
        raise RuntimeError("weight update: blocks of the old weights are still in the engine's prefix cache")


def pause_scheduling(engine) -> Iterator[list]:
    """Stop scheduling new work (vLLM's ``PAUSED_ALL``, the state of ``pause_scheduler(mode="keep")``):
    yields the outputs of batches already in flight (async scheduling keeps one queued on GPU) until
    none is, so new weights load on an idle device and every token is labelled with the weights that
    sampled it. Running requests keep their KV cache. :func:`resume_scheduling` undoes it."""
    from vllm.v1.core.sched.interface import PauseState

    core = _engine_core(engine)
    core.scheduler.set_pause_state(PauseState.PAUSED_ALL)
    while core.batch_queue:
        yield engine.step()


def resume_scheduling(engine) -> None:
    from vllm.v1.core.sched.interface import PauseState

    _engine_core(engine).scheduler.set_pause_state(PauseState.UNPAUSED)


def join_weight_transfer(engine, init_info: dict, rejoin: bool = False) -> None:
    """Every worker of ``engine`` joins the learner's broadcast group (blocks until all members
    have); ``rejoin`` leaves the previous group first. ``init_info``:
    :func:`nous_ray.weight_sync.nccl.vllm_init_info`."""
    if rejoin:
        engine.collective_rpc("shutdown_weight_transfer_engine")
    engine.collective_rpc("init_weight_transfer_engine", kwargs={"init_info": init_info})


def receive_weight_transfer(engine, update_info: dict) -> int:
    """Every worker receives one broadcast version and loads its shard, layer by layer as the packed
    buffers arrive; returns the tensor count. ``update_info``:
    :func:`nous_ray.weight_sync.nccl.vllm_update_info`."""
    engine.collective_rpc("start_weight_update")
    engine.collective_rpc("update_weights", kwargs={"update_info": update_info})
    engine.collective_rpc("finish_weight_update")
    return len(update_info["names"])


def load_from_store(engine, refs: Sequence, held: HeldBytes | None = None) -> int:
    """Object-store transport: fetch the buckets behind ``refs`` one at a time as the engine loads
    them (``held`` counts the bytes alive meanwhile). Blocks: run it off the event loop."""
    return load_tensors(engine, fetch_buckets(refs, held))


def reload_holds(buffer: torch.Tensor) -> bool:
    """Whether vLLM's layerwise reload still holds tensors in ``buffer`` for a layer it has not
    completed (it keeps a layer's weights until all have arrived,
    ``vllm/model_executor/model_loader/reload/layerwise.py``). Unknown internals count as holding."""
    try:
        from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO

        ptr = buffer.untyped_storage().data_ptr()
        for info in list(LAYERWISE_INFO.values()):
            for _, bound in info.loaded_weights:
                for value in bound.arguments.values():
                    if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() == ptr:
                        return True
        return False
    except (ImportError, AttributeError, TypeError, ValueError):
        return True


def load_broadcast(engine, comm, plan: Sequence[Bucket], buffers: BucketBuffers) -> int:
    """NCCL transport, one-GPU engine: receive the buckets of ``plan`` from learner rank 0 into the
    two ``buffers`` and load each as it arrives; a buffer is reused once vLLM's reload no longer
    holds any of its tensors (:func:`reload_holds`). Blocks until the last bucket is loaded."""
    buffers.holds = reload_holds
    return load_tensors(engine, receive_tensors(comm, plan, buffers))
