"""Test helpers: learner ranks as bare Ray actors around the production ``PolicyTrainer``, a stand-in
for the NCCL communicator (the one part that needs GPUs), and a memory meter: the process's
resident high-water mark. (torch's profiler does not serve: it counts only the profiled thread's
allocations and frees, while transformers loads checkpoints on a thread pool and gloo frees
collective buffers on its own threads.)

The communicator is replaced at its boundary, ``broadcast(tensor, src, stream=None)`` of vLLM's
``PyNcclCommunicator``; everything around it (gathering, bucket buffers, the receiver, vLLM's reload)
is the production code.
"""

from __future__ import annotations

import sys

import numpy as np
import ray
import torch

# Ray workers cannot import this file (it is not on their path): ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _status(key: str) -> int:
    import re

    return int(re.search(rf"{key}:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def rss_peak(fn, *args):
    """(fn(*args), peak resident memory of this process during the call above what it held before):
    every thread's allocations and mapped files included. Free heap pages are returned to the system
    first (``malloc_trim``), so memory reused inside the call is counted once and memory freed before
    it cannot hide new allocations. Linux only (``/proc/self/clear_refs`` resets the high-water mark)."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    out = fn(*args)
    return out, max(0, _status("VmHWM") - before)


class RecordingComm:
    """Rank 0's communicator: writes every broadcast to a file of ``out_dir`` (not this process's
    memory, which the tests measure) and notes the distinct buffers broadcast from."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.sent: list[str] = []
        self.buffers: set[int] = set()

    def broadcast(self, tensor: torch.Tensor, src: int, stream=None) -> None:
        import os

        assert src == 0 and tensor.dtype == torch.uint8 and tensor.is_contiguous()
        self.buffers.add(tensor.untyped_storage().data_ptr())
        path = os.path.join(self.out_dir, f"{len(self.sent)}.bin")
        tensor.numpy().tofile(path)
        self.sent.append(path)


class ReplayComm:
    """A receiver's communicator: each broadcast receives the next recorded bucket's bytes."""

    def __init__(self, sent: list[str]):
        self.sent = list(sent)
        self.buffers: set[int] = set()
        self.calls = 0

    def broadcast(self, tensor: torch.Tensor, src: int, stream=None) -> None:
        assert src == 0
        data = np.fromfile(self.sent[self.calls], dtype=np.uint8)
        assert tensor.numel() == data.size, (tensor.numel(), data.size)
        self.buffers.add(tensor.untyped_storage().data_ptr())
        tensor.copy_(torch.from_numpy(data))
        self.calls += 1


@ray.remote(num_cpus=0.25)
class Rank:
    """One learner rank: a ``PolicyTrainer`` (FSDP2 over gloo) and the publishing functions."""

    def __init__(self):
        torch.set_num_threads(1)
        self.trainer = None
        # Import what start-up imports, so its memory figure is the model's, not the code's.
        import importlib

        for module in ("torch.distributed.checkpoint.state_dict", "torch.distributed.fsdp", "transformers",
                       "transformers.models.qwen3.modeling_qwen3", "nous_ray.train"):
            importlib.import_module(module)

    def address(self) -> tuple[str, int]:
        from nous_ray.train.dist import free_port

        return "127.0.0.1", free_port()

    def start(self, model_dir: str, rank: int, world: int, addr: str, port: int, **learner) -> int:
        """Build the trainer; returns the peak resident memory it added (:func:`rss_peak`)."""
        from nous_ray.config import AlgoConfig, LearnerConfig
        from nous_ray.train import PolicyTrainer

        cfg = LearnerConfig(num_ranks=world, **learner)
        self.trainer, peak = rss_peak(lambda: PolicyTrainer(model_dir, cfg, AlgoConfig(), rank=rank, world_size=world,
                                                            master_addr=addr, master_port=port))
        return peak

    def shard_bytes(self) -> int:
        """Bytes of this rank's parameter shards."""
        return sum(p.to_local().numel() * p.element_size() for p in self.trainer.policy.parameters())

    def call(self, method: str, *args):
        return getattr(self.trainer, method)(*args)

    def rss_peak_of(self, method: str, *args) -> int:
        """Peak resident memory added while the trainer runs ``method(*args)``."""
        return rss_peak(getattr(self.trainer, method), *args)[1]

    def broadcast(self, bucket_bytes: int, out_dir: str) -> dict:
        """Run the NCCL publish with a recording communicator on rank 0 (buckets written to
        ``out_dir``); returns the files, the plan, and the peak resident memory the publish added."""
        from nous_ray.train.publish import broadcast_weights, weight_plan

        comm = RecordingComm(out_dir) if self.trainer.rank == 0 else None
        stats, peak = rss_peak(broadcast_weights, self.trainer, comm, bucket_bytes, 1)
        return {"peak": peak, "stats": stats, "plan": weight_plan(self.trainer, bucket_bytes),
                "sent": comm.sent if comm else [], "buffers": len(comm.buffers) if comm else 0}

def start_ranks(model_dir: str, world: int = 2, **learner) -> tuple[list, list[int]]:
    """``world`` ranks in one gloo group; returns (actors, peak CPU bytes of each rank's start-up)."""
    ranks = [Rank.remote() for _ in range(world)]
    addr, port = ray.get(ranks[0].address.remote())
    peaks = ray.get([r.start.remote(model_dir, i, world, addr, port, **learner) for i, r in enumerate(ranks)],
                    timeout=600)
    return ranks, peaks


@ray.remote
class Receiver:
    """A one-GPU rollout engine's receiving side: vLLM (in this process) behind the production
    ``StreamingEngine``, loading a NCCL broadcast replayed from a recording."""

    def __init__(self, model_dir: str, max_model_len: int = 256):
        from nous_ray.config import RolloutConfig
        from nous_ray.rollout.engine import build_engine
        from nous_ray.rollout.stream import StreamingEngine

        cfg = RolloutConfig(max_model_len=max_model_len, kv_cache_memory_bytes=64 * 2**20)
        self.stream = StreamingEngine(build_engine(model_dir, cfg, dtype="float32"), weight_update=cfg.weight_update)

    async def score(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        return await self.stream.score(prompt_ids, response_ids)

    async def receive(self, version: int, plan: list, sent: list[str]) -> dict:
        from nous_ray.rollout.weights import load_broadcast
        from nous_ray.weight_sync.buckets import bucket_nbytes
        from nous_ray.weight_sync.nccl import BucketBuffers

        comm = ReplayComm(sent)
        buffers = BucketBuffers(max(bucket_nbytes(t) for t in plan), "cpu")
        out = await self.stream.update_weights(version, lambda engine: load_broadcast(engine, comm, plan, buffers),
                                               droppable=False)
        return {**out, "broadcasts": comm.calls, "buffers": len(comm.buffers),
                "buffer_bytes": buffers.allocated_bytes, "replaced": buffers.replaced}
