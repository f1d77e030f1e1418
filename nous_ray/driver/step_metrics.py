"""The row a training step logs (``metrics.jsonl``, TensorBoard, the dashboard): a pure function of
what the driver counted during the step.

Means over nothing (no sample verified this step) are None (null in metrics.jsonl), not 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nous_ray.driver.scoring import Counters, staleness_stats
from nous_ray.samples import Sample

_TINY = 1e-9  # divides by a duration that may be 0 on a virtual clock


@dataclass
class Waits:
    """Learner idle time, split by what the batch was waiting for."""

    generation_s: float = 0.0
    verification_s: float = 0.0

    @property
    def total(self) -> float:
        return self.generation_s + self.verification_s


@dataclass
class StepStats:
    """What finished between two training steps: verifications, generation and verification calls."""

    verified: int = 0
    accepted: int = 0
    reward_sum: float = 0.0
    verdicts: dict = field(default_factory=dict)
    response_tokens: int = 0
    truncated: int = 0
    generate_s: float = 0.0  # wall time of generation calls that finished this step
    generate_calls: int = 0
    verify_s: float = 0.0  # wall time of group verifications that finished this step
    verify_calls: int = 0


@dataclass
class StepTimes:
    """Clock readings of one training step (the event loop's clock), and of the run's start."""

    run_start: float
    start: float  # the trainer began waiting for this step's batch
    ready: float  # the batch was ready
    trained: float  # the train step returned
    end: float  # the new weights were published

    @property
    def wall(self) -> float:
        return self.end - self.start


def step_metrics(samples: list[Sample], policy_version: int, stats: StepStats, counters: Counters, *,
                 filtered_groups: int, waits: Waits, waits_total_s: float, allowed_s: float, times: StepTimes,
                 max_response_tokens: int, worker_restarts: int, learner: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one training step.

    Args:
        samples: the batch trained on (non-empty); ``policy_version``: the learner's version it trains
            at (staleness counts from it: :func:`nous_ray.driver.scoring.staleness_stats`).
        stats: what finished since the previous step (verifications, calls).
        counters: where every sample went, totals of the run.
        filtered_groups: groups dynamic sampling dropped during this step.
        waits: the learner's idle time during this step; ``waits_total_s``: over the whole run.
        allowed_s: worker-seconds of generation the staleness bound allowed during this step.
        times: the step's clock readings.
        max_response_tokens: the context schedule's length limit at the step trained.
        worker_restarts: rollout workers replaced so far.
        learner: the learner's answer (``PolicyTrainer.train_step``); its numbers go in as ``train/*``.
    """
    wall = max(times.wall, _TINY)
    judged = sum(stats.verdicts.values())
    return {
        "reward_mean": stats.reward_sum / stats.verified if stats.verified else None,
        "pass_rate": stats.accepted / stats.verified if stats.verified else None,
        "batch_reward_mean": sum(s.reward for s in samples) / len(samples),
        "batch_samples": len(samples),
        "filtered_groups": filtered_groups,
        "stale_groups": counters.stale_groups,
        "response_len_mean": sum(len(s.response_ids) for s in samples) / len(samples),
        "truncated_frac": stats.truncated / judged if judged else None,
        "tokens_per_s": stats.response_tokens / wall,
        "learner_idle_frac": (times.ready - times.start) / wall,
        "learner_wait_generation_s": waits.generation_s,
        "learner_wait_verification_s": waits.verification_s,
        "learner_idle_frac_total": waits_total_s / max(times.end - times.run_start, _TINY),
        "rollout_allowed_frac": allowed_s / wall,
        **staleness_stats(samples, policy_version),
        "max_response_tokens": max_response_tokens,
        "time_generate_call_s": stats.generate_s / stats.generate_calls if stats.generate_calls else None,
        "time_verify_group_s": stats.verify_s / stats.verify_calls if stats.verify_calls else None,
        "time_step_s": times.wall, "time_train_s": times.trained - times.ready, "time_sync_s": times.end - times.trained,
        "worker_restarts": worker_restarts,
        **{f"verdict/{k}": v for k, v in stats.verdicts.items()},
        **{f"count/{k}": v for k, v in counters.to_dict().items()},
        **{f"train/{k}": v for k, v in learner.items() if isinstance(v, (int, float))},
    }


def _shown(value: float | None, fmt: str) -> str:
    """A metric for the progress line: ``n/a`` where metrics.jsonl holds null (nothing to average)."""
    return "n/a" if value is None else format(value, fmt)


def progress_line(step: int, steps: int, row: dict[str, Any]) -> str:
    """The console line of a training step, from its :func:`step_metrics` row."""
    return (f"step {step:4d}/{steps} | reward {_shown(row['reward_mean'], '+.3f')}"
            f" | pass {_shown(row['pass_rate'], '.3f')}"
            f" | filtered {row['filtered_groups']} | len {row['response_len_mean']:.1f}"
            f" | {row['tokens_per_s']:.0f} tok/s | idle {100 * row['learner_idle_frac']:.0f}%"
            f" | stale {row['staleness_mean']:.2f}/{row['staleness_max']}")
