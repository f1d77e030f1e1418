"""Programs that attack the local judge as a reward-hacking policy would: one group per class of
issue 9, each through the real sandbox (bubblewrap) and the real judge.

This module runs as the user pytest runs as (root here); test_verify_isolation.py runs it again as an
ordinary user (NOUS_ATTACKS_AS=user), so both ways the judge can run are attacked the same way.
"""

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import tracemalloc

import pytest
import sandbox_helpers as helpers
from sandbox_helpers import descendants

import nous_ray.verify.child
from nous_ray.data.problem import Problem, ProblemFormatError
from nous_ray.verify.judge import JudgeSettings, judge_program
from nous_ray.verify.result import Verdict
from nous_ray.verify.sandbox import SandboxWorker

SETTINGS = JudgeSettings(max_output_mb=64.0, max_processes=32)
SECRET = "SECRET-51c0e2-ANSWER"
HERE = os.path.dirname(os.path.abspath(__file__))
AS_USER = os.environ.get("NOUS_ATTACKS_AS") == "user"


@pytest.fixture(scope="module")
def worker():
    w = SandboxWorker("bwrap")
    w.start()
    yield w
    w.close()


def stdin_problem(tests, time_limit_s=2.0, **kw):
    return helpers.stdin_problem(tests, time_limit_s=time_limit_s, **kw)


def call_problem(fn_name, tests, time_limit_s=2.0, **kw):
    return helpers.call_problem(fn_name, tests, time_limit_s=time_limit_s, **kw)


def judge(worker, problem, code, settings=SETTINGS):
    r = judge_program(worker, problem, textwrap.dedent(code), settings)
    assert r.verdict is not Verdict.INFRA_ERROR, r  # no attack may escape the -1
    return r


def test_this_run_is_the_one_it_says(worker):
    """Root: the fork-server is root without capabilities and every test runs as uid 1 of the
    sandbox (host uid 65534); an ordinary user: the sandbox's one uid is that user's."""
    assert (os.geteuid() != 0) == AS_USER
    assert worker.info["isolated"] is True and worker.info["pong"] == 1
    assert worker.info["test_uid"] == (None if AS_USER else 1)
    expected = "0" if AS_USER else "1"
    r = judge(worker, stdin_problem([("", expected)]), "import os\nprint(os.getuid())")
    assert r.verdict is Verdict.ACCEPTED, r
    # No capability in any set, no way to gain one, the seccomp filter on.
    status = "\n".join(["CapInh: 0", "CapPrm: 0", "CapEff: 0", "CapAmb: 0", "NoNewPrivs: 1", "Seccomp: 2"])
    code = """
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    for k in ("CapInh", "CapPrm", "CapEff", "CapAmb", "NoNewPrivs", "Seccomp"):
        print(f"{k}: {int(fields[k].strip(), 16) if k.startswith('Cap') else fields[k].strip()}")
    """
    r = judge(worker, stdin_problem([("", status)]), code)
    assert r.verdict is Verdict.ACCEPTED, r


# ---------------------------------------------------------------------------------------------
# 1. Reading what it must not; writing where the judge (or the next judge) will look.

HUNT_PROC = """
import os, re
found = []
pids = [p for p in os.listdir("/proc") if p.isdigit()]
paths = set()
for p in pids:
    for what in ("cmdline", "environ"):
        try:
            data = open(f"/proc/{p}/{what}", "rb").read().decode(errors="ignore")
        except OSError:
            continue
        paths.update(re.findall(r"/[^\\x00\\s'\\"]+", data))
    for link in ("cwd", "root", "exe"):
        try:
            paths.add(os.readlink(f"/proc/{p}/{link}"))
        except OSError:
            pass
for path in sorted(paths):
    try:
        text = open(path, errors="ignore").read(1 << 20)
    except OSError:
        continue
    if "SECRET-" in text:
        found.append(text[text.index("SECRET-"):].split()[0].strip('"'))
    if path == OUT:
        try:
            open(path, "a").write('{"id": "attack", "verdict": "accepted", "reward": 1.0}\\n')
            found.append("wrote-verdicts")
        except OSError:
            pass
print(found[0] if found else "nothing")
"""


def test_tests_named_on_the_judges_command_line_stay_out_of_reach(tmp_path):
    """The reported attack: walk /proc to the judge, read the test file named on its command line,
    print the expected output; also append a forged verdict to the judge's output file."""
    problem = stdin_problem([("x\n", SECRET + "\n")])
    inp, out = tmp_path / "tests.jsonl", tmp_path / "verdicts.jsonl"
    program = f"OUT = {str(out)!r}\n" + HUNT_PROC
    inp.write_text(json.dumps({"problem": problem.to_dict(), "completion": f"```python\n{program}\n```"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "nous_ray.verify", str(inp), "--workers", "1", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["wrong_answer"], rows


def test_sees_only_its_own_process_and_the_fork_server(worker):
    code = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()))"
    r = judge(worker, stdin_problem([("", "[1]")]), code)
    assert r.verdict is Verdict.ACCEPTED, r


def test_cannot_read_files_outside_the_view(worker, tmp_path):
    secret = tmp_path / "tests.jsonl"
    secret.write_text(SECRET)
    secret.chmod(0o644)  # readable by anyone on the host: only the view hides it
    os.chmod(tmp_path, 0o755)
    targets = [str(secret), os.path.join(HERE, "test_verify_attacks.py"), "/etc/passwd", "/etc/shadow",
               os.path.expanduser("~/.bash_history"), "/proc/1/environ", "/proc/1/mem", "/proc/1/fd/0",
               "/sys/kernel/mm", "/run", "/home"]
    code = f"""
    import os
    readable = []
    for path in {targets!r}:
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                open(path, "rb").read(16)
            readable.append(path)
        except OSError:
            pass
    print(readable)
    """
    r = judge(worker, stdin_problem([("", "[]")]), code)
    assert r.verdict is Verdict.ACCEPTED, r


def test_cannot_write_where_the_judge_or_the_next_judge_looks(worker):
    """Opening for writing is the whole attack (a real one would then append code to site.py or drop
    a sitecustomize.py): the probes write nothing, so they stay harmless if a sandbox ever failed."""
    purelib = sysconfig.get_paths()["purelib"]
    stdlib = sysconfig.get_paths()["stdlib"]
    verify_dir = os.path.dirname(os.path.abspath(nous_ray.verify.child.__file__))
    # (As an ordinary user the fork-server's /proc files belong to the test's uid, the sandbox's only
    # one: opening /proc/1/comm succeeds there but the kernel refuses writes from another process, and
    # /proc/1/oom_score_adj can be raised: a test can make its own sandbox the OOM killer's choice.)
    existing = [os.path.join(stdlib, "site.py"), os.path.join(verify_dir, "forkserver.py"), "/etc/ld.so.cache",
                "/proc/1/mem", "/proc/1/environ", "/proc/sys/kernel/hostname", "/proc/sysrq-trigger"]
    name = f"nous-attack-probe-{os.getpid()}"
    new = [os.path.join(d, name) for d in (purelib, stdlib, verify_dir, "/usr/lib", "/", "/etc", "/dev", "/proc")]
    code = f"""
    import os
    opened = []
    for path in {existing!r}:
        try:
            os.close(os.open(path, os.O_WRONLY))
            opened.append(path)
        except OSError:
            pass
    for path in {new!r}:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            opened.append(path)
        except OSError:
            pass
    try:
        with open("/proc/1/comm", "w") as f:
            f.write("pwned")
        opened.append("/proc/1/comm")
    except OSError:
        pass
    print(opened)
    """
    try:
        r = judge(worker, stdin_problem([("", "[]")]), code)
    finally:
        leaked = [p for p in new if os.path.exists(p)]
        for p in leaked:
            os.unlink(p)
    assert r.verdict is Verdict.ACCEPTED, r
    assert leaked == []
    # The fork-server is untouched: the next program runs normally.
    assert judge(worker, stdin_problem([("", "ok")]), "print('ok')").verdict is Verdict.ACCEPTED


# ---------------------------------------------------------------------------------------------
# 2. State that outlives a test (or a sample).

PLANT_AND_LOOK = """
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
KEY = 0x5EED
places = ["/tmp/nous-mark", "/var/tmp/nous-mark", "/dev/shm/nous-mark", "nous-mark", os.path.expanduser("~/nous-mark")]
x86 = platform.machine() == "x86_64"
if input().startswith("plant"):
    open("/tmp/nous-mark", "w").write("done")  # must work: /tmp is writable, only private
    for p in places[1:]:
        try:
            open(p, "w").write("done")
        except OSError:
            pass
    libc.shmget(KEY, 4096, 0o1666)
    libc.semget(KEY, 1, 0o1666)
    libc.msgget(KEY, 0o1666)
    libc.mq_open(b"/nousmark", os.O_CREAT | os.O_RDWR, 0o666, None)
    if x86:
        libc.syscall(248, b"user", b"nousmark", b"x", 1, -4)  # add_key to the user keyring
    print("clean")
else:
    found = [p for p in places if os.path.exists(p)]
    found += [n for n, r in (("shm", libc.shmget(KEY, 0, 0)), ("sem", libc.semget(KEY, 0, 0)),
                             ("msg", libc.msgget(KEY, 0)), ("mq", libc.mq_open(b"/nousmark", os.O_RDWR)))
              if r >= 0]
    if x86 and libc.syscall(249, b"user", b"nousmark", None, 0) >= 0:  # request_key
        found.append("key")
    print("found " + " ".join(found) if found else "clean")
"""


def test_nothing_survives_from_one_test_to_the_next(worker):
    # Longest input first: "plant..." runs, then "look".
    problem = stdin_problem([("plant-plant\n", "clean"), ("look\n", "clean"), ("look-\n", "clean")])
    r = judge(worker, problem, PLANT_AND_LOOK)
    assert r.verdict is Verdict.ACCEPTED and r.tests_run == 3, r


def test_nothing_survives_from_one_sample_to_the_next(worker):
    plant = stdin_problem([("plant\n", "clean")])
    look = stdin_problem([("look\n", "clean")])
    assert judge(worker, plant, PLANT_AND_LOOK).verdict is Verdict.ACCEPTED
    assert judge(worker, look, PLANT_AND_LOOK + "\n# another sample\n").verdict is Verdict.ACCEPTED


# ---------------------------------------------------------------------------------------------
# 3. Limits per test, not per process: creating processes is denied; threads are allowed and their
#    CPU time and memory are the test's.

@pytest.mark.parametrize("how", [
    "os.fork()",
    "os.posix_spawn(sys.executable, [sys.executable, '-c', 'pass'], {})",
    "subprocess.run([sys.executable, '-c', 'pass'])",
    "multiprocessing.Process(target=print).start()",
    "ctypes.CDLL(None, use_errno=True).syscall(57) == -1 and throw()",  # raw fork
    "ctypes.CDLL(None, use_errno=True).syscall(56, 17, 0, 0, 0, 0) == -1 and throw()",  # raw clone(SIGCHLD)
    "ctypes.CDLL(None, use_errno=True).syscall(58) == -1 and throw()",  # raw vfork
    "ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == -1 and throw()",  # a user namespace
])
def test_no_new_processes(worker, how):
    if "syscall(5" in how and os.uname().machine != "x86_64":
        pytest.skip("x86_64 system call numbers")
    code = f"""
    import ctypes, multiprocessing, os, subprocess, sys
    def throw():
        raise OSError(ctypes.get_errno(), "denied")
    pid = os.getpid()
    try:
        {how}
    except OSError:
        print("denied")
    else:
        if os.getpid() == pid:
            print("created")
        os._exit(0)
    """
    r = judge(worker, stdin_problem([("", "denied")]), code)
    assert r.verdict is Verdict.ACCEPTED, r
    assert len(descendants(worker.pid)) == 1  # the fork-server alone


def test_threads_work_and_their_cpu_time_is_the_tests(worker):
    pool = """
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as ex:
        print(sum(ex.map(lambda x: x * x, range(1000))))
    """
    assert judge(worker, stdin_problem([("", "332833500")]), pool).verdict is Verdict.ACCEPTED
    burn = """
    import threading, time
    def spin():
        while time.thread_time() < 0.3:
            pass
    ts = [threading.Thread(target=spin) for _ in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print("done")
    """
    r = judge(worker, stdin_problem([("", "done")], time_limit_s=3.0), burn)
    assert r.verdict is Verdict.ACCEPTED and r.cpu_s >= 0.6, r  # both threads' CPU time is the test's


def test_threads_share_the_tests_memory_limit(worker):
    code = """
    import threading
    held = []
    def grab():
        held.append(bytearray(300 << 20))
    ts = [threading.Thread(target=grab) for _ in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(len(held))
    """
    r = judge(worker, stdin_problem([("", "2")], memory_limit_mb=512), code)
    assert r.verdict is not Verdict.ACCEPTED, r  # 2 x 300 MB do not fit in one 512 MB test


# ---------------------------------------------------------------------------------------------
# 4. An answer the judge cannot parse is the program's -1, never an infrastructure error.

@pytest.mark.parametrize("returned,verdict", [
    ("deep(3000)", Verdict.WRONG_ANSWER),  # nested deeper than the judge parses
    ("10 ** 60000", Verdict.WRONG_ANSWER),  # more digits than LiveCodeBench's 50,000
    ("float('nan')", Verdict.WRONG_ANSWER),
    ("{1, 2}", Verdict.WRONG_ANSWER),  # not JSON
    ("'x' * (20 << 20)", Verdict.WRONG_ANSWER),  # far beyond the expected size
])
def test_unparseable_returned_values_score_minus_one(worker, returned, verdict):
    code = f"""
    def deep(n):
        v = []
        for _ in range(n):
            v = [v]
        return v
    def f(x):
        return {returned}
    """
    r = judge(worker, call_problem("f", [("1", "[1, 2]")], memory_limit_mb=1024), code)
    assert r.verdict is verdict and r.reward == -1.0, r


def test_long_integers_as_livecodebench_parses_them(worker):
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        big = str(7 ** 50000)  # 42,255 digits: past Python's default 4,300, within LiveCodeBench's 50,000
    finally:
        sys.set_int_max_str_digits(limit)
    p = call_problem("f", [("1", big)])
    assert judge(worker, p, "def f(x):\n    return 7 ** 50000").verdict is Verdict.ACCEPTED
    assert judge(worker, stdin_problem([("", big)]), "print(7 ** 50000)").verdict is Verdict.ACCEPTED


def test_unparseable_standard_output_is_wrong(worker):
    code = "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe3\\x00\\n')"
    assert judge(worker, stdin_problem([("", "3")]), code).verdict is Verdict.WRONG_ANSWER


@pytest.mark.parametrize("output,why", [
    ("[1, 2", "cannot parse"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ("9" * 50001, "50000 digits"),
])
def test_unparseable_expected_output_is_a_dataset_error_at_load(output, why):
    row = {"id": "p", "source": "ds", "prompt": "q", "fn_name": "f",
           "tests": [{"input": "1", "output": "1", "kind": "functional"},
                     {"input": "1", "output": output, "kind": "functional"}]}
    with pytest.raises(ProblemFormatError, match=why) as e:
        Problem.from_dict(row, dataset="ds.jsonl", row=7)
    assert "ds.jsonl: row 7: field 'tests[1].output'" in str(e.value)


# ---------------------------------------------------------------------------------------------
# 5. Clean-up a program cannot crash.

LITTER = {
    "deep tree": """
        import os
        for _ in range(3000):
            os.mkdir("d")
            os.chdir("d")
        print("done")
    """,
    "many files": """
        import os
        os.mkdir("many")
        for i in range(2000):
            open(f"many/{i}", "w").close()
        print("done")
    """,
    "locked folders, loops, fifos": """
        import os
        os.makedirs("a/b/c")
        open("a/b/c/f", "w").write("x")
        os.chmod("a/b/c", 0)
        os.chmod("a/b", 0)
        os.symlink("loop", "loop")
        os.symlink("..", "a/up")
        os.mkfifo("fifo")
        print("done")
    """,
}


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_cleanup_cannot_be_crashed(isolation):
    w = SandboxWorker(isolation)
    w.start()
    try:
        pid = w.pid
        for name, code in LITTER.items():
            r = judge(w, stdin_problem([("", "done")], time_limit_s=10.0), code)
            assert r.verdict is Verdict.ACCEPTED, (name, r)
            assert w.alive and w.pid == pid, name  # never restarted
        # ...and the next test starts clean.
        assert judge(w, stdin_problem([("", "[]")]), "import os\nprint(os.listdir('.'))").verdict \
            is Verdict.ACCEPTED
    finally:
        w.close()


# ---------------------------------------------------------------------------------------------
# 6. The judge's own memory: an answer far beyond the expected size is wrong, unread.

def test_huge_output_costs_the_judge_nothing(worker):
    code = "import sys\nsys.stdout.write('1 ' * (8 << 20))"  # one 16 MiB line of small tokens
    tracemalloc.start()
    try:
        r = judge(worker, stdin_problem([("", "1")]), code)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.verdict is Verdict.WRONG_ANSWER and "far beyond" in r.detail, r
    assert peak < 4 << 20, peak  # the 16 MiB were never read (tokenized, they cost ~1 GB)


def test_trailing_blanks_within_bounds_are_still_accepted(worker):
    code = "print(3)\nprint(' ' * 60000)\nprint('\\n' * 100)"
    assert judge(worker, stdin_problem([("", "3")]), code).verdict is Verdict.ACCEPTED


# ---------------------------------------------------------------------------------------------
# 7. Legal programs the judge used to reject.

def test_programs_run_as_main_and_pickle_their_classes(worker):
    code = """
    import pickle, sys
    class Point:
        def __init__(self, x):
            self.x = x
    assert sys.modules["__main__"].Point is Point
    if __name__ == "__main__":
        print(pickle.loads(pickle.dumps(Point(int(input())))).x + 1)
    """
    assert judge(worker, stdin_problem([("41\n", "42")]), code).verdict is Verdict.ACCEPTED
    call = """
    import copy, pickle
    class Node:
        def __init__(self, v):
            self.v = v
    class Solution:
        def f(self, x):
            return pickle.loads(pickle.dumps(copy.deepcopy(Node(x)))).v * 2
    """
    assert judge(worker, call_problem("f", [("21", "42")]), call).verdict is Verdict.ACCEPTED


def test_large_programs_are_sent_whole(worker):
    code = "# " + "x" * 400_000 + "\na, b = map(int, input().split())\nprint(a + b)\n"
    r = judge(worker, stdin_problem([("1 2\n", "3")]), code)
    assert r.verdict is Verdict.ACCEPTED, r
