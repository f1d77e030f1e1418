"""Verdicts and the reward they give: the contract between the verifier, the driver and evaluation.

A low module (no imports of the library) so that the driver and evaluation, which must not depend on
the sandbox, name verdicts the way the verifier does. On the wire and on disk a verdict is its
string value (``"accepted"``): compare with ``Verdict.ACCEPTED`` (a ``str``), write ``.value``.
"""

from __future__ import annotations

from enum import Enum
from typing import TypedDict


class Verdict(str, Enum):
    ACCEPTED = "accepted"
    WRONG_ANSWER = "wrong_answer"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    RUNTIME_ERROR = "runtime_error"
    COMPILE_ERROR = "compile_error"
    NO_CODE = "no_code"
    # The sandbox or the transport failed: not the program's fault, so no reward at all.
    INFRA_ERROR = "infra_error"


def reward_of(verdict: Verdict) -> float | None:
    """+1 accepted, -1 every failure of the program, None (sample dropped) for infra_error."""
    if verdict is Verdict.INFRA_ERROR:
        return None
    return 1.0 if verdict is Verdict.ACCEPTED else -1.0


class VerdictRecord(TypedDict, total=False):
    """What a verifier answers per completion (``VerifyResult.to_dict()``); ``verdict`` and ``reward``
    are always there."""

    id: str
    verdict: str  # a Verdict's value
    reward: float | None
    tests_run: int
    cpu_s: float
    detail: str


def infra_error_record(detail: str) -> VerdictRecord:
    """The record of a completion whose verification failed (the call, not the program): no reward."""
    return {"verdict": Verdict.INFRA_ERROR.value, "reward": None, "tests_run": 0, "cpu_s": 0.0, "detail": detail}
