"""Judge one program against one problem's tests on one fork-server.

Longest inputs first, stop at the first failure. Time is the child's CPU time (never the judge's
queueing); a run that stopped on its own a little past the limit is re-run once before it is called
time_limit. Expected outputs stay in this process: only inputs travel to the sandbox.

Whatever a program prints or returns, the judge's cost stays bounded by the expected output: an answer
far longer than it is wrong without being read (:func:`compare.read_cap`), and a returned value the
judge cannot parse (too deep, an integer too long) is wrong, never an infrastructure error.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass

from nous_ray.config import VerifierConfig
from nous_ray.data.problem import Problem, TestCase
from nous_ray.verify import child
from nous_ray.verify.compare import parse_expected_value, read_cap, stdout_matches, values_match
from nous_ray.verify.extract import extract_code
from nous_ray.verify.result import Verdict, VerifyResult
from nous_ray.verify.sandbox import (
    InfraError,
    RawRun,
    RunLimits,
    SandboxWorker,
    WorkerDied,
)

_DEFAULTS = VerifierConfig()


@dataclass(frozen=True)
class JudgeSettings:
    """The judge's knobs: a frozen subset of VerifierConfig, whose defaults they take (one place)."""

    rerun_margin: float = _DEFAULTS.rerun_margin
    wall_factor: float = _DEFAULTS.wall_factor
    wall_extra_s: float = _DEFAULTS.wall_extra_s
    max_output_mb: float = _DEFAULTS.max_output_mb
    max_processes: int = _DEFAULTS.max_processes

    @classmethod
    def from_config(cls, cfg) -> "JudgeSettings":
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__ if hasattr(cfg, k)})


def limits_for(problem: Problem, s: JudgeSettings) -> RunLimits:
    t = float(problem.time_limit_s)
    margin = min(max(s.rerun_margin, 0.05), 1.0)
    # The CPU rlimit sits above limit/margin so that a run finishing inside the re-run band is seen
    # to finish by itself; the wall backstop is generous and only catches programs that block.
    cpu = max(1, math.ceil(t / margin))
    wall = max(s.wall_factor * t + s.wall_extra_s, cpu + 1.0)
    return RunLimits(cpu_limit_s=cpu, wall_limit_s=wall, memory_bytes=int(problem.memory_limit_mb) * 2**20,
                     output_bytes=int(s.max_output_mb * 2**20), nproc=s.max_processes)


def _decode_result(raw: bytes) -> tuple[str, object]:
    """('value', v) | ('unserializable'|'unparseable', None) | ('missing'|'tampered', None)."""
    m = child.RESULT_MAGIC
    if not raw:
        return "missing", None
    head = len(m) + 1 + 16
    if len(raw) < head or not raw.startswith(m):
        return "tampered", None
    kind = raw[len(m):len(m) + 1]
    try:
        n = int(raw[len(m) + 1:head], 16)
    except ValueError:
        return "tampered", None
    if len(raw) != head + n or kind not in (b"V", b"U"):  # (b"M" only comes with a failure status)
        return "tampered", None
    if kind == b"U":
        return "unserializable", None
    try:
        text = raw[head:].decode("utf-8")
    except UnicodeDecodeError:
        return "tampered", None  # the child writes JSON's ASCII: these bytes are not its frame
    try:
        return "value", parse_expected_value(text)
    except (ValueError, MemoryError):
        return "unparseable", None


_UNSET = object()


def classify(raw: RawRun, test: TestCase, problem: Problem, s: JudgeSettings,
             expected=_UNSET) -> tuple[Verdict, str, bool]:
    """(verdict of one run, detail, whether a re-run may change it). ``expected``: the parsed value
    of a call-based test, when the caller has it already."""
    t = float(problem.time_limit_s)
    margin = min(max(s.rerun_margin, 0.05), 1.0)
    if raw.wall_killed:
        # Blocked or sleeping past the backstop: rejected. Near-limit CPU suggests load: re-run once.
        return Verdict.TIME_LIMIT, f"wall backstop after {raw.wall_s:.2f}s (cpu {raw.cpu_s:.2f}s)", \
            raw.cpu_s >= margin * t
    if raw.signal == signal.SIGXCPU or raw.cpu_s > t:
        near = raw.signal == 0 and raw.cpu_s <= t / margin
        return Verdict.TIME_LIMIT, f"cpu {raw.cpu_s:.2f}s > {t:g}s", near
    if raw.status != 0 and raw.result == child.MEMORY_FRAME:
        return Verdict.MEMORY_LIMIT, "MemoryError", False
    if raw.stdout_overflow:
        return Verdict.WRONG_ANSWER, "output larger than the cap", False
    cap = read_cap(test.output)
    if raw.signal or raw.status != 0:
        why = f"signal {raw.signal}" if raw.signal else f"exit status {raw.status}"
        tail = raw.stderr_tail.strip().splitlines()[-1:] or [""]
        if "MemoryError" in tail[0]:
            return Verdict.MEMORY_LIMIT, tail[0][-300:], False
        return Verdict.RUNTIME_ERROR, f"{why}: {tail[0][-300:]}", False
    if test.kind == "functional":
        if raw.result_size > cap:
            return Verdict.WRONG_ANSWER, f"returned value of {raw.result_size} bytes, far beyond the expected", False
        state, value = _decode_result(raw.result)
        if state in ("missing", "tampered"):
            return Verdict.RUNTIME_ERROR, f"no result ({state} result channel)", False
        if state == "unserializable":
            return Verdict.WRONG_ANSWER, "returned value is not JSON", False
        if state == "unparseable":
            return Verdict.WRONG_ANSWER, "returned value the judge cannot parse (too deep or too long)", False
        if expected is _UNSET:
            expected = parse_expected_value(test.output)
        return (Verdict.ACCEPTED, "", False) if values_match(value, expected) else \
            (Verdict.WRONG_ANSWER, "returned value differs", False)
    if raw.stdout_size > cap:
        return Verdict.WRONG_ANSWER, f"output of {raw.stdout_size} bytes, far beyond the expected", False
    got = raw.stdout.decode("utf-8", "replace")
    if stdout_matches(got, test.output):
        return Verdict.ACCEPTED, "", False
    return Verdict.WRONG_ANSWER, "output differs", False


def judge_program(worker: SandboxWorker, problem: Problem, code: str | None,
                  s: JudgeSettings = JudgeSettings()) -> VerifyResult:
    """Run ``code`` (an extracted program, None = no code) on every test until one fails."""
    if code is None:
        return VerifyResult(problem.id, Verdict.NO_CODE)
    # Expected values of call-based tests are parsed up front, once. Problem.validate rejects a
    # malformed one when the dataset loads; a Problem built without it gets here: the dataset's
    # fault, not the program's.
    expected: dict[int, object] = {}
    try:
        for i, tc in enumerate(problem.tests):
            if tc.kind == "functional":
                expected[i] = parse_expected_value(tc.output)
    except ValueError as e:
        return VerifyResult(problem.id, Verdict.INFRA_ERROR, detail=f"dataset error: malformed expected output: {e}")
    limits = limits_for(problem, s)
    call_fn = problem.fn_name if problem.call_based else None
    deaths = 0
    try:
        err = _load(worker, code)
    except WorkerDied:
        return VerifyResult(problem.id, Verdict.RUNTIME_ERROR, detail="the compiler crashed the sandbox")
    if err is not None:
        return VerifyResult(problem.id, Verdict.COMPILE_ERROR, detail=err)
    order = sorted(range(len(problem.tests)), key=lambda i: -len(problem.tests[i].input))
    cpu_total, run = 0.0, 0
    for i in order:
        tc = problem.tests[i]
        reruns = 0
        while True:
            try:
                raw = worker.run(tc.input.encode("utf-8", "surrogatepass"), limits, call_fn,
                                 read_cap=read_cap(tc.output))
            except WorkerDied as e:
                # The fork-server died under this program: restart and try once more; dying again
                # is the program's doing (it killed its sandbox), not an infrastructure fault.
                deaths += 1
                if deaths >= 2:
                    return VerifyResult(problem.id, Verdict.RUNTIME_ERROR, run + 1, cpu_total,
                                        f"sandbox died twice: {e}")
                worker.start()
                if _load(worker, code) is not None:
                    return VerifyResult(problem.id, Verdict.INFRA_ERROR, run, cpu_total, "reload failed")
                continue
            cpu_total += raw.cpu_s
            verdict, detail, may_rerun = classify(raw, tc, problem, s, expected.get(i, _UNSET))
            if verdict is Verdict.TIME_LIMIT and may_rerun and reruns == 0:
                reruns += 1
                continue
            break
        run += 1
        if verdict is not Verdict.ACCEPTED:
            return VerifyResult(problem.id, verdict, run, cpu_total, f"test {i}: {detail}")
    return VerifyResult(problem.id, Verdict.ACCEPTED, run, cpu_total)


def _load(worker: SandboxWorker, code: str) -> str | None:
    if not worker.alive:
        worker.start()
    return worker.load(code)


def judge_completion(worker: SandboxWorker, problem: Problem, completion: str,
                     s: JudgeSettings = JudgeSettings()) -> VerifyResult:
    """Extract the program from a model's answer and judge it; sandbox start failures -> infra_error."""
    try:
        return judge_program(worker, problem, extract_code(completion), s)
    except InfraError as e:
        return VerifyResult(problem.id, Verdict.INFRA_ERROR, detail=str(e))


def judge_once(problem: Problem, completion: str, s: JudgeSettings = JudgeSettings(),
               isolation: str = _DEFAULTS.isolation) -> VerifyResult:
    """One-shot judging with a fork-server of its own."""
    worker = SandboxWorker(isolation)
    try:
        return judge_completion(worker, problem, completion, s)
    finally:
        worker.close()
