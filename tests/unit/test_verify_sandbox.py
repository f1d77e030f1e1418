"""Real programs through the real sandbox: what must be accepted and what must be rejected."""

import json
import os
import textwrap

import pytest
from sandbox_helpers import call_problem, descendants, stdin_problem

from nous_ray.verify.judge import JudgeSettings, judge_program
from nous_ray.verify.result import Verdict
from nous_ray.verify.sandbox import SandboxWorker

SETTINGS = JudgeSettings(max_output_mb=1.0, max_processes=32)
SECRET = "SECRET-7f3a9c-ANSWER"


@pytest.fixture(scope="module")
def worker():
    w = SandboxWorker()
    w.start()
    yield w
    w.close()


ADD = stdin_problem([("1 2\n", "3\n"), ("10 20\n", "30\n"), ("100000 1\n", "100001\n")])
SECRET_PROBLEM = stdin_problem([("x\n", SECRET + "\n")])
TWO_SUM = call_problem("twoSum", [("[2, 7, 11, 15]\n9", "[0, 1]"), ("[3, 2, 4]\n6", "[1, 2]")])


def verdict(worker, problem, code, settings=SETTINGS):
    return judge_program(worker, problem, textwrap.dedent(code), settings)


# ---------------------------------------------------------------------------------------------
# Must ACCEPT


@pytest.mark.parametrize("code", [
    "a, b = map(int, input().split())\nprint(a + b)",
    "import sys\na, b = map(int, sys.stdin.buffer.readline().split())\nprint(a + b)",
    "import sys\nfor line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a + b)",
    "a, b = map(int, open(0).read().split())\nprint(a + b)",
    "import os\na, b = map(int, os.read(0, 100).split())\nos.write(1, str(a + b).encode())",
    "a, b = map(int, input().split())\nprint(a + b, end='')",
    "a, b = map(int, input().split())\nprint(str(a + b) + '   \\n\\n\\n')",
    "def main():\n    a, b = map(int, input().split())\n    print(a + b)\nif __name__ == '__main__':\n    main()",
    # LiveCodeBench runs programs after its imports (here: gcd and sys without importing them).
    "a, b = map(int, sys.stdin.read().split())\nprint(a + b if gcd(a, a) == a else 0)",
    "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(0)",
])
def test_accepts_real_io(worker, code):
    r = verdict(worker, ADD, code)
    assert r.verdict is Verdict.ACCEPTED, r
    assert r.tests_run == 3


def test_accepts_deep_recursion_in_big_stack_thread(worker):
    code = """
    import sys, threading
    sys.setrecursionlimit(1 << 20)
    threading.stack_size(1 << 27)
    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)
    def main():
        a, b = map(int, input().split())
        print(depth(200000) - 200000 + a + b)
    threading.Thread(target=main).start()
    """
    r = verdict(worker, ADD, code)
    assert r.verdict is Verdict.ACCEPTED, r


def test_accepts_call_based_class_and_function(worker):
    cls = """
    class Solution:
        def twoSum(self, nums: List[int], target: int) -> List[int]:
            seen = {}
            for i, x in enumerate(nums):
                if target - x in seen:
                    return (seen[target - x], i)   # a tuple compares as a list
                seen[x] = i
    """
    fn = "def twoSum(nums, target):\n    return [[i, j] for i in range(len(nums)) for j in range(i + 1, len(nums)) if nums[i] + nums[j] == target][0]"
    for code in (cls, fn):
        r = verdict(worker, TWO_SUM, code)
        assert r.verdict is Verdict.ACCEPTED, r


def test_call_based_prints_do_not_matter(worker):
    code = "def twoSum(nums, target):\n    print('debug', nums)\n    return [0, 1] if target == 9 else [1, 2]"
    assert verdict(worker, TWO_SUM, code).verdict is Verdict.ACCEPTED


def test_numpy_importable_under_default_memory_limit(worker):
    pytest.importorskip("numpy")
    p = stdin_problem([("3\n", "6\n")], memory_limit_mb=4096)
    code = "import numpy as np\nn = int(input())\nprint(int(np.arange(n + 1).sum()))"
    r = verdict(worker, p, code)
    assert r.verdict is Verdict.ACCEPTED, r


# ---------------------------------------------------------------------------------------------
# Must REJECT


def test_rejects_wrong_answer_and_stops_at_first_failure(worker):
    r = verdict(worker, ADD, "a, b = map(int, input().split())\nprint(a + b if a < 50 else 0)")
    assert r.verdict is Verdict.WRONG_ANSWER
    assert r.tests_run == 1  # longest input ("100000 1") runs first and fails


def test_rejects_always_equal_object(worker):
    code = """
    class Anything:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
    class Solution:
        def twoSum(self, nums, target): return Anything()
    """
    assert verdict(worker, TWO_SUM, code).verdict is Verdict.WRONG_ANSWER
    code_list = "class E(list):\n    def __eq__(self, o): return True\ndef twoSum(nums, target): return E([9, 9])"
    assert verdict(worker, TWO_SUM, code_list).verdict is Verdict.WRONG_ANSWER


def test_rejects_frame_and_heap_walking(worker):
    code = """
    import gc, sys
    found = set()
    f = sys._getframe()
    while f is not None:
        for v in list(f.f_locals.values()) + list(f.f_globals.values()):
            if isinstance(v, str) and "SECRET" in v:
                found.add(v)
        f = f.f_back
    for o in gc.get_objects():
        try:
            for v in (vars(o).values() if hasattr(o, "__dict__") else (o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ())):
                if isinstance(v, str) and "SECRET" in v:
                    found.add(v)
        except Exception:
            pass
    print("\\n".join(sorted(found)) or "nothing")
    """
    r = verdict(worker, SECRET_PROBLEM, code)
    assert r.verdict is Verdict.WRONG_ANSWER, r


def test_rejects_reading_judge_memory(worker):
    code = f"""
    import re
    found = b""
    for pid in ({os.getpid()}, {worker.pid}):
        try:
            maps = open(f"/proc/{{pid}}/maps").read().splitlines()
            with open(f"/proc/{{pid}}/mem", "rb") as mem:
                for line in maps:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    try:
                        mem.seek(lo)
                        chunk = mem.read(hi - lo)
                    except OSError:
                        continue
                    m = re.search(rb"SECRET-[0-9a-f]+-ANSWER", chunk)
                    if m:
                        found = m.group(0)
        except OSError:
            pass
    print(found.decode() or "nothing")
    """
    r = verdict(worker, SECRET_PROBLEM, code)
    assert r.verdict is Verdict.WRONG_ANSWER, r


@pytest.mark.parametrize("code", [
    "exit(0)\nprint(3)",
    "import sys\nsys.exit()\nprint(3)",
    "import os\nos._exit(0)",
    "quit()",
])
def test_rejects_exit_before_answer_stdin(worker, code):
    assert verdict(worker, ADD, code).verdict is not Verdict.ACCEPTED


@pytest.mark.parametrize("code", [
    "import sys\ndef twoSum(nums, target):\n    sys.exit(0)",
    "import os\ndef twoSum(nums, target):\n    os._exit(0)",
    "exit(0)\ndef twoSum(nums, target):\n    return [0, 1]",
])
def test_rejects_exit_before_answer_call(worker, code):
    assert verdict(worker, TWO_SUM, code).verdict is Verdict.RUNTIME_ERROR


def test_rejects_listing_working_dir_and_tmp(worker):
    code = """
    import os
    hits = []
    for root in (".", "..", "/tmp", os.environ.get("TMPDIR", "/tmp")):
        for dirpath, dirs, files in os.walk(root):
            # Shallow: a shared /tmp (Ray sessions, other jobs) is too big to read in the time limit.
            if dirpath.count(os.sep) - root.count(os.sep) >= 2:
                dirs[:] = []
            for name in files[:200]:
                path = os.path.join(dirpath, name)
                if not os.path.isfile(path):  # a terminal (/dev/ptmx) would block the read
                    continue
                try:
                    data = open(path, errors="ignore").read(1 << 16)
                except OSError:
                    continue
                if "SECRET-" in data:
                    hits.append(data[data.index("SECRET-"):].split()[0])
    print(hits[0] if hits else "nothing")
    """
    r = verdict(worker, SECRET_PROBLEM, code)
    assert r.verdict is Verdict.WRONG_ANSWER, r
    assert "cwd" not in r.detail


def test_rejects_reading_test_file_on_disk(worker, tmp_path):
    path = tmp_path / "tests.jsonl"
    path.write_text(json.dumps(SECRET_PROBLEM.to_dict()))
    path.chmod(0o644)  # readable by anyone on the host: it is the sandbox's view that hides it
    code = f"""
    import json
    try:
        rec = json.load(open({str(path)!r}))
        print(rec["tests"][0]["output"])
    except OSError as e:
        print("denied")
    """
    r = verdict(worker, SECRET_PROBLEM, code)
    assert r.verdict is Verdict.WRONG_ANSWER, r


def test_empty_fresh_working_directory(worker):
    code = "import os\nopen('junk.txt', 'w').write('x')\nprint(len(os.listdir('.')))"
    p = stdin_problem([("", "1")])
    assert verdict(worker, p, code).verdict is Verdict.ACCEPTED  # sees only its own file
    assert verdict(worker, p, code).verdict is Verdict.ACCEPTED  # a fresh directory again


def test_rejects_infinite_loop(worker):
    r = verdict(worker, ADD, "while True:\n    pass")
    assert r.verdict is Verdict.TIME_LIMIT
    assert r.cpu_s > 0  # (under load the wall backstop may stop it before a second of CPU)


def test_rejects_sleeping_past_limit(worker):
    r = verdict(worker, ADD, "import time\ntime.sleep(30)\nprint(3)")
    assert r.verdict is Verdict.TIME_LIMIT
    assert "wall" in r.detail


@pytest.mark.parametrize("code", [
    "x = bytearray(1 << 30)\nprint(3)",
    "x = [0] * (1 << 28)\nprint(3)",
])
def test_rejects_memory_past_limit(worker, code):
    r = verdict(worker, ADD, code)  # 512 MB limit
    assert r.verdict is Verdict.MEMORY_LIMIT, r


def test_rejects_fork_bomb_and_leaves_nothing(worker):
    code = "import os\nwhile True:\n    os.fork()"
    r = verdict(worker, ADD, code)
    assert r.verdict is Verdict.RUNTIME_ERROR and "PermissionError" in r.detail, r
    assert len(descendants(worker.pid)) == 1  # the fork-server alone


def test_cannot_start_a_daemon(worker):
    code = """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(60)
        os._exit(0)
    a, b = map(int, input().split())
    print(a + b)
    """
    r = verdict(worker, ADD, code)
    assert r.verdict is Verdict.RUNTIME_ERROR and "PermissionError" in r.detail, r
    assert len(descendants(worker.pid)) == 1


def test_rejects_printing_gigabytes(worker):
    r = verdict(worker, ADD, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert r.verdict is Verdict.WRONG_ANSWER and "cap" in r.detail, r
    r = verdict(worker, ADD, "a, b = map(int, input().split())\nprint(a + b)\nprint(' ' * (4 << 20))")
    assert r.verdict is Verdict.WRONG_ANSWER, r  # right answer plus 4 MB of blanks, over the 1 MB cap


@pytest.mark.parametrize("code", [
    "import os\ndef twoSum(nums, target):\n    os.closerange(3, 4096)\n    return [0, 1] if target == 9 else [1, 2]",
    "import os\ndef twoSum(nums, target):\n    for fd in range(3, 64):\n        try: os.write(fd, b'[0, 1]')\n        except OSError: pass\n    return [0, 1] if target == 9 else [1, 2]",
    "import os\nfor fd in range(3, 64):\n    try: os.close(fd)\n    except OSError: pass\ndef twoSum(nums, target):\n    return [0, 1] if target == 9 else [1, 2]",
])
def test_rejects_touching_descriptors_it_does_not_own(worker, code):
    assert verdict(worker, TWO_SUM, code).verdict is Verdict.RUNTIME_ERROR


def test_rejects_nul_bytes_and_syntax_errors(worker):
    assert verdict(worker, ADD, "print(3)\x00").verdict is Verdict.COMPILE_ERROR
    assert verdict(worker, ADD, "def f(:\n  pass").verdict is Verdict.COMPILE_ERROR


def test_runtime_error_and_missing_function(worker):
    assert verdict(worker, ADD, "1 / 0").verdict is Verdict.RUNTIME_ERROR
    assert verdict(worker, TWO_SUM, "def other(): pass").verdict is Verdict.RUNTIME_ERROR


def test_cannot_kill_its_sandbox(worker):
    code = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint(3)"
    r = verdict(worker, ADD, code)
    assert r.verdict is not Verdict.ACCEPTED
    assert r.verdict is not Verdict.INFRA_ERROR  # killing the sandbox never escapes the -1


def test_no_expected_output_in_environment_or_argv(worker):
    code = "import os, sys\nprint(any('SECRET' in v for v in list(os.environ.values()) + sys.argv))"
    assert verdict(worker, stdin_problem([("", "False")]), code).verdict is Verdict.ACCEPTED


def test_exit_status_is_never_a_memory_verdict(worker):
    # Memory verdicts come from the private channel, not from an exit status a program can choose.
    assert verdict(worker, ADD, "import sys\nsys.exit(3)").verdict is Verdict.RUNTIME_ERROR
    assert verdict(worker, ADD, "import os\nos._exit(3)").verdict is Verdict.RUNTIME_ERROR
