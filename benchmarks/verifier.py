"""Verifier cost per test and throughput, against baselines measured in the same run.

Per-test overhead (one test of an empty program, median): the sandboxed judge vs a bare fork of a warm
interpreter (the least a fork-server can cost: this process, the goal's floor; and, stricter, an
interpreter holding exactly the fork-server's modules, whose fork is cheaper) and a fresh interpreter
(``python -c pass``); samples are interleaved so that load on the machine weighs on each alike.
Goal: <= 2x a bare fork.

Throughput (programs judged per second, same corpus, same number of worker processes): the judge
(``LocalBackend``) vs LiveCodeBench's grader, re-implemented here step for step from
``lcb_runner/evaluation`` (``compute_code_generation_metrics.check_correctness`` and
``testing_util.run_test``): a process pool over problems; per program a ``multiprocessing.Manager``
and a forked ``Process`` that applies the reliability guard, compiles the program (stdin programs
rewritten by ``ast`` into one function after the import prelude, call-based ones run after it), then
runs every test in that process under ``signal.alarm``, with ``unittest.mock`` patching stdin and
``open`` and a StringIO capturing stdout, stopping at the first failure. The corpus is split in
chunks judged alternately by each. Goal: >= 1.0x.

    .venv/bin/python benchmarks/verifier.py [--programs 200] [--tests 10] [--workers N]
"""

from __future__ import annotations

import argparse
import ast
import faulthandler
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from io import StringIO
from pathlib import Path
from types import ModuleType
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nous_ray.config import VerifierConfig  # noqa: E402
from nous_ray.data.problem import Problem, TestCase  # noqa: E402
from nous_ray.verify import child as child_module  # noqa: E402
from nous_ray.verify.backend import LocalBackend  # noqa: E402
from nous_ray.verify.child import LCB_PRELUDE  # noqa: E402
from nous_ray.verify.extract import extract_code  # noqa: E402
from nous_ray.verify.judge import JudgeSettings, limits_for  # noqa: E402
from nous_ray.verify.sandbox import SandboxWorker  # noqa: E402

# -- per-test overhead --------------------------------------------------------------------------

# An interpreter with the fork-server's modules (and its warm program state) that times one bare fork
# per line it reads.
_FORK_FLOOR = """
import gc, os, sys, time
sys.path.insert(0, sys.argv[1])
import child, forkserver  # noqa
warm = child.Warm()
gc.collect(); gc.freeze()
for _ in sys.stdin:
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print(time.perf_counter() - t, flush=True)
"""


def per_test_costs(n: int, isolation: str) -> dict[str, float]:
    """Median seconds of: a bare fork (of this process; of an interpreter like the fork-server), one
    sandboxed test of an empty program, a fresh interpreter."""
    p = Problem("noop", "bench", "noop", [TestCase("", "")], time_limit_s=2.0)
    limits = limits_for(p, JudgeSettings())
    w = SandboxWorker(isolation)
    w.start()
    like = subprocess.Popen([sys.executable, "-c", _FORK_FLOOR, os.path.dirname(child_module.__file__)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    samples: dict[str, list[float]] = {"fork": [], "fork_like": [], "sandbox": [], "spawn": []}
    try:
        assert w.load("pass\n") is None
        for i in range(n):
            t = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            samples["fork"].append(time.perf_counter() - t)
            like.stdin.write("\n")
            like.stdin.flush()
            samples["fork_like"].append(float(like.stdout.readline()))
            t = time.perf_counter()
            w.run(b"", limits)
            samples["sandbox"].append(time.perf_counter() - t)
            if i % 5 == 0:
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                samples["spawn"].append(time.perf_counter() - t)
    finally:
        w.close()
        like.stdin.close()
        like.wait()
    return {k: statistics.median(v) for k, v in samples.items()}


# -- LiveCodeBench's grader, re-implemented as its runner works ----------------------------------

class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def _guard() -> None:
    """The reliability guard: destructive functions become None (no memory limit by default)."""
    import builtins
    import shutil

    faulthandler.disable()
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
                 "chmod", "chown", "chroot", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def _as_one_function(code: str) -> str:
    """Drop a trailing ``if __name__ == '__main__':`` guard, keep imports on top, wrap the rest."""
    try:
        tree = ast.parse(code)
        last = tree.body[-1]
        if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
            code = ast.unparse(tree.body[:-1]) + "\n" + ast.unparse(last.body)
        tree = ast.parse(code)
        imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
        rest = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
        fn = ast.FunctionDef(name="wrapped_function", args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[],
                             kw_defaults=[], defaults=[]), body=rest, decorator_list=[], lineno=-1)
        return LCB_PRELUDE + "\n" + ast.unparse(imports) + "\n" + ast.unparse(fn)
    except Exception:
        return code


def _load(code: str, timeout: int):
    signal.alarm(timeout)
    try:
        mod = ModuleType("tmp_sol", "")
        exec(code, mod.__dict__)
        return mod.Solution() if "class Solution" in code else mod
    finally:
        signal.alarm(0)


class _Stdin:
    """stdin as the grader mocks it: read/readline/readlines and a ``buffer``, nothing else."""

    def __init__(self, text: str):
        self.text, self._io = text, StringIO(text)
        self.buffer = mock.Mock(read=lambda *a: text.encode(),
                                readline=lambda *a: text.encode().split(b"\n")[0] + b"\n")

    def read(self, *a):
        return self.text

    def readline(self, *a):
        return self._io.readline(*a)

    def readlines(self, *a):
        return self.text.split("\n")

    def __getattr__(self, name):
        return getattr(self._io, name)


def _lines_match(got: str, want: str) -> bool:
    g = [x.strip() for x in got.strip().split("\n")]
    w = [x.strip() for x in want.strip().split("\n")]
    if len(g) != len(w):
        return False
    for a, b in zip(g, w):
        if a == b:
            continue
        try:
            if [Decimal(t) for t in a.split()] != [Decimal(t) for t in b.split()]:
                return False
        except Exception:
            return False
    return True


def _run_tests(sample: dict, code: str, timeout: int) -> list:
    signal.signal(signal.SIGALRM, _alarm)
    _guard()
    results = []
    try:
        if sample["fn_name"]:
            method = getattr(_load(LCB_PRELUDE + "\n\n" + code, timeout), sample["fn_name"])
            for inp, out in zip(sample["inputs"], sample["outputs"]):
                args, want = [json.loads(x) for x in inp.split("\n")], json.loads(out)
                signal.alarm(timeout)
                faulthandler.enable()
                try:
                    got = method(*args)
                    got = list(got) if isinstance(got, tuple) else got
                    results.append(got == want)
                except Exception as e:
                    results.append(-3 if isinstance(e, _Timeout) else -4)
                finally:
                    signal.alarm(0)
                    faulthandler.disable()
                if results[-1] is not True:
                    break
        else:
            method = _load(_as_one_function(code), timeout).wrapped_function
            for inp, out in zip(sample["inputs"], sample["outputs"]):
                lines = iter(inp.split("\n"))
                captured, real = StringIO(), sys.stdout
                signal.alarm(timeout)
                faulthandler.enable()
                sys.stdout = captured
                try:
                    with mock.patch("builtins.open", mock.mock_open(read_data=inp)), \
                            mock.patch("sys.stdin", _Stdin(inp)), \
                            mock.patch("sys.stdin.readline", lambda *a: next(lines)), \
                            mock.patch("sys.stdin.readlines", lambda *a: inp.split("\n")), \
                            mock.patch("sys.stdin.read", lambda *a: inp):
                        try:
                            method()
                        except SystemExit:
                            pass
                    ok = True
                except Exception as e:
                    ok = -3 if isinstance(e, _Timeout) else -4
                finally:
                    sys.stdout = real
                    signal.alarm(0)
                    faulthandler.disable()
                results.append(_lines_match(captured.getvalue(), out) or -2 if ok is True else ok)
                if results[-1] is not True:
                    break
    except Exception:
        results.append(-4)
    return results


def _lcb_child(sample, code, timeout, result):
    result.append(_run_tests(sample, code, timeout))


def lcb_check_correctness(sample: dict, code: str, timeout: int) -> list:
    """One program: a Manager, a forked Process running every test, a global timeout."""
    manager = multiprocessing.Manager()
    result = manager.list()
    p = multiprocessing.Process(target=_lcb_child, args=(sample, code, timeout, result))
    p.start()
    p.join(timeout=(timeout + 1) * len(sample["inputs"]) + 5)
    if p.is_alive():
        p.kill()
    out = list(result[0]) if result else [-1] * len(sample["inputs"])
    return out


def lcb_by_problem(args) -> list:
    sample, codes, timeout = args
    return [lcb_check_correctness(sample, c, timeout) for c in codes]


def lcb_grade(items: list[tuple[Problem, str]], pool: ProcessPoolExecutor, timeout: int = 6) -> list[bool]:
    jobs = []
    for problem, completion in items:
        sample = {"fn_name": problem.fn_name, "inputs": [t.input for t in problem.tests],
                  "outputs": [t.output for t in problem.tests]}
        code = extract_code(completion)
        jobs.append((sample, [code] if code is not None else [], timeout))
    results = list(pool.map(lcb_by_problem, jobs))
    return [bool(r) and all(x is True for x in r[0]) for r in results]


# -- corpus ---------------------------------------------------------------------------------------

KINDS = {
    # name: (input maker, stdin answer, correct program, wrong program)
    "sum": (lambda r: [r.randint(-10**9, 10**9) for _ in range(r.randint(1, 2000))],
            lambda xs: f"{sum(xs)}\n",
            "n = int(input())\nprint(sum(map(int, input().split())))",
            "n = int(input())\nprint(sum(map(int, input().split())) + (n > 1000))"),
    "sort": (lambda r: [r.randint(0, 10**6) for _ in range(r.randint(1, 2000))],
             lambda xs: " ".join(map(str, sorted(xs))) + "\n",
             "import sys\ndata = sys.stdin.buffer.read().split()\nprint(' '.join(map(str, sorted(map(int, data[1:])))))",
             "import sys\ndata = sys.stdin.buffer.read().split()\nprint(' '.join(map(str, sorted(map(int, data[1:]), reverse=True))))"),
    "max": (lambda r: [r.randint(-10**6, 10**6) for _ in range(r.randint(1, 2000))],
            lambda xs: f"{max(xs)}\n",
            "input()\nprint(max(map(int, input().split())))",
            "input()\nprint(min(map(int, input().split())))"),
}
CALL_RIGHT = "class Solution:\n    def maxPair(self, nums):\n        s = sorted(nums)\n        return [s[-2], s[-1]]\n"
CALL_WRONG = "class Solution:\n    def maxPair(self, nums):\n        return nums[:2]\n"
BROKEN = ["print(1/0)", "def f(:\n  pass", None, "import sys\nsys.exit(3)"]


def corpus(n_programs: int, n_tests: int, seed: int = 0) -> list[tuple[Problem, str]]:
    r = random.Random(seed)
    items = []
    for i in range(n_programs):
        kind = r.choice(list(KINDS) + ["call"])
        if kind == "call":
            tests = []
            for _ in range(n_tests):
                xs = [r.randint(-10**6, 10**6) for _ in range(r.randint(2, 2000))]
                tests.append(TestCase(f"{xs}", f"{sorted(xs)[-2:]}", "functional"))
            p = Problem(f"call-{i}", "bench", "max pair", tests, fn_name="maxPair", time_limit_s=2.0)
            right, wrong = CALL_RIGHT, CALL_WRONG
        else:
            make, answer, right, wrong = KINDS[kind]
            tests = []
            for _ in range(n_tests):
                xs = make(r)
                tests.append(TestCase(f"{len(xs)}\n{' '.join(map(str, xs))}\n", answer(xs)))
            p = Problem(f"{kind}-{i}", "bench", kind, tests, time_limit_s=2.0)
        u = r.random()
        code = right if u < 0.6 else wrong if u < 0.85 else r.choice(BROKEN)
        # A comment makes every program distinct (no dedupe inside the benchmark).
        text = "no code" if code is None else f"```python\n# program {i}\n{code}\n```"
        items.append((p, text))
    return items


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--tests", type=int, default=10)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--samples", type=int, default=300, help="per-test overhead samples")
    ap.add_argument("--chunks", type=int, default=4, help="corpus chunks judged alternately by each grader")
    ap.add_argument("--isolation", default=VerifierConfig().isolation)
    args = ap.parse_args()
    workers = args.workers or os.cpu_count() or 1

    cost = per_test_costs(args.samples, args.isolation)

    items = corpus(args.programs, args.tests)
    cfg = VerifierConfig(workers=workers, isolation=args.isolation)
    backend = LocalBackend(cfg)
    backend.verify(items[:workers])  # start the fork-servers outside the timed region
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    lcb_grade(items[:workers], pool)  # and the pool's processes
    ours_s = lcb_s = 0.0
    results, lcb_pass = [], []
    step = -(-len(items) // args.chunks)
    for k, start in enumerate(range(0, len(items), step)):
        chunk = items[start:start + step]
        for who in (("ours", "lcb") if k % 2 == 0 else ("lcb", "ours")):
            t = time.perf_counter()
            if who == "ours":
                results += backend.verify(chunk)
                ours_s += time.perf_counter() - t
            else:
                lcb_pass += lcb_grade(chunk, pool)
                lcb_s += time.perf_counter() - t
    backend.close()
    pool.shutdown()

    tests_run = sum(r.tests_run for r in results)
    verdicts = Counter(r.verdict.value for r in results)
    disagree = sum((r.verdict.value == "accepted") != ok for r, ok in zip(results, lcb_pass))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, {workers} workers, "
          f"python {sys.version.split()[0]}, isolation {args.isolation}")
    print(f"corpus: {len(items)} programs x {args.tests} tests; our verdicts {dict(sorted(verdicts.items()))}; "
          f"pass/fail differs from LiveCodeBench's grader on {disagree}")
    print()
    fork, like = cost["fork"], cost["fork_like"]
    print(f"{'per-test cost (median)':<52}{'ms':>9}{'x fork':>9}{'x fork*':>9}")
    rows = [("floor: fork this warm interpreter, run nothing", fork),
            ("floor*: fork an interpreter like the fork-server", like),
            ("floor: spawn a fresh interpreter", cost["spawn"]),
            ("sandbox: one test of an empty program", cost["sandbox"])]
    for name, v in rows:
        print(f"{name:<52}{v * 1e3:>9.3f}{v / fork:>9.2f}{v / like:>9.2f}")
    print()
    print(f"{'throughput':<52}{'prog/s':>9}{'tests/s':>9}")
    print(f"{'ours (' + str(tests_run) + ' tests run)':<52}{len(items) / ours_s:>9.1f}{tests_run / ours_s:>9.1f}")
    print(f"{'LiveCodeBench grader, re-implemented':<52}{len(items) / lcb_s:>9.1f}")
    print()
    ratio = lcb_s / ours_s
    print(f"goal per-test overhead <= 2x a bare fork (of this warm interpreter): "
          f"{'met' if cost['sandbox'] <= 2 * fork else 'NOT met'} ({cost['sandbox'] / fork:.2f}x); against an "
          f"interpreter holding only the fork-server's modules: {cost['sandbox'] / like:.2f}x")
    print(f"goal throughput >= 1.0x LiveCodeBench's grader: {'met' if ratio >= 1.0 else 'NOT met'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
