"""One learner rank: the FSDP2-sharded policy, its optimizer, and the RL / SFT / scoring steps.

The same object runs in a Ray actor (``actors/learner.py``) or under torchrun: every rank of the
process group builds one and calls the same methods with the same arguments (the whole batch). Each
rank takes its share of every minibatch (token-balanced, computed identically everywhere, so no
communication decides it), packs the share into micro-batches of at most
``learner.micro_batch_tokens`` tokens and accumulates gradients over them.

Normalization: each micro-batch's loss is computed with the *whole minibatch's* normalizers (its
response-token count and sequence count, known on every rank since every rank holds the batch), so
the sum over micro-batches and ranks of the micro-batch losses is the minibatch loss. FSDP averages
gradients over ranks; scaling each rank's loss by the world size turns that average into the sum.
The gradient is then exactly that of the full-minibatch loss, however the batch is split.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.distributed as dist

from nous_ray.algo import policy_loss
from nous_ray.config import AlgoConfig, LearnerConfig, OptimConfig
from nous_ray.samples import Sample
from nous_ray.train import checkpoint as ckpt
from nous_ray.train.dist import all_reduce_sum, free_port, init_distributed
from nous_ray.train.gather import gather_to_rank0
from nous_ray.train.hf_export import write_hf_folder
from nous_ray.train.microbatch import MicroBatch, build_micro_batch, dummy_micro_batch
from nous_ray.train.model import build_policy, load_weights_from_rank0, shard_policy
from nous_ray.train.optim import build_optimizer, lr_at, set_lr
from nous_ray.train.packing import balance_across_ranks, pack_by_tokens, split_minibatches
from nous_ray.train.step_totals import StepTotals

__all__ = ["PolicyTrainer", "MinibatchPlan", "plan_minibatches"]


@dataclass
class MinibatchPlan:
    """One optimizer step: its samples (indices into the batch), this rank's micro-batches (lists of
    batch indices) and how many micro-batches every rank runs (the most any rank has)."""

    indices: list[int]
    bins: list[list[int]]
    n_micro: int


def plan_minibatches(lengths: Sequence[int], minibatches: int, world_size: int, rank: int,
                     budget: int) -> list[MinibatchPlan]:
    """Deterministic split of a batch with sequence ``lengths`` (prompt + response tokens)."""
    plans = []
    for mb in split_minibatches(len(lengths), minibatches):
        idx = list(mb)
        shares = balance_across_ranks([lengths[i] for i in idx], world_size)
        # Every rank's packing, so all agree on the micro-batch count without communicating.
        packed = [pack_by_tokens([lengths[idx[j]] for j in share], budget) if share else [] for share in shares]
        mine = [[idx[shares[rank][j]] for j in b] for b in packed[rank]]
        n_micro = max(1, max(len(p) for p in packed))
        plans.append(MinibatchPlan(indices=idx, bins=mine, n_micro=n_micro))
    return plans


def _check_samples(fn: str, samples: Sequence[Sample], need_logprobs: bool) -> None:
    if not samples:
        raise ValueError(f"{fn}: empty batch")
    for i, s in enumerate(samples):
        if not s.prompt_ids:
            raise ValueError(f"{fn}: sample {i} ({s.problem_id}) has an empty prompt")
        if need_logprobs and len(s.logprobs) != len(s.response_ids):
            raise ValueError(
                f"{fn}: sample {i} ({s.problem_id}) has {len(s.response_ids)} response tokens but "
                f"{len(s.logprobs)} behaviour log-probs"
            )
        if need_logprobs and not math.isfinite(s.advantage):
            raise ValueError(f"{fn}: sample {i} ({s.problem_id}) has advantage {s.advantage}")


def _dtype(name: str) -> torch.dtype:
    dt = getattr(torch, str(name).replace("torch.", ""), None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"model dtype: unknown torch dtype {name!r}")
    return dt


class PolicyTrainer:
    """A learner rank. Joins (or, for a single process, creates) the process group itself.

    Args:
        model_path: Hugging Face folder (or hub name) of the policy.
        cfg: the learner's settings (ranks, backend, optimizer, minibatches, packing budget, ...).
        algo: the objective (loss name, clip range, TIS cap).
        dtype: parameter dtype when not mixed precision (the model's, e.g. "float32" on CPU).
        rank, world_size, master_addr, master_port: the process group; a single process with no
            group creates a one-rank gloo/NCCL group on a free local port.
    """

    def __init__(self, model_path: str, cfg: LearnerConfig, algo: AlgoConfig, dtype: str = "float32",
                 rank: int = 0, world_size: int = 1, master_addr: str = "127.0.0.1",
                 master_port: Optional[int] = None):
        from torch.distributed.device_mesh import init_device_mesh

        self.cfg, self.algo, self.model_path = cfg, algo, model_path
        self.device = init_distributed(cfg.backend, rank, world_size, master_addr, master_port or free_port())
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        mixed = self.device.type == "cuda"
        # GPU: float32 master weights, bf16 compute (MixedPrecisionPolicy). CPU: the model's dtype.
        load_dtype = torch.float32 if mixed else _dtype(dtype)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_path)
        # Published and exported weights keep the folder's own dtype (the engines' dtype), so
        # config.json and the weights agree; read before from_config writes the load dtype into it.
        self.export_dtype = _dtype(getattr(config, "dtype", None) or dtype)
        # Built on the meta device and sharded before any memory is allocated; then rank 0 alone
        # reads the checkpoint and every rank receives only its shards.
        policy = build_policy(config, load_dtype, cfg.logprob_chunk_size, cfg.attn_implementation,
                              cfg.activation_checkpointing)
        self.pad_id = int(getattr(policy.config, "pad_token_id", None) or 0)
        mesh = init_device_mesh(self.device.type, (self.world,))
        self.policy = shard_policy(policy, mesh, mixed, cfg.reshard_after_forward)
        load_weights_from_rank0(self.policy, model_path, self.device, self.export_dtype)
        self.configure_optimizer(cfg.optim)

    # ---------------------------------------------------------------- optimizer

    def configure_optimizer(self, optim: OptimConfig) -> None:
        """A fresh AdamW (new moments, warm-up restarts), e.g. between SFT warm start and RL."""
        # While a unit is gathered its module holds the full tensors, not the sharded parameters;
        # an optimizer built then would update tensors FSDP is about to drop.
        self._reshard()
        self.optim_cfg = optim
        self.optimizer = build_optimizer(self.policy.parameters(), optim)
        # Optimizer steps (what the lr warm-up counts); a training step (one batch, one policy
        # version) is learner.minibatches of them.
        self.optimizer_step = 0

    def _clip_and_step(self) -> tuple[float, bool]:
        max_norm = self.optim_cfg.grad_clip if self.optim_cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        norm = float(norm)
        if not math.isfinite(norm):
            # A NaN/inf gradient would poison the weights and the Adam moments: skip this step.
            self.optimizer.zero_grad(set_to_none=True)
            return norm, False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_step += 1
        return norm, True

    # ---------------------------------------------------------------- forward helpers

    def _micro(self, samples: Sequence[Sample], idx: list[int], with_rl: bool) -> MicroBatch:
        ss = [samples[i] for i in idx]
        return build_micro_batch(
            [s.prompt_ids for s in ss],
            [s.response_ids for s in ss],
            [s.logprobs for s in ss] if with_rl else None,
            [s.advantage for s in ss] if with_rl else None,
            indices=idx,
        ).to(self.device)

    def _run(self, mb: MicroBatch, temperature: float, with_entropy: bool = False):
        return self.policy(mb.input_ids, mb.position_ids, mb.pred_pos, mb.targets, temperature, with_entropy,
                           mb.cu_seqlens, mb.max_seqlen)

    def _dummy_backward(self) -> None:
        mb = dummy_micro_batch(self.pad_id).to(self.device)
        lp, _ = self._run(mb, 1.0)
        (lp.sum() * 0.0).backward()

    def _plans(self, samples: Sequence[Sample], minibatches: int) -> list[MinibatchPlan]:
        return plan_minibatches([s.num_tokens for s in samples], minibatches, self.world, self.rank,
                                self.cfg.micro_batch_tokens)

    def _reshard(self) -> None:
        """Free every gathered parameter. Needed after forwards without backward: the root unit
        (reshard_after_forward=False) would otherwise stay gathered, its module exposing the full
        tensors instead of the sharded parameters (to a new optimizer, to state-dict calls)."""
        from torch.distributed.fsdp import FSDPModule

        for m in self.policy.modules():
            if isinstance(m, FSDPModule):
                m.reshard()

    def _local_logprobs(self, samples: Sequence[Sample], plans: list[MinibatchPlan],
                        temperature: float) -> dict[int, torch.Tensor]:
        """This rank's log-probs of its samples' response tokens: batch index -> [n_i] tensor."""
        try:
            with torch.no_grad():
                return self._local_logprobs_no_grad(samples, plans, temperature)
        finally:
            self._reshard()

    def _local_logprobs_no_grad(self, samples, plans, temperature) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for plan in plans:
            for j in range(plan.n_micro):
                if j >= len(plan.bins):
                    self._run(dummy_micro_batch(self.pad_id).to(self.device), 1.0)
                    continue
                mb = self._micro(samples, plan.bins[j], with_rl=False)
                lp, _ = self._run(mb, temperature)
                for b, i in enumerate(mb.indices):
                    out[i] = lp[mb.seq_idx == b]
        return out

    # ---------------------------------------------------------------- public steps

    def train_step(self, samples: Sequence[Sample], temperature: float = 1.0,
                   policy_version: Optional[int] = None) -> dict[str, Any]:
        """One training step on one RL batch: ``learner.minibatches`` optimizer steps of ``algo.loss``.

        Every rank passes the same whole batch. The old policy of the clipped ratio (see
        :mod:`nous_ray.algo.losses` for the objectives):

        - ``algo.tis_cap == 0`` (coupled): the rollout engine's log-probs (``Sample.logprobs``);
          every token weighs 1.
        - ``algo.tis_cap > 0`` (decoupled): pi_prox, this learner's log-probs of the batch under the
          weights it holds when this call starts (before any of its optimizer steps); each unit is
          weighted by ``min(pi_prox / pi_engine, tis_cap)`` (per token for dapo, per sequence of
          geometric means for gspo / gspo_plus). For the first minibatch pi_prox is its own training
          forward, detached (same weights, same numbers); the other minibatches get one no-grad
          forward before the first optimizer step. The engine's log-probs enter only through that
          weight, whatever policy version sampled each token.

        ``policy_version``: the version of the weights this step starts from (the driver's count of
        training steps); samples of that version (staleness 0) get their own clip fraction.

        Returns (the same on every rank) minibatch means of ``loss``, ``grad_norm``; fractions over the
        batch's units (tokens for dapo, sequences for gspo / gspo_plus) ``clip_fraction`` (PPO clip
        won), ``dual_clip_fraction``; ``clip_fraction_fresh`` over the units of staleness-0 samples
        (only when there are some; ``fresh_units`` counts them); token means ``approx_kl``, ``entropy``;
        ``ratio_max``; ``losses`` and ``grad_norms`` per minibatch; ``lr`` of the last step; ``tokens``
        (response tokens) and ``packed_tokens`` (all tokens run); ``micro_batches``; ``skipped_steps``
        (non-finite gradient); ``optimizer_step`` (optimizer steps done since the optimizer was built or
        restored, what the lr warm-up counts); ``logprob_diff_mean``/``logprob_diff_max``: |learner -
        engine| log-prob on the same tokens under the pre-update weights, over the whole batch when
        decoupled, else over the first minibatch; decoupled only: ``tis_weight_mean`` and
        ``tis_capped_fraction`` over units.
        """
        _check_samples("train_step", samples, need_logprobs=True)
        plans = self._plans(samples, self.cfg.minibatches)
        decoupled = self.algo.tis_cap > 0
        # pi_prox of minibatches 1.. (the first one's comes from its own forward).
        prox = self._local_logprobs(samples, plans[1:], temperature) if decoupled else None
        totals = StepTotals()
        losses, norms, lrs, skipped = [], [], [], 0
        for k, plan in enumerate(plans):
            mb_samples = [samples[i] for i in plan.indices]
            n_tok = sum(len(s.response_ids) for s in mb_samples)
            n_seq = sum(1 for s in mb_samples if s.response_ids)
            lr = lr_at(self.optim_cfg, self.optimizer_step)
            set_lr(self.optimizer, lr)
            self.optimizer.zero_grad(set_to_none=True)
            mb_loss = 0.0
            for j in range(plan.n_micro):
                if j >= len(plan.bins):
                    self._dummy_backward()
                    continue
                mb = self._micro(samples, plan.bins[j], with_rl=True)
                mb_loss += self._forward_backward(mb, samples, temperature, k == 0, prox, policy_version,
                                                  n_tok, n_seq, totals)
            norm, ok = self._clip_and_step()
            skipped += 0 if ok else 1
            losses.append(all_reduce_sum([mb_loss], self.device)[0])
            norms.append(norm)
            lrs.append(lr)
        return {
            "loss": sum(losses) / len(losses),
            "losses": losses,
            "grad_norm": sum(norms) / len(norms),
            "grad_norms": norms,
            "lr": lrs[-1],
            "minibatches": len(plans),
            "skipped_steps": skipped,
            "optimizer_step": self.optimizer_step,
            **totals.all_reduce(self.device).metrics(decoupled),
        }

    def _forward_backward(self, mb: MicroBatch, samples: Sequence[Sample], temperature: float, first: bool,
                          prox: Optional[dict[int, torch.Tensor]], policy_version: Optional[int], n_tok: int,
                          n_seq: int, totals: StepTotals) -> float:
        """One micro-batch of the RL loss: forward, loss under the minibatch's normalizers ``n_tok`` /
        ``n_seq``, backward (scaled by the world size, see the module docstring); its metrics go into
        ``totals``. Returns the micro-batch's loss.

        The log-probs under the pre-update weights: in the ``first`` minibatch this very forward,
        detached; in the others ``prox`` (decoupled: pi_prox, batch index -> [n_i]; coupled: None,
        unknown). The old policy of the ratio is pi_prox when decoupled, else the engine's log-probs.
        """
        algo = self.algo
        decoupled = algo.tis_cap > 0
        lp, ent = self._run(mb, temperature, with_entropy=True)
        # This micro-batch's log-probs under the pre-update weights, where known.
        pre = lp.detach() if first else (torch.cat([prox[i] for i in mb.indices]) if prox is not None else None)
        fresh = None if policy_version is None else \
            torch.tensor([samples[i].version == policy_version for i in mb.indices], device=lp.device)
        loss, m = policy_loss(
            algo.loss, mb.to_padded(lp), mb.to_padded(pre) if decoupled else mb.behaviour, mb.advantages,
            mb.mask, algo.clip_low, algo.clip_high,
            behaviour_logprobs=mb.behaviour if decoupled else None,
            tis_cap=algo.tis_cap if decoupled else None,
            clip_ratio_c=algo.clip_ratio_c, log_ratio_clamp=algo.log_ratio_clamp, fresh=fresh,
            num_tokens=n_tok, num_sequences=n_seq)
        (loss * self.world).backward()
        totals.add_micro(m, algo.loss == "dapo", ent, mb.num_tokens)
        if pre is not None:
            totals.add_logprob_diff(pre, mb.from_padded(mb.behaviour))
        return float(loss.detach())

    def sft_step(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """One optimizer step of cross-entropy on response tokens (mean over the batch's tokens)."""
        _check_samples("sft_step", samples, need_logprobs=False)
        plan = self._plans(samples, 1)[0]
        n_tok = sum(len(s.response_ids) for s in samples)
        lr = lr_at(self.optim_cfg, self.optimizer_step)
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for j in range(plan.n_micro):
            if j >= len(plan.bins):
                self._dummy_backward()
                continue
            mb = self._micro(samples, plan.bins[j], with_rl=False)
            lp, _ = self._run(mb, 1.0)
            loss = -lp.sum() / max(n_tok, 1)
            (loss * self.world).backward()
            total += float(loss.detach())
        norm, ok = self._clip_and_step()
        return {"loss": all_reduce_sum([total], self.device)[0], "grad_norm": norm, "lr": lr,
                "tokens": n_tok, "skipped_steps": 0 if ok else 1, "optimizer_step": self.optimizer_step}

    def compute_logprobs(self, samples: Sequence[Sample], temperature: float = 1.0) -> list[list[float]]:
        """The learner's log-probs of every sample's response tokens (the whole batch, on every rank)."""
        _check_samples("compute_logprobs", samples, need_logprobs=False)
        local = self._local_logprobs(samples, self._plans(samples, 1), temperature)
        mine = {i: t.cpu().tolist() for i, t in local.items()}
        gathered: list[Optional[dict]] = [None] * self.world
        dist.all_gather_object(gathered, mine)
        merged: dict[int, list[float]] = {}
        for g in gathered:
            merged.update(g)
        return [merged[i] for i in range(len(samples))]

    # ---------------------------------------------------------------- state

    def save_checkpoint(self, path: str, extra: Optional[dict] = None) -> str:
        self._reshard()
        state = {"optimizer_step": self.optimizer_step, "optim": dataclasses.asdict(self.optim_cfg),
                 "extra": extra or {}}
        return str(ckpt.save_checkpoint(path, self.policy, self.optimizer, state))

    def load_checkpoint(self, path: str) -> dict:
        """Restore weights, optimizer moments and step count; returns the ``extra`` saved with them.

        The optimizer settings (lr, warm-up, ...) are the checkpoint's, replacing the current ones.
        """
        saved = ckpt.read_state(path)
        self.configure_optimizer(OptimConfig(**saved["optim"]))
        state = ckpt.load_checkpoint(path, self.policy, self.optimizer)
        # "step": the key of checkpoints written before it was named optimizer_step.
        self.optimizer_step = int(state.get("optimizer_step", state.get("step", 0)))
        return state.get("extra", {})

    # ---------------------------------------------------------------- weights out (sync, export)

    def weight_metas(self) -> list[tuple[str, tuple[int, ...], str]]:
        """``(HF name, full shape, dtype name)`` of every weight as published, in order, without
        gathering anything (the same on every rank). A tied head shares the embedding's parameter
        and is listed once, as checkpoints store it."""
        dt = str(self.export_dtype).removeprefix("torch.")
        return [(name, tuple(p.shape), dt) for name, p in self.policy.named_parameters()]

    def iter_weights(self, names: Sequence[str], outs: Optional[Sequence[torch.Tensor]] = None,
                     device: Optional[torch.device] = None) -> Iterator[tuple[str, Optional[torch.Tensor]]]:
        """All ranks must iterate it in step, with the same ``names``. Rank 0 gets each full weight
        in the published dtype, written into ``outs`` when given, else a new tensor (moved to
        ``device``); the other ranks send their shards and get None. One tensor crosses at a time."""
        self._reshard()
        params = dict(self.policy.named_parameters())
        for j, name in enumerate(names):
            t = gather_to_rank0(params[name], self.export_dtype, outs[j] if outs is not None else None)
            yield name, (t.to(device) if t is not None and device is not None and outs is None else t)

    def gather_weights(self, names: Sequence[str], outs: Optional[Sequence[torch.Tensor]] = None,
                       device: Optional[torch.device] = None) -> list[Optional[torch.Tensor]]:
        """:meth:`iter_weights` at once (for a bucket's tensors)."""
        return [t for _, t in self.iter_weights(names, outs, device)]

    def full_weights(self) -> list[tuple[str, torch.Tensor]]:
        """All ranks must call. Rank 0: ``(HF name, full CPU tensor)`` in the published dtype; others: []."""
        names = [m[0] for m in self.weight_metas()]
        got = self.gather_weights(names, device=torch.device("cpu"))
        return list(zip(names, got)) if self.rank == 0 else []

    def full_optimizer_state(self) -> dict:
        """All ranks must call; rank 0 gets the unsharded optimizer state (for tests and inspection)."""
        self._reshard()
        return ckpt.full_optimizer_state(self.policy, self.optimizer)

    def export_hf(self, out_dir: str) -> Optional[str]:
        """Write a Hugging Face folder (weights + the source's config and tokenizer); rank 0 writes."""
        named = self.full_weights()
        out = None
        if self.rank == 0:
            out = str(write_hf_folder(named, self.model_path, out_dir, self.policy.config))
        dist.barrier()
        return out

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
