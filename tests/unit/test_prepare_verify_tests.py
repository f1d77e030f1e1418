"""Stage 4 with the training judge on the fixtures: broken references, multi-answer problems,
too few tests, disagreeing tests, and the saved judgements a re-run reuses."""

import asyncio
import json
from pathlib import Path

import pytest

from nous_ray.config import VerifierConfig
from nous_ray.data import Problem, TestCase, load_problems
from nous_ray.prepare.cache import ResultCache
from nous_ray.prepare.verify_tests import analyse, is_multi_answer, verify_tests
from nous_ray.verify import LocalBackend, VerifyResult
from nous_ray.verify.result import Verdict

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "prepare"


@pytest.fixture(scope="module")
def backend():
    b = LocalBackend(VerifierConfig(workers=2))
    yield b
    b.close()


@pytest.fixture(scope="module")
def pool():
    return (load_problems("deepcoder", str(FIX / "deepcoder"), ["taco"], errors="skip")
            + load_problems("deepcoder", str(FIX / "deepcoder"), ["primeintellect"]))


class Refusing:
    """A backend that must not be called (everything should come from the saved judgements)."""

    async def averify(self, items):
        raise AssertionError(f"judged again: {[p.id for p, _ in items]}")


class Infra:
    async def averify(self, items):
        return [VerifyResult(p.id, Verdict.INFRA_ERROR, detail="sandbox down") for p, _ in items]


def run(problems, backend, path, **kw):
    return asyncio.run(verify_tests(problems, backend, ResultCache(path, {"k": 3}), **kw))


def test_each_fixture_ends_where_it_should(pool, backend, tmp_path):
    res = run(pool, backend, tmp_path / "v.jsonl")
    dropped = {d.problem.id: (d.reason, d.detail) for d in res.dropped}
    assert dropped == {
        # Its test for n=5 expects 121: the (correct) reference fails exactly that test.
        "deepcoder/taco/train/2": ("references_fail", "none of 1 references passes (wrong_answer); "
                                                      "no reference passes tests [3]"),
        "deepcoder/taco/train/3": ("multi_answer", "the statement accepts any of several answers; "
                                                   "the judge has no checker"),
        "deepcoder/taco/train/4": ("too_few_tests", "1 < 5"),
    }
    notes = sorted((n.problem.id, n.flag, n.detail) for n in res.notes)
    # The first-pair reference matches the expected outputs; the smallest-j one answers another
    # valid pair on tests 1 and 3.
    assert notes == [("deepcoder/primeintellect/train/2", "no_references", ""),
                     ("deepcoder/taco/train/3", "references_disagree", "tests [1, 3]")]
    assert [p.id for p in res.kept] == [
        "deepcoder/taco/train/0", "deepcoder/taco/train/1", "deepcoder/taco/train/5",  # 5: call-based
        "deepcoder/primeintellect/train/0", "deepcoder/primeintellect/train/1", "deepcoder/primeintellect/train/2",
        "deepcoder/primeintellect/train/3"]
    assert res.info["judged"] == 8 and res.info["reused"] == 0


def test_switches_keep_multi_answer_and_min_tests(pool, backend, tmp_path):
    res = run(pool, backend, tmp_path / "v.jsonl", keep_multi_answer=True, min_tests=1)
    assert {d.problem.id: d.reason for d in res.dropped} == {"deepcoder/taco/train/2": "references_fail"}
    assert "deepcoder/taco/train/3" in {p.id for p in res.kept}
    assert ("deepcoder/taco/train/3", "multi_answer") in {(n.problem.id, n.flag) for n in res.notes}


def test_rerun_reuses_saved_judgements_and_resumes_after_a_torn_write(pool, backend, tmp_path):
    path = tmp_path / "v.jsonl"
    first = run(pool, backend, path)
    lines = path.read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(x)["id"] for x in lines)
    again = run(pool, Refusing(), path)
    assert [p.id for p in again.kept] == [p.id for p in first.kept]
    assert again.info == {**first.info, "judged": 0, "reused": 8}
    # An interrupted run: three problems written, the fourth torn mid-line.
    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])
    judged = []

    class Counting:
        async def averify(self, items):
            judged.extend(p.id.split("#")[0] for p, _ in items)
            return await backend.averify(items)

    resumed = run(pool, Counting(), path)
    assert sorted(set(judged)) == sorted(json.loads(x)["id"] for x in lines[3:])
    assert [p.id for p in resumed.kept] == [p.id for p in first.kept] and resumed.info["reused"] == 3
    # Another judge setting, or an edited problem, is judged again.
    assert ResultCache(path, {"k": 2}).get(pool[0]) is None
    edited = Problem(**{**pool[0].__dict__, "tests": pool[0].tests[:-1]})
    assert ResultCache(path, {"k": 3}).get(edited) is None and ResultCache(path, {"k": 3}).get(pool[0])


def test_judge_failures_keep_the_problem_unverified_and_unsaved(pool, tmp_path):
    path = tmp_path / "v.jsonl"
    res = run(pool, Infra(), path)
    assert {d.reason for d in res.dropped} == {"too_few_tests", "multi_answer"}
    assert sum(n.flag == "infra_error" for n in res.notes) == 7  # 8 with references, less the multi-answer one
    assert not path.exists()  # nothing saved: the next run judges them


def test_analyse_matrix():
    rec = {"verdicts": ["accepted", "wrong_answer", "compile_error", "infra_error"],
           "per_test": {"1": ["accepted", "wrong_answer", "accepted", "time_limit"]}}
    # Reference 2 failed as a whole (unknown per test), 3 was not judged.
    assert analyse(rec, 4) == {"passing": 1, "judged": 3, "unpassed": [], "disagree": [1, 3]}
    rec = {"verdicts": ["wrong_answer", "runtime_error", "time_limit"],
           "per_test": {"0": ["accepted", "wrong_answer", "accepted"],
                        "1": ["runtime_error", "wrong_answer", "accepted"]}}
    assert analyse(rec, 3) == {"passing": 0, "judged": 3, "unpassed": [1], "disagree": []}
    # Only whole-program failures: nothing known test by test.
    assert analyse({"verdicts": ["time_limit"], "per_test": {}}, 2) == {
        "passing": 0, "judged": 1, "unpassed": [], "disagree": []}


def test_slow_or_uncompilable_references_are_not_rerun_test_by_test(backend, tmp_path):
    p = Problem("inc", "t", "Print n+1.", [TestCase(f"{k}\n", f"{k + 1}\n") for k in range(5)], time_limit_s=0.5,
                solutions=["import time\nwhile True:\n    pass\n", "print(int(input()) +\n", "print(1)\n"])
    res = run([p], backend, tmp_path / "v.jsonl")
    rec = json.loads((tmp_path / "v.jsonl").read_text())
    assert rec["verdicts"] == ["time_limit", "compile_error", "wrong_answer"]
    # Only the wrong answer was run test by test: it passes test 0 (n=0 -> 1) alone.
    assert rec["per_test"] == {"2": ["accepted"] + ["wrong_answer"] * 4}
    assert [(d.reason, d.detail) for d in res.dropped] == [
        ("references_fail", "none of 3 references passes (time_limit, compile_error, wrong_answer); "
                            "no reference passes tests [1, 2, 3, 4]")]


@pytest.mark.parametrize("text,expected", [
    ("If there are multiple answers, print any of them.", True),
    ("If there are several possible solutions, output any.", True),
    ("Output any valid answer.", True),
    ("You may print any permutation that works.", True),
    ("Note that the answer is not unique.", True),
    ("Print the answer. It is guaranteed that the answer is unique.", False),
    ("Print any two numbers... just kidding: print their sum.", False),
    ("Print the number of ways modulo 998244353.", False),
])
def test_multi_answer_statements(text, expected):
    assert is_multi_answer(text) is expected


def test_a_call_based_reference_is_judged_by_calling_it(backend, tmp_path):
    p = Problem("sq", "t", "Return x squared.", [TestCase(str(k), str(k * k), "functional") for k in range(5)],
                fn_name="sq", solutions=["def sq(x):\n    return x * x\n", "def sq(x):\n    return x + x\n"])
    res = run([p], backend, tmp_path / "v.jsonl")
    assert [q.id for q in res.kept] == ["sq"]
    # x + x equals x * x for 0 and 2 only.
    assert [(n.flag, n.detail) for n in res.notes] == [("references_disagree", "tests [1, 3, 4]")]
