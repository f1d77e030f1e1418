"""results.jsonl bookkeeping and resume, and evaluate() end to end with the real local verifier.

The rollout side is a scripted pool returning fixed completions (a right and a wrong program): the
engine is covered by the integration test; here the point is which problems get generated, what is
recorded, and the summary's exact numbers.
"""

import asyncio
import json

import pytest

from nous_ray.config import Config, VerifierConfig
from nous_ray.data.problem import Problem, TestCase
from nous_ray.eval import EvalResumeError, ResultsFile, complete_problems, evaluate, read_records
from nous_ray.samples import Sample
from nous_ray.verify import make_backend


def rec(pid, j, verdict="accepted"):
    return {"problem_id": pid, "sample": j, "verdict": verdict, "reward": 1.0, "response_tokens": 3,
            "finish_reason": "stop", "text": "x", "difficulty": "easy", "platform": "atcoder"}


def write_lines(path, lines):
    path.write_text("".join(lines))


def test_resume_keeps_complete_problems_and_drops_partial_and_torn_lines(tmp_path):
    lines = [json.dumps(rec("a", j)) + "\n" for j in range(3)]           # a: complete (n=3)
    lines += [json.dumps(rec("b", j)) + "\n" for j in range(2)]          # b: 2 of 3
    lines += [json.dumps(rec("c", j)) + "\n" for j in (0, 2, 1)]         # c: complete, out of order
    lines += [json.dumps(rec("d", j)) + "\n" for j in (0, 1, 1)]         # d: a repeated index
    lines += ['{"problem_id": "e", "sam']                                # torn by a crash
    write_lines(tmp_path / "results.jsonl", lines)
    assert read_records(tmp_path / "results.jsonl")[1] == 1
    rf = ResultsFile(tmp_path, n_samples=3)
    done = rf.resume({"model": "m"})
    assert sorted(done) == ["a", "c"]
    assert [r["sample"] for r in done["c"]] == [0, 1, 2]
    # The file now holds exactly the kept problems, so appends after it stay well-formed.
    kept, torn = read_records(tmp_path / "results.jsonl")
    assert torn == 0 and [(r["problem_id"], r["sample"]) for r in kept] == [
        ("a", 0), ("a", 1), ("a", 2), ("c", 0), ("c", 1), ("c", 2)]
    rf.append_problem([rec("b", j) for j in range(3)])
    rf.close()
    assert sorted(complete_problems(read_records(tmp_path / "results.jsonl")[0], 3)) == ["a", "b", "c"]


def test_resume_refuses_other_settings_and_fresh_discards(tmp_path):
    rf = ResultsFile(tmp_path, n_samples=1)
    rf.resume({"model": "m", "max_tokens": 64})
    rf.append_problem([rec("a", 0)])
    rf.close()
    with pytest.raises(EvalResumeError, match=r"max_tokens: 64 -> 128.*--fresh"):
        ResultsFile(tmp_path, n_samples=1).resume({"model": "m", "max_tokens": 128})
    assert ResultsFile(tmp_path, n_samples=1).resume({"model": "m", "max_tokens": 128}, fresh=True) == {}
    assert (tmp_path / "results.jsonl").read_text() == ""


def test_a_line_that_is_json_but_no_record_is_an_error_naming_it(tmp_path):
    write_lines(tmp_path / "results.jsonl", [json.dumps(rec("a", 0)) + "\n", '{"problem_id": "b"}\n'])
    with pytest.raises(ValueError, match=r"results.jsonl: line 2: missing field\(s\) \['sample'"):
        ResultsFile(tmp_path, n_samples=1).resume({})


# ---- evaluate() -----------------------------------------------------------------------------

SUM = Problem(id="sum", source="t", prompt="a+b", tests=[TestCase("1 2\n", "3\n"), TestCase("5 7\n", "12\n")],
              difficulty="easy", platform="atcoder", time_limit_s=5)
NEG = Problem(id="neg", source="t", prompt="-n", tests=[TestCase("4\n", "-4\n")], difficulty="hard",
              platform="codeforces", time_limit_s=5)
EMPTY = Problem(id="empty", source="t", prompt="print nothing", tests=[TestCase("\n", "")],
                difficulty="easy", platform="leetcode", time_limit_s=5)
RIGHT = {"sum": "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
         "neg": "```python\nprint(-int(input()))\n```",
         "empty": "```python\npass\n```"}
WRONG = "```python\nprint(0)\n```"
# Per problem, which of the 4 samples are right: sum 3/4, neg 1/4, empty 1/4 (expected output "").
RIGHT_AT = {"sum": {0, 1, 3}, "neg": {2}, "empty": {0}}


class ScriptedPool:
    size = 1

    def __init__(self, fail_on_call=None):
        self.calls = []
        self.fail_on_call = fail_on_call

    async def generate(self, i, requests, n, sampling, max_tokens):
        self.calls.append([q.problem_id for q in requests])
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("engine died")
        out = []
        for q in requests:
            for j in range(n):
                text = RIGHT[q.problem_id] if j in RIGHT_AT[q.problem_id] else WRONG
                out.append(Sample(problem_id=q.problem_id, group_id=q.group_id, prompt_ids=q.prompt_ids,
                                  response_ids=list(range(5 + j)), logprobs=[0.0] * (5 + j),
                                  finish_reason="length" if j == 3 else "stop", version=0, text=text))
        return out


class LocalVerifiers:
    def __init__(self):
        self.backend = make_backend(VerifierConfig(workers=2))

    async def verify_group(self, problem, completions):
        return [r.to_dict() for r in await self.backend.averify([(problem, c) for c in completions])]


@pytest.fixture(scope="module")
def verifiers():
    v = LocalVerifiers()
    yield v
    v.backend.close()


def cfg4():
    cfg = Config()
    cfg.eval.n_samples = 4
    cfg.eval.max_tokens = 16
    cfg.rollout.max_prompts_per_worker = 1  # one problem at a time: the failing call is deterministic
    return cfg


def test_evaluate_resumes_after_a_generation_failure_without_regenerating(tmp_path, verifiers):
    problems, ids = [SUM, NEG, EMPTY], [[1, 2], [3], [4, 5, 6]]
    pool = ScriptedPool(fail_on_call=2)
    with pytest.raises(RuntimeError, match="engine died"):
        asyncio.run(evaluate(cfg4(), problems, ids, pool, verifiers, tmp_path, progress=False, plot=False,
                             say=lambda m: None))
    # The first problem was generated and verified before the failure, and recorded.
    assert sorted(complete_problems(read_records(tmp_path / "results.jsonl")[0], 4)) == ["sum"]

    pool2 = ScriptedPool()
    said = []
    s = asyncio.run(evaluate(cfg4(), problems, ids, pool2, verifiers, tmp_path, progress=False,
                             say=said.append))
    assert pool2.calls == [["neg"], ["empty"]]
    assert "1 resumed" in said[0] and "2 to generate" in said[0]
    assert s["run"]["problems_resumed"] == 1 and s["run"]["problems_generated"] == 2
    assert s["run"]["policy_versions"] == [0]
    recs = read_records(tmp_path / "results.jsonl")[0]
    got = {(r["problem_id"], r["sample"]): r["verdict"] for r in recs}
    assert len(recs) == 12
    for pid, right in RIGHT_AT.items():
        for j in range(4):
            assert got[(pid, j)] == ("accepted" if j in right else "wrong_answer"), (pid, j)
    assert s["pass@1"] == pytest.approx((3 / 4 + 1 / 4 + 1 / 4) / 3)
    assert s["pass@k"]["4"] == 1.0
    assert s["truncation_rate"] == pytest.approx(3 / 12)
    assert s["mean_response_tokens"] == pytest.approx((5 + 6 + 7 + 8) / 4)
    assert s["by_platform"]["codeforces"]["pass@1"] == pytest.approx(0.25)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(s))
    assert (tmp_path / "pass_at_1.png").stat().st_size > 0

    # A third run has nothing left to generate.
    pool3 = ScriptedPool()
    s3 = asyncio.run(evaluate(cfg4(), problems, ids, pool3, verifiers, tmp_path, progress=False, plot=False,
                              say=lambda m: None))
    assert pool3.calls == [] and s3["run"]["problems_generated"] == 0
    assert {k: v for k, v in s3.items() if k != "run"} == {k: v for k, v in s.items() if k != "run"}


def test_each_response_gets_the_context_left_by_its_prompt(tmp_path, verifiers):
    """With the engines' max_model_len given (YaRN: 81,920 positions in all), a problem's response limit
    is max_model_len minus its prompt, at most max_tokens."""
    class Recording(ScriptedPool):
        limits = {}

        async def generate(self, i, requests, n, sampling, max_tokens):
            self.limits[requests[0].problem_id] = max_tokens
            return await super().generate(i, requests, n, sampling, max_tokens)

    problems, ids = [SUM, NEG, EMPTY], [[1, 2], [3], [4, 5, 6]]
    pool = Recording()
    s = asyncio.run(evaluate(cfg4(), problems, ids, pool, verifiers, tmp_path, max_model_len=18, progress=False,
                             plot=False, say=lambda m: None))
    assert pool.limits == {"sum": 16, "neg": 16, "empty": 15}  # max_tokens 16; 18 - 3 = 15
    assert (s["run"]["max_tokens"], s["run"]["max_model_len"]) == (16, 18)
    with pytest.raises(ValueError, match="problem empty has a 3-token prompt, no room for a response in max_model_len 3"):
        asyncio.run(evaluate(cfg4(), problems, ids, Recording(), verifiers, tmp_path / "b", max_model_len=3,
                             progress=False, plot=False, say=lambda m: None))


def test_a_verifier_failure_makes_infra_errors_counted_outside_the_denominator(tmp_path, verifiers):
    class Flaky(LocalVerifiers):
        def __init__(self, inner):
            self.backend = inner.backend

        async def verify_group(self, problem, completions):
            if problem.id == "neg":
                raise ConnectionError("verifier actor unreachable")
            return await super().verify_group(problem, completions)

    s = asyncio.run(evaluate(cfg4(), [SUM, NEG], [[1], [2]], ScriptedPool(), Flaky(verifiers), tmp_path,
                             progress=False, plot=False, say=lambda m: None))
    assert s["infra_error"] == 4 and s["problems"] == 1 and s["problems_all_infra_error"] == 1
    assert s["pass@1"] == pytest.approx(3 / 4)
    recs = read_records(tmp_path / "results.jsonl")[0]
    assert {r["detail"] for r in recs if r["problem_id"] == "neg"} == {"ConnectionError: verifier actor unreachable"}
