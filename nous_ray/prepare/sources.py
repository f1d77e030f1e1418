"""Stage 1: the ``--train`` / ``--eval`` sources, loaded and validated by the project's loaders.

A SOURCE is ``NAME`` or ``NAME:PATH``, NAME a loader (``deepcoder``, ``rlvr``, ``lcb``, ``jsonl``,
``tiny``) or a DeepCoder subset ``deepcoder/SUBSET``; PATH a hub name or local files, as the loaders
take them. Malformed rows are skipped and counted by the loaders' own ``errors="skip"`` (their
reason is the field the loader names), or stop the run with the loader's error.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass

from nous_ray.config import EvalConfig
from nous_ray.data.collect import record_skips
from nous_ray.data.loaders import LOADERS, load_problems
from nous_ray.data.problem import Problem, ProblemFormatError
from nous_ray.prepare.stage import Dropped, StageResult


class SourceError(ValueError):
    """A SOURCE argument that names no loader."""


@dataclass(frozen=True)
class SourceSpec:
    text: str  # as given on the command line
    name: str  # the loader
    subsets: tuple[str, ...]
    path: str | None
    label: str = ""  # how the report names it

    @property
    def display(self) -> str:
        return self.label or self.text


def parse_source(text: str) -> SourceSpec:
    """``NAME[/SUBSET][:PATH]`` -> :class:`SourceSpec` (label: the part before the colon)."""
    head, sep, path = text.partition(":")
    if not head or (sep and not path):
        raise SourceError(f"source {text!r}: expected NAME or NAME:PATH")
    name, _, subset = head.partition("/")
    if name not in LOADERS:
        raise SourceError(f"source {text!r}: unknown loader {name!r}; known: {sorted(LOADERS)}")
    if subset and name != "deepcoder":
        raise SourceError(f"source {text!r}: only deepcoder takes a subset (deepcoder/SUBSET)")
    return SourceSpec(text=text, name=name, subsets=(subset,) if subset else (), path=path or None, label=head)


def label_sources(specs: list[SourceSpec]) -> list[SourceSpec]:
    """Report labels: the NAME part, or the whole text where two sources share a NAME (and ``#2``,
    ``#3``... on the repeats of a source given twice)."""
    counts = Counter(s.label for s in specs)
    out, seen = [], Counter()
    for s in specs:
        label = s.label if counts[s.label] == 1 else s.text
        seen[label] += 1
        out.append(dataclasses.replace(s, label=label if seen[label] == 1 else f"{label}#{seen[label]}"))
    return out


def malformed_reason(err: ProblemFormatError) -> str:
    """``malformed:<field>`` with list indices folded (``tests.inputs[3]`` -> ``tests.inputs[]``), so
    the reasons count kinds of breakage, not rows."""
    return "malformed:" + re.sub(r"\[\d+\]", "[]", str(err.field))


def load_source(spec: SourceSpec, *, skip_malformed: bool, eval_cfg: EvalConfig | None = None
                ) -> tuple[list[Problem], list[ProblemFormatError]]:
    """The problems of one source and the rows skipped as malformed.

    ``eval_cfg``: for an ``lcb`` evaluation source, its release and contest-date window
    (``eval.release_version``, ``eval.start_date`` .. ``eval.end_date``) select the problems.
    """
    filters: dict = {"errors": "skip" if skip_malformed else "raise"}
    if eval_cfg is not None and spec.name == "lcb":
        filters.update(release_version=eval_cfg.release_version, start_date=eval_cfg.start_date,
                       end_date=eval_cfg.end_date)
    path = spec.path
    if eval_cfg is not None and path is None and spec.name == eval_cfg.dataset:
        path = eval_cfg.path
    with record_skips() as skipped:
        problems = load_problems(spec.name, path, spec.subsets, None, **filters)
    return problems, list(skipped)


def load_training(specs: list[SourceSpec], *, skip_malformed: bool) -> tuple[StageResult, dict[str, str], dict]:
    """Stage 1 over every training source, in order.

    Returns the stage result (ids repeated across sources are dropped as ``duplicate_id``: the
    output is keyed by id), each kept problem's source label, and per label the rows read
    (kept + skipped) and the skipped rows as ``(reason, place, message)``.
    """
    kept: list[Problem] = []
    dropped: list[Dropped] = []
    origin: dict[str, str] = {}
    per_source: dict[str, dict] = {}
    for spec in specs:
        problems, skipped = load_source(spec, skip_malformed=skip_malformed)
        label = spec.display
        per_source[label] = {"read": len(problems) + len(skipped),
                             "malformed": [(malformed_reason(e), f"{e.dataset}:{e.row}", str(e)) for e in skipped]}
        for p in problems:
            if p.id in origin:
                dropped.append(Dropped(p, "duplicate_id", f"id already read from {origin[p.id]}", source=label))
                continue
            origin[p.id] = label
            kept.append(p)
    return StageResult(kept, dropped), origin, per_source
