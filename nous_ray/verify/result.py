"""One completion's judgement; the verdicts themselves live in :mod:`nous_ray.verdicts` (re-exported here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nous_ray.verdicts import Verdict, VerdictRecord, reward_of

__all__ = ["Verdict", "VerifyResult", "reward_of"]


@dataclass
class VerifyResult:
    id: str
    verdict: Verdict
    tests_run: int = 0
    cpu_s: float = 0.0
    detail: str = ""

    @property
    def reward(self) -> float | None:
        return reward_of(self.verdict)

    def to_dict(self) -> VerdictRecord:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        d["reward"] = self.reward
        return d
