"""Normalized Problem dicts, one JSON object per line (the project's own format)."""

from __future__ import annotations

import json
from typing import Sequence

from nous_ray.data.collect import collect
from nous_ray.data.problem import Problem, ProblemFormatError


def _rows(path: str, dataset: str):
    """``(where, object)`` per non-blank line; a line that is not JSON comes as its ProblemFormatError,
    raised by ``normalize`` inside :func:`collect`, so ``errors="skip"`` skips and counts it too."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                obj = ProblemFormatError(dataset, f"line {lineno}", "<line>", f"not valid JSON ({e})")
            yield f"line {lineno}", obj


def load_jsonl(
    path: str,
    subsets: Sequence[str] = (),
    max_problems: int | None = None,
    *,
    errors: str = "raise",
) -> list[Problem]:
    """Rows are named by line number (1-based, blank lines skipped); ids must be unique."""
    if path is None:
        raise ValueError("jsonl: a path is required")
    if subsets:
        raise ValueError(f"jsonl: no subsets, got {list(subsets)}")
    dataset = f"jsonl:{path}"
    seen: dict[str, str] = {}

    def normalize(where: str, d: dict | ProblemFormatError) -> Problem:
        if isinstance(d, ProblemFormatError):
            raise d
        p = Problem.from_dict(d, dataset=dataset, row=where)
        if p.id in seen:
            raise ProblemFormatError(dataset, where, "id", f"duplicate id {p.id!r} (first at {seen[p.id]})")
        seen[p.id] = where
        return p

    return collect(_rows(path, dataset), normalize, dataset=dataset, max_problems=max_problems, errors=errors)


def save_jsonl(problems: Sequence[Problem], path: str) -> None:
    """Write Problems so that :func:`load_jsonl` reads them back equal."""
    with open(path, "w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
