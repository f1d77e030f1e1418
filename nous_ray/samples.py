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
    extra: dict = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)
