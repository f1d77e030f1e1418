"""What flows between the workers: a generation request, one sampled response and its bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample a group of responses to; its samples carry ``group_id`` and ``problem_id``."""

    group_id: int
    problem_id: str
    prompt_ids: list[int]


@dataclass
class Sample:
    """One response to one prompt, from generation through verification to training.

    ``logprobs`` are the rollout engine's (behaviour policy's) log-probabilities of each response
    token; the loss uses them as the old policy (coupled form) or in the truncated importance weight
    against the learner's own pre-update log-probs (decoupled form, ``algo.tis_cap > 0``). ``version``
    is the policy version that generated the sample, used for the staleness bound.
    """

    problem_id: str
    group_id: int
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"
    version: int
    text: str = ""
    # Filled by the verifier and the driver.
    verdict: str | None = None
    reward: float | None = None
    advantage: float = 0.0
    # The step the request was issued at (sets its max response length via the context schedule).
    issued_step: int = 0
    version_starts: list[tuple[int, int]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def version_spans(self) -> list[tuple[int, int, int]]:
        """``(version, start, end)``: response tokens ``[start, end)`` were sampled by ``version``."""
        n = len(self.response_ids)
        if not self.version_starts:
            return [(self.version, 0, n)]
        ends = [start for _, start in self.version_starts[1:]] + [n]
        return [(v, start, end) for (v, start), end in zip(self.version_starts, ends)]

    def token_versions(self) -> list[int]:
        """The policy version that sampled each response token."""
        return [v for v, start, end in self.version_spans() for _ in range(end - start)]

    @property
    def newest_version(self) -> int:
        return self.version_starts[-1][0] if self.version_starts else self.version

    @property
    def spans_versions(self) -> bool:
        """Whether a weight update landed while this response was being sampled."""
        return len(self.version_starts) > 1

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)
