"""Backends: the local fork-server pool, the Modal client (stand-in transports), the Modal app."""

import asyncio
import json
import subprocess
import sys
import threading

import pytest

from nous_ray.config import VerifierConfig
from nous_ray.data.problem import Problem, TestCase
from nous_ray.verify.backend import LocalBackend, make_backend
from nous_ray.verify.judge import JudgeSettings, classify, judge_program
from nous_ray.verify.modal_client import ModalBackend, TokenBucket
from nous_ray.verify.result import Verdict
from nous_ray.verify.sandbox import RawRun, SandboxWorker

ADD = Problem("add", "test", "add two numbers", [TestCase("1 2\n", "3\n"), TestCase("40 2\n", "42\n")],
              time_limit_s=1.0, memory_limit_mb=512)
SQ = Problem("sq", "test", "square", [TestCase("[3]", "9", "functional"), TestCase("[-4]", "16", "functional")],
             fn_name="square", time_limit_s=1.0, memory_limit_mb=512)
GOOD_ADD = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
BAD_ADD = "```python\nprint(0)\n```"
GOOD_SQ = "```py\nclass Solution:\n    def square(self, xs):\n        return xs[0] ** 2\n```"
ITEMS = [(ADD, GOOD_ADD), (ADD, BAD_ADD), (SQ, GOOD_SQ), (ADD, "no code here"), (ADD, "```python\nprint(\n```"),
         (ADD, "Sure.\n" + GOOD_ADD)]  # the last one is the first program again: judged once
EXPECTED = [Verdict.ACCEPTED, Verdict.WRONG_ANSWER, Verdict.ACCEPTED, Verdict.NO_CODE, Verdict.COMPILE_ERROR,
            Verdict.ACCEPTED]


@pytest.fixture(scope="module")
def local():
    b = LocalBackend(VerifierConfig(workers=2))
    yield b
    b.close()


def test_local_verdicts_rewards_and_dedupe(local):
    submitted = []
    real = local.submit_job
    local.submit_job = lambda p, c: submitted.append((p.id, c)) or real(p, c)
    try:
        results = local.verify(ITEMS)
    finally:
        del local.submit_job
    assert [r.verdict for r in results] == EXPECTED
    assert [r.reward for r in results] == [1.0, -1.0, 1.0, -1.0, -1.0, 1.0]
    assert [r.id for r in results] == ["add", "add", "sq", "add", "add", "add"]
    assert len(submitted) == 5  # six items, five distinct (problem, program) pairs
    assert results[0].tests_run == 2 and results[0].cpu_s > 0


def test_local_averify_matches_verify(local):
    async def main():
        return await asyncio.gather(local.averify(ITEMS[:3]), local.averify(ITEMS[3:]))
    a, b = asyncio.run(main())
    assert [r.verdict for r in a + b] == EXPECTED


def test_make_backend_picks_by_name():
    with make_backend(VerifierConfig(backend="local", workers=1)) as b:
        assert isinstance(b, LocalBackend)
    assert isinstance(make_backend(VerifierConfig(backend="modal"), transport=lambda p, c: None), ModalBackend)
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend(VerifierConfig(backend="nope"))


# --- the time-limit rules, on scripted runs (the sandbox's own timing is tested for real elsewhere)

def raw(cpu, sig=0, status=0, wall_killed=False, out=b"3\n"):
    return RawRun(status=status, signal=sig, cpu_s=cpu, wall_s=cpu, wall_killed=wall_killed, stdout=out,
                  stdout_overflow=False, result=b"", stderr_tail="")


def test_classify_time_rules():
    s, t = JudgeSettings(rerun_margin=0.8), ADD.tests[0]
    assert classify(raw(0.95), t, ADD, s)[0] is Verdict.ACCEPTED
    assert classify(raw(1.1), t, ADD, s)[::2] == (Verdict.TIME_LIMIT, True)  # stopped by itself, near
    assert classify(raw(1.3), t, ADD, s)[::2] == (Verdict.TIME_LIMIT, False)  # past limit / margin
    assert classify(raw(2.0, sig=24, status=-1), t, ADD, s)[::2] == (Verdict.TIME_LIMIT, False)  # SIGXCPU
    assert classify(raw(0.01, wall_killed=True), t, ADD, s)[::2] == (Verdict.TIME_LIMIT, False)  # sleeper
    assert classify(raw(0.9, wall_killed=True), t, ADD, s)[::2] == (Verdict.TIME_LIMIT, True)  # loaded


class ScriptedWorker:
    """Stands in for the sandbox to show the re-run rule: answers runs from a script."""

    alive = True

    def __init__(self, runs):
        self.runs, self.calls = list(runs), 0

    def load(self, code):
        return None

    def run(self, stdin, limits, call_fn=None, read_cap=None):
        self.calls += 1
        return self.runs.pop(0)


def test_near_limit_is_rerun_once():
    w = ScriptedWorker([raw(1.1), raw(0.9, out=b"42\n"), raw(0.5)])
    assert judge_program(w, ADD, "x").verdict is Verdict.ACCEPTED and w.calls == 3
    w = ScriptedWorker([raw(1.1), raw(1.1)])
    r = judge_program(w, ADD, "x")
    assert r.verdict is Verdict.TIME_LIMIT and w.calls == 2 and r.tests_run == 1
    w = ScriptedWorker([raw(1.5)])
    assert judge_program(w, ADD, "x").verdict is Verdict.TIME_LIMIT and w.calls == 1


def test_longest_input_first():
    p = Problem("o", "t", "p", [TestCase("1", "1"), TestCase("333", "333"), TestCase("22", "22")], time_limit_s=1)
    seen = []

    class Echo(ScriptedWorker):
        def run(self, stdin, limits, call_fn=None, read_cap=None):
            seen.append(stdin)
            return raw(0.01, out=stdin)
    assert judge_program(Echo([]), p, "x").verdict is Verdict.ACCEPTED
    assert seen == [b"333", b"22", b"1"]


# --- Modal client with stand-in transports

def real_judge_transport():
    """Runs the real local judge in a thread, as the deployed function would in its container."""
    lock = threading.Lock()
    worker = SandboxWorker()

    async def call(problem: dict, code):
        def run():
            with lock:
                return judge_program(worker, Problem.from_dict(problem), code).to_dict()
        return await asyncio.to_thread(run)
    return call, worker


def modal_cfg(**kw):
    kw.setdefault("modal_max_creates_per_s", 1000.0)
    return VerifierConfig(backend="modal", **kw)


def test_modal_client_with_real_judge():
    transport, worker = real_judge_transport()
    try:
        b = ModalBackend(modal_cfg(), transport=transport)
        results = b.verify(ITEMS)
    finally:
        worker.close()
    assert [r.verdict for r in results] == EXPECTED
    assert b.calls == 4  # no-code is decided locally, the duplicate is sent once


def test_modal_failures_are_infra_errors_after_retries():
    attempts = []

    async def broken(problem, code):
        attempts.append(code)
        raise ConnectionError("modal unreachable")
    b = ModalBackend(modal_cfg(modal_retries=2), transport=broken)
    r = b.verify([(ADD, GOOD_ADD)])[0]
    assert r.verdict is Verdict.INFRA_ERROR and r.reward is None and "unreachable" in r.detail
    assert len(attempts) == 3


def test_modal_timeout_and_retry_then_success():
    attempts = []

    async def flaky(problem, code):
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(60)  # hangs: cut by the per-call timeout
        if len(attempts) == 2:
            return {"verdict": "not-a-verdict"}  # malformed: retried
        return {"verdict": "accepted", "tests_run": 2, "cpu_s": 0.01}
    b = ModalBackend(modal_cfg(modal_retries=2, modal_call_timeout_s=0.2), transport=flaky)
    r = b.verify([(ADD, GOOD_ADD)])[0]
    assert r.verdict is Verdict.ACCEPTED and len(attempts) == 3

    async def hangs(problem, code):
        await asyncio.sleep(60)
    b = ModalBackend(modal_cfg(modal_retries=1, modal_call_timeout_s=0.1), transport=hangs)
    r = b.verify([(ADD, GOOD_ADD)])[0]
    assert r.verdict is Verdict.INFRA_ERROR and "timeout" in r.detail


def test_modal_in_flight_bound():
    state = {"now": 0, "max": 0}

    async def slow(problem, code):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return {"verdict": "wrong_answer", "tests_run": 1}
    items = [(ADD, f"```python\nprint({i})\n```") for i in range(20)]
    b = ModalBackend(modal_cfg(max_in_flight=3), transport=slow)
    assert all(r.verdict is Verdict.WRONG_ANSWER for r in b.verify(items))
    assert state["max"] == 3


def test_token_bucket_paces_creation():
    clock = {"t": 0.0}

    async def fake_sleep(dt):
        clock["t"] += dt

    async def main():
        bucket = TokenBucket(rate=5.0, burst=1.0, clock=lambda: clock["t"], sleep=fake_sleep)
        for _ in range(10):
            await bucket.acquire()
    asyncio.run(main())
    assert clock["t"] == pytest.approx(9 / 5.0)  # first token free, then one every 0.2 s


def test_modal_app_definition_builds_offline():
    pytest.importorskip("modal")
    import nous_ray.verify.modal_app as m
    s = m.FUNCTION_SETTINGS
    assert (s["cpu"], s["memory"], s["block_network"], s["restrict_modal_access"]) == (1.0, 4096, True, True)
    assert s["single_use_containers"] is True and s["max_containers"] == 100
    assert s["scaledown_window"] == 60 and s["name"] == "judge"
    assert m.app.name == "nous-ray-verifier"
    assert (m.judge._spec_.cpu, m.judge._spec_.memory) == (1.0, 4096)
    out = m.judge.local(ADD.to_dict(), "a, b = map(int, input().split())\nprint(a + b)\n")
    assert out["verdict"] == "accepted" and out["reward"] == 1.0
    s2 = m.function_settings(VerifierConfig(modal_max_containers=7, modal_buffer_containers=2,
                                            modal_scaledown_window_s=5, modal_max_inputs_per_container=0))
    assert (s2["max_containers"], s2["buffer_containers"], s2["scaledown_window"]) == (7, 2, 5)
    assert s2["single_use_containers"] is False


# --- the command line, end to end

def test_cli_end_to_end(tmp_path):
    lines = [json.dumps({"problem": p.to_dict(), "completion": c}) for p, c in ITEMS]
    lines.insert(2, "{not json")
    lines.insert(4, json.dumps({"problem": {"id": "x"}, "completion": "```python\nprint(1)\n```"}))
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "nous_ray.verify", str(inp), "--workers", "2", "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # broken lines were reported
    assert f"{inp}:3: not JSON" in proc.stderr
    assert f"{inp}:5:" in proc.stderr and "'source'" in proc.stderr
    assert "accepted" in proc.stderr and "total" in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(lines)
    assert set(rows[0]) == {"id", "verdict", "reward", "tests_run", "cpu_s"}
    got = [r["verdict"] for r in rows]
    want = [v.value for v in EXPECTED]
    want.insert(2, "infra_error")
    want.insert(4, "infra_error")
    assert got == want
    assert rows[2]["reward"] is None and rows[0]["reward"] == 1.0
