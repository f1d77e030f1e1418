"""Stage 3: decontamination against the evaluation set, by contest date and by statement n-grams.

- By date, where the training problem has a contest date: dropped when dated on or after the cutoff
  (the evaluation window's first day: ``eval.start_date`` for LiveCodeBench, else the earliest
  evaluation contest date, or ``prepare.date_cutoff``). The recipe trains on LiveCodeBench problems
  before 2024-08-01 for an evaluation window that starts there.
- By text, regardless of date: word 13-grams of the normalized statements; a training problem is
  dropped when the grams it shares with one evaluation problem are at least ``threshold`` (0.5) of
  the smaller gram set of the two. Shared boilerplate (the usual "the first line contains an
  integer t, the number of test cases" is 13+ words) covers a few grams of a statement, a pasted
  problem all of them, and a statement pasted inside a longer one all of the smaller set.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from nous_ray.data.problem import Problem
from nous_ray.prepare.stage import Dropped, Note, StageResult
from nous_ray.prepare.text import ngrams, words


def parse_day(value: str, what: str) -> dt.datetime:
    """An ISO date or date-time as a naive datetime; errors name ``what``."""
    try:
        d = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: not an ISO date: {value!r}") from None
    return d.replace(tzinfo=None)


def date_cutoff(eval_problems: list[Problem], explicit: str | None, window_start: str | None) -> dt.datetime | None:
    """The first day a training problem may not carry: ``explicit``, else ``window_start``, else the
    earliest evaluation contest date (its day), else None (no evaluation problem has a date)."""
    if explicit:
        return parse_day(explicit, "prepare.date_cutoff")
    if window_start:
        return parse_day(window_start, "eval.start_date")
    dates = [parse_day(p.contest_date, f"evaluation problem {p.id}: contest_date")
             for p in eval_problems if p.contest_date]
    if not dates:
        return None
    first = min(dates)
    return dt.datetime(first.year, first.month, first.day)


class EvalIndex:
    """Word n-grams of the evaluation statements, inverted: gram -> evaluation problems holding it."""

    def __init__(self, eval_problems: list[Problem], n: int):
        self.n = n
        self.ids = [p.id for p in eval_problems]
        self.sizes = []
        self.index: dict[str, list[int]] = {}
        for k, p in enumerate(eval_problems):
            grams = ngrams(words(p.prompt), n)
            self.sizes.append(len(grams))
            for g in grams:
                self.index.setdefault(g, []).append(k)

    def best_overlap(self, statement: str) -> tuple[float, str | None, int]:
        """(overlap, evaluation id, shared grams) of the evaluation problem this statement overlaps
        most; overlap = shared grams / the smaller of the two gram sets."""
        grams = ngrams(words(statement), self.n)
        shared: Counter = Counter()
        for g in grams:
            for k in self.index.get(g, ()):
                shared[k] += 1
        best = (0.0, None, 0)
        for k, c in shared.items():
            score = c / min(len(grams), self.sizes[k])
            if score > best[0]:
                best = (score, self.ids[k], c)
        return best


def decontaminate(problems: list[Problem], eval_problems: list[Problem], *, ngram: int = 13,
                  threshold: float = 0.5, by_date: bool = True, cutoff: dt.datetime | None = None) -> StageResult:
    index = EvalIndex(eval_problems, ngram)
    kept, dropped, notes = [], [], []
    for p in problems:
        if by_date and cutoff is not None and p.contest_date:
            try:
                day = parse_day(p.contest_date, "contest_date")
            except ValueError as e:
                notes.append(Note(p, "unparsable_date", str(e)))
            else:
                if day >= cutoff:
                    dropped.append(Dropped(p, "after_eval_start",
                                           f"contest_date {p.contest_date} >= {cutoff.date().isoformat()}"))
                    continue
        score, eid, shared = index.best_overlap(p.prompt)
        if eid is not None and score >= threshold:
            dropped.append(Dropped(p, "ngram_overlap",
                                   f"with {eid}: {shared} shared {ngram}-grams, overlap {score:.3f}"))
            continue
        kept.append(p)
    info = {"ngram": ngram, "threshold": threshold, "overlap": "shared n-grams / smaller n-gram set",
            "eval_problems": len(eval_problems),
            "date_cutoff": cutoff.date().isoformat() if (by_date and cutoff is not None) else None}
    return StageResult(kept, dropped, notes, info)
