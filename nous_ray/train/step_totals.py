"""What one training step reports: per-micro-batch sums and maxima, reduced over ranks, then means.

:class:`StepTotals` is filled micro-batch by micro-batch on each rank (:meth:`StepTotals.add_micro`),
reduced over the ranks in one collective per kind (:meth:`StepTotals.all_reduce`: sums in field
order, maxima in field order, so every rank passes the same list), and turned into the metrics of
:meth:`nous_ray.train.PolicyTrainer.train_step` (:meth:`StepTotals.metrics`). A fraction or mean over
*units* (tokens for dapo, non-empty sequences for gspo / gspo_plus) is a sum of per-micro-batch
values weighted by the micro-batch's units, over the total units; token means likewise over tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from nous_ray.train.dist import all_reduce_max, all_reduce_sum

__all__ = ["StepTotals"]

_MAX = {"reduce": "max"}


@dataclass
class StepTotals:
    """Sums (and two maxima) over the micro-batches of a training step."""

    clip: float = 0.0  # clip_fraction x units
    dual_clip: float = 0.0  # dual_clip_fraction x units
    units: float = 0.0
    fresh_clip: float = 0.0  # clip_fraction_fresh x fresh units
    fresh_units: float = 0.0
    tis_weight: float = 0.0  # tis_weight_mean x units
    tis_capped: float = 0.0  # tis_capped_fraction x units
    kl: float = 0.0  # approx_kl x tokens
    entropy: float = 0.0  # summed over scored tokens
    tokens: float = 0.0  # response tokens scored
    packed: float = 0.0  # all tokens run (prompts too)
    logprob_diff: float = 0.0  # |learner - engine| over tokens with pre-update log-probs
    logprob_diff_n: float = 0.0
    micro_batches: float = 0.0
    ratio_max: float = field(default=0.0, metadata=_MAX)
    logprob_diff_max: float = field(default=0.0, metadata=_MAX)

    @classmethod
    def _names(cls, reduce: str) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get("reduce", "sum") == reduce]

    def add_micro(self, m: dict[str, Tensor], unit_tokens: bool, entropy: Tensor, packed_tokens: int) -> None:
        """One micro-batch: ``m`` the metrics of :func:`nous_ray.algo.policy_loss`, ``entropy`` [N] per
        scored token; ``unit_tokens``: the loss's units are tokens (dapo), else sequences."""
        units = float(m["num_tokens"] if unit_tokens else m["num_sequences"])
        tokens = float(m["num_tokens"])
        self.clip += float(m["clip_fraction"]) * units
        self.dual_clip += float(m["dual_clip_fraction"]) * units
        self.units += units
        self.fresh_clip += float(m["clip_fraction_fresh"] * m["num_fresh_units"])
        self.fresh_units += float(m["num_fresh_units"])
        self.tis_weight += float(m["tis_weight_mean"]) * units
        self.tis_capped += float(m["tis_capped_fraction"]) * units
        self.kl += float(m["approx_kl"]) * tokens
        self.entropy += float(entropy.sum())
        self.tokens += tokens
        self.packed += packed_tokens
        self.micro_batches += 1
        self.ratio_max = max(self.ratio_max, float(m["ratio_max"]))

    def add_logprob_diff(self, learner: Tensor, engine: Tensor) -> None:
        """|learner - engine| log-probs of the same tokens ([N] each), under the pre-update weights."""
        d = (learner - engine).abs()
        self.logprob_diff += float(d.sum())
        self.logprob_diff_n += d.numel()
        self.logprob_diff_max = max(self.logprob_diff_max, float(d.max()) if d.numel() else 0.0)

    def all_reduce(self, device) -> "StepTotals":
        """The totals over every rank (all ranks must call, in step)."""
        sums, maxima = self._names("sum"), self._names("max")
        values = dict(zip(sums, all_reduce_sum([getattr(self, k) for k in sums], device)))
        values.update(zip(maxima, all_reduce_max([getattr(self, k) for k in maxima], device)))
        return StepTotals(**values)

    def metrics(self, decoupled: bool) -> dict[str, Any]:
        """The means and counts of ``train_step``'s answer; ``clip_fraction_fresh`` only when there
        were fresh units, ``tis_*`` only in the decoupled form (``algo.tis_cap > 0``)."""
        units, tokens = max(self.units, 1.0), max(self.tokens, 1.0)
        out: dict[str, Any] = {
            "clip_fraction": self.clip / units,
            "dual_clip_fraction": self.dual_clip / units,
            "fresh_units": int(self.fresh_units),
            "approx_kl": self.kl / tokens,
            "entropy": self.entropy / tokens,
            "ratio_max": self.ratio_max,
            "tokens": int(self.tokens),
            "packed_tokens": int(self.packed),
            "micro_batches": int(self.micro_batches),
            "logprob_diff_mean": self.logprob_diff / max(self.logprob_diff_n, 1.0),
            "logprob_diff_max": self.logprob_diff_max,
        }
        if self.fresh_units:
            out["clip_fraction_fresh"] = self.fresh_clip / self.fresh_units
        if decoupled:
            out["tis_weight_mean"] = self.tis_weight / units
            out["tis_capped_fraction"] = self.tis_capped / units
        return out

