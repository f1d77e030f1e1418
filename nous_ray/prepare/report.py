"""``report.json`` and the printed table: per stage and per source ``{"in", "out", "dropped"}``.

Every stage is counted the same way: the problems that entered it, those that left it, and the
dropped ones by reason; ``dropped_ids`` lists each dropped problem (or malformed row) with its stage,
reason and detail, ``notes`` what the report should show about kept ones (references that disagree
on some tests, problems without references, cache reuse).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from nous_ray.data.problem import Problem
from nous_ray.prepare.stage import StageResult

STAGES = ("normalize", "dedupe", "decontaminate", "verify_tests", "difficulty")


def _counts(in_n: int, out_n: int, dropped: Counter) -> dict:
    return {"in": in_n, "out": out_n, "dropped": dict(sorted(dropped.items()))}


class Report:
    def __init__(self, labels: Iterable[str], header: dict[str, Any] | None = None):
        self.labels = list(labels)
        self.data: dict[str, Any] = dict(header or {})
        self.data["stages"] = {}
        self.data["dropped_ids"] = []
        self.data["notes"] = []

    def add(self, stage: str, *, ins: Counter, outs: Counter, drops: list[tuple[str, str, str, str]],
            notes: list[tuple[str, str, str, str]] = (), info: dict | None = None, enabled: bool = True) -> None:
        """One stage: problems in and out per source label, drops and notes as
        ``(label, id, reason_or_flag, detail)``."""
        by_reason: dict[str, Counter] = {label: Counter() for label in self.labels}
        for label, pid, reason, detail in drops:
            by_reason.setdefault(label, Counter())[reason] += 1
            self.data["dropped_ids"].append({"id": pid, "source": label, "stage": stage, "reason": reason,
                                             "detail": detail})
        flags = Counter()
        for label, pid, flag, detail in notes:
            flags[flag] += 1
            self.data["notes"].append({"id": pid, "source": label, "stage": stage, "flag": flag, "detail": detail})
        sources = {label: _counts(ins[label], outs[label], by_reason.get(label, Counter())) for label in self.labels}
        total = _counts(sum(ins.values()), sum(outs.values()), sum(by_reason.values(), Counter()))
        for label, c in sources.items():
            if c["in"] != c["out"] + sum(c["dropped"].values()):
                raise AssertionError(f"report: stage {stage}, source {label}: {c} does not add up")
        self.data["stages"][stage] = {"enabled": enabled, **total, "sources": sources,
                                      "notes": dict(sorted(flags.items())), **({"info": info} if info else {})}

    def add_result(self, stage: str, before: list[Problem], result: StageResult, origin: dict[str, str],
                   enabled: bool = True) -> None:
        """A stage that took ``before`` and returned ``result``; ``origin``: id -> source label."""
        ins = Counter(origin[p.id] for p in before)
        outs = Counter(origin[p.id] for p in result.kept)
        drops = [(d.source or origin[d.problem.id], d.problem.id, d.reason, d.detail) for d in result.dropped]
        notes = [(origin[n.problem.id], n.problem.id, n.flag, n.detail) for n in result.notes]
        self.add(stage, ins=ins, outs=outs, drops=drops, notes=notes, info=result.info, enabled=enabled)

    def skip(self, stage: str, problems: list[Problem], origin: dict[str, str], why: str) -> None:
        """A stage switched off: everything passes through."""
        c = Counter(origin[p.id] for p in problems)
        self.add(stage, ins=c, outs=c, drops=[], info={"skipped": why}, enabled=False)

    def write(self, path: str | Path) -> None:
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)

    def table(self) -> str:
        """Stages as rows: in, out, dropped by reason; then each source's problems in and out."""
        rows = [("stage", "in", "out", "dropped")]
        for stage, s in self.data["stages"].items():
            why = ", ".join(f"{r} {n}" for r, n in s["dropped"].items()) or "-"
            rows.append((stage if s["enabled"] else f"{stage} (off)", str(s["in"]), str(s["out"]), why))
        stages = list(self.data["stages"].values())
        if stages:
            rows.append(("", "", "", ""))
            rows.append(("source", "read", "kept", ""))
            first, last = stages[0]["sources"], stages[-1]["sources"]
            rows += [(label, str(first[label]["in"]), str(last[label]["out"]), "") for label in self.labels]
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join(f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}  {d}".rstrip() for a, b, c, d in rows)
