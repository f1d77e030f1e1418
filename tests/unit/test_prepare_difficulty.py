"""Stage 5's loop and decisions with the training judge; the samples come from a stand-in for the
rollout workers (the real ones run in tests/integration/test_prepare_data_e2e.py)."""

import asyncio
import json

import pytest

from nous_ray.config import Config, VerifierConfig
from nous_ray.data import Problem, TestCase
from nous_ray.prepare.cache import ResultCache
from nous_ray.prepare.difficulty import difficulty_settings, run_difficulty
from nous_ray.samples import Sample
from nous_ray.verify import LocalBackend

RIGHT = "```python\nprint(int(input()) * {k})\n```"
WRONG = "```python\nprint(0)\n```"


def times(k: int) -> Problem:
    return Problem(f"times{k}", "t", f"Read n. Print n*{k}.",
                   [TestCase(f"{x}\n", f"{x * k}\n") for x in (1, 2, 3)], time_limit_s=2.0)


# Per problem, the answers the "model" gives: all right, none right, half right, one of four right.
ANSWERS = {
    "times2": [RIGHT.format(k=2)] * 4,
    "times3": [WRONG, "no code at all", WRONG, WRONG],
    "times4": [RIGHT.format(k=4), WRONG, RIGHT.format(k=4), WRONG],
    "times5": [WRONG, WRONG, WRONG, RIGHT.format(k=5)],
}


class ScriptedSampler:
    """Answers from ANSWERS, with the rollout pool's interface (``size``, ``encode``, ``generate``)."""

    def __init__(self, size=2):
        self.size = size
        self.asked: list[str] = []
        self.closed = False

    def encode(self, problems):
        return [[7] * len(p.prompt) for p in problems]

    async def generate(self, i, requests, n, sampling, max_tokens):
        assert sampling == {"temperature": 1.0, "top_p": 1.0, "top_k": 0} and max_tokens == 48
        out = []
        for q in requests:
            self.asked.append(q.problem_id)
            for j in range(n):
                text = ANSWERS[q.problem_id][j]
                out.append(Sample(q.problem_id, q.group_id, q.prompt_ids, [1, 2], [0.0, 0.0],
                                  "stop" if j else "length", 0, text=text))
        await asyncio.sleep(0)
        return out

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def backend():
    b = LocalBackend(VerifierConfig(workers=2))
    yield b
    b.close()


def cfg() -> Config:
    c = Config()
    c.prepare.difficulty_samples = 4
    c.rollout.max_prompts_per_worker = 6  # 2 calls of 3 prompts per worker
    c.algo.context_schedule[0].max_tokens = 48
    return c


def run(problems, backend, path, sampler_factory):
    c = cfg()
    return asyncio.run(run_difficulty(problems, c, sampler_factory, backend,
                                      ResultCache(path, difficulty_settings(c))))


def test_always_and_never_solved_are_dropped_and_counts_saved(backend, tmp_path):
    problems = [times(k) for k in (2, 3, 4, 5)]
    sampler = ScriptedSampler()
    res = run(problems, backend, tmp_path / "pc.jsonl", lambda: sampler)
    assert sampler.closed and sorted(sampler.asked) == ["times2", "times3", "times4", "times5"]
    assert [(d.problem.id, d.reason, d.detail) for d in res.dropped] == [
        ("times2", "always_solved", "4/4"), ("times3", "never_solved", "0/4")]
    assert [p.id for p in res.kept] == ["times4", "times5"]
    assert res.info["pass_counts"] == {"0/4": 1, "1/4": 1, "2/4": 1, "4/4": 1}
    assert res.info["sampled"] == 4 and res.info["reused"] == 0
    saved = {r["id"]: r for r in map(json.loads, (tmp_path / "pc.jsonl").read_text().splitlines())}
    assert {k: (r["passed"], r["n"], r["valid"], r["truncated"]) for k, r in saved.items()} == {
        "times2": (4, 4, 4, 1), "times3": (0, 4, 4, 1), "times4": (2, 4, 4, 1), "times5": (1, 4, 4, 1)}
    assert saved["times3"]["verdicts"] == {"no_code": 1, "wrong_answer": 3}


def test_rerun_starts_no_workers_and_resume_samples_only_the_missing(backend, tmp_path):
    problems = [times(k) for k in (2, 3, 4, 5)]
    path = tmp_path / "pc.jsonl"
    first = run(problems, backend, path, ScriptedSampler)

    def refuse():
        raise AssertionError("workers started although every pass count is saved")

    again = run(problems, backend, path, refuse)
    assert [p.id for p in again.kept] == [p.id for p in first.kept] and again.info["reused"] == 4
    # Interrupted after two problems, the third torn mid-line.
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:30])
    sampler = ScriptedSampler(size=1)
    resumed = run(problems, backend, path, lambda: sampler)
    assert sorted(sampler.asked) == sorted(json.loads(x)["id"] for x in lines[2:])
    assert [p.id for p in resumed.kept] == [p.id for p in first.kept]
    assert resumed.info["sampled"] == 2 and resumed.info["reused"] == 2
    # Other sampling settings do not reuse these counts.
    c = cfg()
    c.rollout.sampling.temperature = 0.6
    assert ResultCache(path, difficulty_settings(c)).get(problems[0]) is None


def test_a_prompt_that_leaves_no_room_to_answer_is_not_sampled(backend, tmp_path):
    long = Problem("long", "t", "Read n. Print n*2. " + "Mind the details. " * 12,
                   [TestCase("1\n", "2\n")] * 3)
    problems = [times(2), long, times(4)]
    sampler = ScriptedSampler()
    c = cfg()
    c.rollout.max_model_len = 256  # times(k) prompts are 18 "tokens" (one per character), the long one 235
    res = asyncio.run(run_difficulty(problems, c, lambda: sampler, backend,
                                     ResultCache(tmp_path / "pc.jsonl", difficulty_settings(c))))
    assert sorted(sampler.asked) == ["times2", "times4"]
    assert [p.id for p in res.kept] == ["long", "times4"]
    assert [(n.problem.id, n.flag, n.detail) for n in res.notes] == [
        ("long", "unmeasured", "prompt of 235 tokens + 48 > 256")]
    assert len((tmp_path / "pc.jsonl").read_text().splitlines()) == 2
