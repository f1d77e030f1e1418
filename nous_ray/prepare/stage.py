"""What every stage returns: the problems it keeps, the ones it drops and why, and notes."""

from __future__ import annotations

from dataclasses import dataclass, field

from nous_ray.data.problem import Problem


@dataclass
class Dropped:
    problem: Problem
    reason: str  # a short key, counted in the report (e.g. "near_duplicate")
    detail: str = ""  # for the list of dropped ids (e.g. "of deepcoder/taco/train/3, jaccard 0.82")
    source: str = ""  # the report's source label, where the problem's id cannot tell it


@dataclass
class Note:
    """Something the report should show about a problem that stays (or the evidence for a drop)."""

    problem: Problem
    flag: str  # e.g. "no_references", "references_disagree"
    detail: str = ""


@dataclass
class StageResult:
    kept: list[Problem]
    dropped: list[Dropped] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    # Stage-wide facts for the report (thresholds applied, cache reuse, ...).
    info: dict = field(default_factory=dict)
