"""Stage 4: tests a correct program can pass, checked with the training judge.

For each problem: fewer than ``min_tests`` tests -> dropped (``too_few_tests``). Otherwise up to
``max_references`` of its reference solutions run through the judge (``make_backend(cfg.verifier)``,
the judge training uses). A reference that gives a wrong answer or a runtime error is run again test
by test, which gives, per test, which references pass it:

- no reference passes every test -> dropped as broken (``references_fail``; the detail names the
  tests no reference passes);
- references that pass some tests disagree with one that passes all: those tests are reported
  (note ``references_disagree``) -- the symptom of a multi-answer problem or a wrong reference;
- a statement that accepts any of several answers (see :data:`MULTI_ANSWER`) needs a checker the
  judge does not have: flagged and dropped (``multi_answer``) unless ``keep_multi_answer``;
- no reference solutions: kept, noted ``no_references`` (nothing to check the tests with);
- the judge failed (infra_error on every reference): kept unverified, noted, and judged again next run.

Judgements are saved per problem (``verify_results.jsonl``) and reused by a re-run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Sequence

from nous_ray.data.problem import Problem
from nous_ray.prepare.cache import ResultCache
from nous_ray.prepare.stage import Dropped, Note, StageResult
from nous_ray.prepare.text import normalize_statement
from nous_ray.verdicts import Verdict

ACCEPTED, INFRA = Verdict.ACCEPTED.value, Verdict.INFRA_ERROR.value
# Failures re-run test by test: a different answer. A program that does not compile fails every test
# alike, and a slow one is no disagreement about a test (and would cost the time limit per test).
RETEST = (Verdict.WRONG_ANSWER.value, Verdict.RUNTIME_ERROR.value)

# Statements that accept any of several answers (checked on the normalized, lower-case text).
MULTI_ANSWER = re.compile("|".join([
    r"\b(print|output|return)\s+any\s+(one\s+)?of\s+them\b",
    r"\bif\s+there\s+(are|is|exist|exists)\s+(multiple|several|many|more\s+than\s+one)\b[^.]{0,60}"
    r"\b(answers?|solutions?|ways|possibilities|options|pairs|sequences|permutations)\b",
    r"\b(multiple|several|many)\s+(valid|possible|correct|optimal)\s+(answers|solutions|outputs)\b",
    r"\bany\s+(valid|correct|possible|suitable|optimal)\s+(answer|solution|output)\b",
    r"\b(print|output)\s+any\s+(such|valid|correct|suitable)\b",
    r"\byou\s+(may|can)\s+(print|output|return)\s+any\b",
    r"\banswer\s+is\s+not\s+unique\b",
]))


def is_multi_answer(statement: str) -> bool:
    return MULTI_ANSWER.search(normalize_statement(statement)) is not None


def fence(code: str) -> str:
    """A reference solution as a model's answer: the judge takes the last fenced python block."""
    return f"```python\n{code.rstrip()}\n```\n"


async def judge_references(problem: Problem, backend, k: int) -> dict:
    """The judgement of up to ``k`` references: whole-problem verdicts, and per-test verdicts for
    each reference that failed (keyed by its index as text)."""
    refs = problem.solutions[:k]
    whole = await backend.averify([(problem, fence(s)) for s in refs])
    verdicts = [r.verdict.value for r in whole]
    retest = [j for j, v in enumerate(verdicts) if v in RETEST]
    per_test: dict[str, list[str]] = {}
    if retest:
        n = len(problem.tests)
        # One single-test problem per test; distinct ids, since the backend judges an identical
        # (problem id, program) pair once per call.
        singles = [dataclasses.replace(problem, id=f"{problem.id}#test{i}", tests=[t])
                   for i, t in enumerate(problem.tests)]
        results = await backend.averify([(singles[i], fence(refs[j])) for j in retest for i in range(n)])
        for m, j in enumerate(retest):
            per_test[str(j)] = [r.verdict.value for r in results[m * n:(m + 1) * n]]
    return {"verdicts": verdicts, "details": [r.detail for r in whole], "per_test": per_test}


def test_matrix(record: dict, n_tests: int) -> list[list[str | None]]:
    """Per reference, per test: the verdict, None where unknown (the judge failed, or the reference
    failed as a whole and was not run test by test)."""
    rows = []
    for j, v in enumerate(record["verdicts"]):
        if v == ACCEPTED:
            rows.append([ACCEPTED] * n_tests)
        elif str(j) in record["per_test"]:
            rows.append([None if x == INFRA else x for x in record["per_test"][str(j)]])
        else:
            rows.append([None] * n_tests)
    return rows


def analyse(record: dict, n_tests: int) -> dict:
    """What a judgement says: how many references pass every test and how many the judge ran, the
    tests no reference passes (where tests were run one by one), and the tests on which a reference
    passing all disagrees with one passing only some."""
    rows = test_matrix(record, n_tests)
    full = [r for r in rows if all(x == ACCEPTED for x in r)]
    partial = [r for r in rows if any(x == ACCEPTED for x in r) and r not in full]
    known = [r for r in rows if any(x is not None for x in r)]
    unpassed = [i for i in range(n_tests) if known and not any(r[i] == ACCEPTED for r in known)]
    disagree = [i for i in range(n_tests) if full and any(r[i] not in (ACCEPTED, None) for r in partial)]
    return {"passing": len(full), "judged": sum(v != INFRA for v in record["verdicts"]), "unpassed": unpassed,
            "disagree": disagree}


def _brief(ixs: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, ixs[:limit]))
    return f"[{shown}{', ...' if len(ixs) > limit else ''}]"


def has_infra(record: dict) -> bool:
    return INFRA in record["verdicts"] or any(INFRA in v for v in record["per_test"].values())


async def verify_tests(problems: list[Problem], backend, cache: ResultCache, *, max_references: int = 3,
                       min_tests: int = 5, keep_multi_answer: bool = False, concurrency: int = 64,
                       progress: bool = False) -> StageResult:
    """Judge the references of ``problems`` (reusing ``cache``) and decide each problem."""
    dropped, notes = [], []
    enough = []
    for p in problems:
        if len(p.tests) < min_tests:
            dropped.append(Dropped(p, "too_few_tests", f"{len(p.tests)} < {min_tests}"))
        else:
            enough.append(p)

    records: dict[str, dict] = {}
    todo = []
    for p in enough:
        if not p.solutions:
            continue
        rec = cache.get(p)
        if rec is not None:
            records[p.id] = rec
        else:
            todo.append(p)
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="verify tests", unit="problem", dynamic_ncols=True)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(p: Problem) -> None:
        async with gate:
            rec = await judge_references(p, backend, max_references)
        if not has_infra(rec):
            rec = cache.put(p, rec)  # the judge failing is not the problem's doing: judge it again next run
        records[p.id] = rec
        if bar is not None:
            bar.update(1)

    try:
        await asyncio.gather(*(one(p) for p in todo))
    finally:
        if bar is not None:
            bar.close()
        cache.close()

    kept = []
    counts = {"judged": len(todo), "reused": sum(bool(p.solutions) for p in enough) - len(todo)}
    for p in enough:
        rec = records.get(p.id)
        a = analyse(rec, len(p.tests)) if rec is not None else None
        if a is not None and a["disagree"]:
            notes.append(Note(p, "references_disagree", f"tests {_brief(a['disagree'])}"))
        if is_multi_answer(p.prompt):
            if not keep_multi_answer:
                dropped.append(Dropped(p, "multi_answer", "the statement accepts any of several answers; "
                                       "the judge has no checker"))
                continue
            notes.append(Note(p, "multi_answer", "kept (prepare.keep_multi_answer): needs a checker"))
        if rec is None:
            notes.append(Note(p, "no_references"))
        elif a["passing"] == 0 and INFRA in rec["verdicts"]:
            # A reference the judge could not run might have passed: unverified, not broken.
            notes.append(Note(p, "infra_error", "; ".join(rec["details"])[:300]))
        elif a["passing"] == 0:
            why = f"none of {len(rec['verdicts'])} references passes ({', '.join(rec['verdicts'])})"
            if a["unpassed"]:
                why += f"; no reference passes tests {_brief(a['unpassed'])}"
            dropped.append(Dropped(p, "references_fail", why))
            continue
        kept.append(p)
    order = {id(p): i for i, p in enumerate(problems)}
    dropped.sort(key=lambda d: order[id(d.problem)])
    return StageResult(kept, dropped, notes, {"max_references": max_references, "min_tests": min_tests,
                                              "keep_multi_answer": keep_multi_answer, **counts})
