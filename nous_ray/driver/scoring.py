"""From verified groups to a training batch: advantages, filters, staleness, and the accounting.

Pure bookkeeping, no Ray: the driver loop feeds verified groups in and takes batches out, and
:class:`Counters` proves every generated sample is accounted for exactly once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property

import torch

from nous_ray.algo import group_advantages_with_overlong
from nous_ray.config import AlgoConfig
from nous_ray.samples import Sample


@dataclass
class Counters:
    """Where every generated sample went. ``generated == trained + dropped + pending``."""

    generated: int = 0
    trained: int = 0
    filtered: int = 0  # in groups with all-zero advantages (dynamic sampling)
    dropped_stale: int = 0  # older than the off-policy bound when their batch formed
    dropped_infra: int = 0  # sandbox or transport failure: no reward, never -1
    dropped_resume: int = 0  # in flight when the run stopped; their prompts are re-issued on resume
    # Cut by the length limit, with algo.overlong_filter: advantage 0, left out of the learner batch.
    # Counted when its group trains (else with its group: filtered, stale), or at once when nothing
    # else of its group is left to train on.
    dropped_truncated: int = 0
    filtered_groups: int = 0
    stale_groups: int = 0

    @property
    def accounted(self) -> int:
        return (self.trained + self.filtered + self.dropped_stale + self.dropped_infra + self.dropped_resume
                + self.dropped_truncated)

    def to_dict(self) -> dict:
        return asdict(self)

    def state_dict(self) -> dict:
        return self.to_dict()

    def load_state_dict(self, d: dict) -> None:
        """Counts saved by :meth:`state_dict`; one an older checkpoint lacks keeps its value here."""
        for f in fields(self):
            if f.name in d:
                setattr(self, f.name, d[f.name])


@dataclass
class ScoredGroup:
    samples: list[Sample]  # the samples to train on, with advantage set
    useful: bool  # False: dropped by dynamic sampling, infra errors, or nothing left to train on
    # Overlong-filtered samples: their rewards shaped the group's advantages, but they do not train.
    # They go wherever the group goes (counted as dropped_truncated when it trains, else with it).
    truncated: list[Sample] = field(default_factory=list)
    # The problem it answers (set by the driver): a checkpoint that finds the group buffered re-issues it.
    problem_index: int | None = None

    @cached_property  # the buffer asks at every change; the samples never change once scored
    def version(self) -> int:
        """The oldest policy version among its samples (staleness is judged by the oldest)."""
        return min(s.version for s in self.samples)


def score_group(samples: list[Sample], algo: AlgoConfig, counters: Counters) -> ScoredGroup:
    """Advantages for one group (one prompt's responses), with overlong filtering and infra drops.

    Samples whose verification failed for infrastructure reasons (reward None) leave the group and
    are counted; the rest form a smaller group. A group left with fewer than 2 samples has no
    baseline and is dropped (counted as infra drops). With ``algo.dynamic_sampling`` a group whose
    advantages are all zero is dropped and counted as filtered; otherwise it is kept (it trains on
    zero advantages, as GRPO without dynamic sampling does).

    With ``algo.overlong_filter``, truncated samples get advantage 0 and then leave the samples to
    train on (``ScoredGroup.truncated``): kept in the batch they would add nothing to the gradient
    but their tokens to the loss normalizer, shrinking every other token's gradient by the truncated
    share (and cost a forward and backward). A group left with nothing to train on is dropped.
    """
    valid = [s for s in samples if s.reward is not None]
    counters.dropped_infra += len(samples) - len(valid)
    if len(valid) < 2:
        counters.dropped_infra += len(valid)
        return ScoredGroup(valid, useful=False)
    rewards = torch.tensor([s.reward for s in valid], dtype=torch.float64)
    truncated = torch.tensor([s.truncated for s in valid]) if algo.overlong_filter \
        else torch.zeros(len(valid), dtype=torch.bool)
    adv = group_advantages_with_overlong(rewards, truncated, len(valid),
                                         include_in_stats=algo.overlong_in_group_stats, eps=algo.adv_eps)
    for s, a in zip(valid, adv.tolist()):
        s.advantage = float(a)
    if algo.dynamic_sampling and all(a == 0.0 for a in adv.tolist()):
        counters.filtered += len(valid)
        counters.filtered_groups += 1
        return ScoredGroup(valid, useful=False)
    cut = [s for s in valid if s.truncated] if algo.overlong_filter else []
    kept = [s for s in valid if not (algo.overlong_filter and s.truncated)]
    if not kept:  # every response truncated (dynamic sampling off): nothing to train on
        counters.dropped_truncated += len(cut)
        return ScoredGroup([], useful=False, truncated=cut)
    return ScoredGroup(kept, useful=True, truncated=cut)


def staleness_stats(samples: list[Sample], learner_version: int) -> dict:
    """Staleness of a trained batch at ``learner_version``: per sample from its oldest token
    (``staleness_*``, what the bound applies to), per response token from the version that sampled it
    (``token_staleness_*``; the max equals ``staleness_max``), and ``spanning_frac``, the fraction of
    samples whose tokens come from more than one version (in-flight weight updates)."""
    per_sample = [learner_version - s.version for s in samples]
    tokens = sum(len(s.response_ids) for s in samples)
    token_sum = sum((learner_version - v) * (end - start) for s in samples for v, start, end in s.version_spans())
    return {
        "staleness_mean": sum(per_sample) / len(per_sample),
        "staleness_max": max(per_sample),
        "token_staleness_mean": token_sum / tokens if tokens else None,
        "token_staleness_max": max(per_sample),
        "spanning_frac": sum(s.spans_versions for s in samples) / len(samples),
    }


class BatchBuffer:
    """Useful groups waiting for the learners, oldest first, with the staleness bound enforced.

    A group generated by policy version ``v`` may train at learner policy version ``s`` only if
    ``s - v <= max_off_policy_steps`` (versions count training steps, one per batch, not optimizer
    steps); older groups are dropped (and counted) when a batch forms.
    """

    def __init__(self, groups_per_batch: int, max_off_policy_steps: int, counters: Counters):
        self.groups_per_batch = groups_per_batch
        self.max_off_policy_steps = max_off_policy_steps
        self.counters = counters
        self._groups: deque[ScoredGroup] = deque()

    def __len__(self) -> int:
        return len(self._groups)

    @property
    def num_samples(self) -> int:
        return sum(len(g.samples) for g in self._groups)

    def problem_indices(self) -> list[int]:
        """The problems of the buffered groups (those the driver recorded)."""
        return [g.problem_index for g in self._groups if g.problem_index is not None]

    def add(self, group: ScoredGroup) -> None:
        assert group.useful
        self._groups.append(group)

    def drop_stale(self, learner_version: int) -> int:
        """Drop groups too old to train at ``learner_version``; returns how many samples went."""
        keep, dropped = deque(), 0
        for g in self._groups:
            if learner_version - g.version > self.max_off_policy_steps:
                dropped += len(g.samples) + len(g.truncated)
                self.counters.stale_groups += 1
            else:
                keep.append(g)
        self._groups = keep
        self.counters.dropped_stale += dropped
        return dropped

    def ready(self, learner_version: int) -> bool:
        self.drop_stale(learner_version)
        return len(self._groups) >= self.groups_per_batch

    def pop_batch(self, learner_version: int) -> list[ScoredGroup] | None:
        """The oldest ``groups_per_batch`` fresh-enough groups, or None if there are not enough."""
        if not self.ready(learner_version):
            return None
        batch = [self._groups.popleft() for _ in range(self.groups_per_batch)]
        self.counters.trained += sum(len(g.samples) for g in batch)
        self.counters.dropped_truncated += sum(len(g.truncated) for g in batch)
        return batch
