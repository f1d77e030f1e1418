"""The fork-server: a warm interpreter that forks one child per test.

Started as a fresh interpreter (``python forkserver.py FD [--isolated] [--test-uid N]``, never forked
from the judge), so its memory never holds an expected output, nor anything a previous child printed:
the judge creates the descriptors a test reads and writes (memfds) and passes them over the socket
with SCM_RIGHTS; this process only forks, waits, kills and reaps. Standard library only.

``--isolated``: it runs as process 1 of a bubblewrap sandbox (see :mod:`isolation`), holding
CAP_SYS_ADMIN in the sandbox's user namespace only. Each test gets a new tmpfs on ``/tmp`` (also seen
as ``/var/tmp`` and ``/dev/shm``), unmounted after it, so nothing a test writes meets the next one;
the rest of the sandbox is read-only. The unmount and the next test's mount happen after the reply is
sent, while the judge compares. ``--test-uid``: tests run as that uid of the sandbox (a second uid
exists only when the judge runs as root). Without ``--isolated`` (isolation "none") tests get a
private working directory and nothing else.

Protocol on the socket FD, one request at a time (judge -> server), frames of ``u32 length + JSON``:

- ``{"op": "ping"}`` -> ``{"pong": pid, "isolated": bool, "check": null | str}`` (``check``: why a
  test could not run here, from a trial test made at start).
- ``{"op": "load", "code": str}`` -> ``{"ok": true}`` or ``{"ok": false, "error": str}`` (compile).
- ``{"op": "run", "call_fn", "cpu_limit_s", "wall_limit_s", "memory_bytes", "output_bytes",
  "nproc"}`` with 4 descriptors (stdin, stdout, stderr, result) -> ``{"status", "signal", "cpu_s",
  "wall_s", "wall_killed", "timing"}``, or ``{"setup_failed": str}`` when the test's sandbox could
  not be built (not the program's doing).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == _HERE:
    sys.path.pop(0)  # the program must not import the judge's modules by accident
sys.path.insert(0, _HERE)
import child  # noqa: E402
import seccomp  # noqa: E402

sys.path.remove(_HERE)
del sys.modules["child"], sys.modules["seccomp"]  # nor find them by these names

# Warm the modules programs use most, so a child does not pay for importing them.
import bisect  # noqa: E401,E402,F401
import operator  # noqa: E401,E402,F401

PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH = 2
TMP_INODES = 16384
_HDR = struct.Struct("<I")
_LIBC = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    _LIBC.prctl(option, value, 0, 0, 0)


def _recv_exact(sock: socket.socket, n: int, fds: list) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data, anc, _flags, _addr = socket.recv_fds(sock, n - len(buf), 8) if not buf else (
            sock.recv(n - len(buf)), [], 0, None)
        if not data:
            raise EOFError
        buf += data
        fds.extend(anc)
    return bytes(buf)


def _recv(sock: socket.socket) -> tuple[dict, list[int]]:
    fds: list[int] = []
    (n,) = _HDR.unpack(_recv_exact(sock, _HDR.size, fds))
    body = _recv_exact(sock, n, fds)
    return json.loads(body), fds


def _send(sock: socket.socket, msg: dict) -> None:
    body = json.dumps(msg).encode()
    sock.sendall(_HDR.pack(len(body)) + body)


# -- the writable part of a test's view ---------------------------------------------------------

def _mount_fresh_tmp(size_bytes: int) -> None:
    """A new, empty tmpfs on /tmp (isolated mode)."""
    opts = f"size={max(1 << 20, size_bytes)},nr_inodes={TMP_INODES},mode=1777".encode()
    if _LIBC.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount tmpfs on /tmp: {os.strerror(e)}")


def _drop_tmp() -> None:
    # Detached, the tmpfs is freed with its last user: the test's processes are already reaped.
    _LIBC.umount2(b"/tmp", MNT_DETACH)


def _remove_tree(top: str) -> None:
    """Delete a directory a program filled, whatever it put there; never raises.

    No recursion and no long paths (a program may nest directories deeper than any recursion or
    path-length limit): each subdirectory is emptied after its own subdirectories are moved up to
    ``top``, so the work is one pass over what the program created, with two descriptors open.
    """
    try:
        os.rmdir(top)  # the common case: the program wrote nothing
        return
    except OSError:
        pass
    try:
        topfd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    moved = 0
    try:
        while True:
            names = os.listdir(topfd)
            done = 0  # entries removed or moved up in this pass: none means nothing more can be
            for name in names:
                try:
                    if not stat.S_ISDIR(os.lstat(name, dir_fd=topfd).st_mode):
                        os.unlink(name, dir_fd=topfd)
                        done += 1
                        continue
                    os.chmod(name, 0o700, dir_fd=topfd)
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=topfd)
                    try:
                        for sub in os.listdir(fd):
                            if stat.S_ISDIR(os.lstat(sub, dir_fd=fd).st_mode):
                                os.chmod(sub, 0o700, dir_fd=fd)  # moving a folder rewrites its ".."
                                moved += 1
                                os.rename(sub, f".up{moved}", src_dir_fd=fd, dst_dir_fd=topfd)
                            else:
                                os.unlink(sub, dir_fd=fd)
                            done += 1
                    finally:
                        os.close(fd)
                    os.rmdir(name, dir_fd=topfd)
                    done += 1
                except OSError:
                    continue
            if not names or not done:
                break
    except Exception:
        pass
    finally:
        os.close(topfd)
    try:
        os.rmdir(top)
    except OSError:
        pass


def _reap(isolated: bool) -> None:
    """Reap whatever else is left. Process creation is denied to programs, so nothing should be;
    as process 1 of the sandbox's pid namespace, kill(-1) would end anything there is."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if not isolated:
                return
            os.kill(-1, signal.SIGKILL)
            try:
                while True:
                    os.waitpid(-1, 0)
            except ChildProcessError:
                return


# -- one test ----------------------------------------------------------------------------------

class Server:
    def __init__(self, isolated: bool, test_uid: int | None):
        self.isolated = isolated
        self.test_uid = test_uid
        self.filter = seccomp.build()
        self.warm = child.Warm()
        self.code = None
        self.tmp_size: int | None = None  # size of the fresh tmpfs waiting on /tmp, None: none is

    def _workdir(self, size: int) -> str:
        """Where the next test runs: the fresh /tmp (mounted now unless one is waiting), or a new folder."""
        if not self.isolated:
            return tempfile.mkdtemp(prefix="nous-run-")
        if self.tmp_size != size:
            if self.tmp_size is not None:
                _drop_tmp()
            self.tmp_size = None
            _mount_fresh_tmp(size)
            self.tmp_size = size
        self.tmp_size = -1  # taken: whatever happens, this one is not given to another test
        return "/tmp"

    def recycle(self, workdir: str | None, size: int) -> None:
        """After a test (its reply sent): drop what it could write, and ready a fresh /tmp for the next."""
        if not self.isolated:
            if workdir is not None:
                _remove_tree(workdir)
            return
        if self.tmp_size is not None:
            _drop_tmp()
            self.tmp_size = None
        try:
            _mount_fresh_tmp(size)
            self.tmp_size = size
        except OSError:
            pass  # the next test mounts one itself, or reports why it cannot

    def _fork_child(self, code, req: dict, fds: list[int], setup_w: int) -> int:
        stdin_fd, stdout_fd, stderr_fd, result_fd = fds
        pid = os.fork()
        if pid == 0:
            child.run_child(code, warm=self.warm, call_fn=req.get("call_fn"), stdin_fd=stdin_fd,
                            stdout_fd=stdout_fd, stderr_fd=stderr_fd, result_fd=result_fd,
                            workdir=req["workdir"], cpu_limit_s=int(req["cpu_limit_s"]),
                            memory_bytes=int(req["memory_bytes"]), output_bytes=int(req["output_bytes"]),
                            nproc=int(req["nproc"]), uid=self.test_uid, syscall_filter=self.filter,
                            setup_fd=setup_w)
            os._exit(child.EXIT_EXCEPTION)  # not reached
        return pid

    def run_one(self, code, req: dict, fds: list[int]) -> dict:
        """One test; the caller then calls :meth:`recycle` with ``req["workdir"]``."""
        t_setup = time.monotonic()
        req["workdir"] = None
        setup_r = setup_w = -1
        try:
            req["workdir"] = self._workdir(int(req["output_bytes"]))
            setup_r, setup_w = os.pipe()
            t0 = time.monotonic()
            pid = self._fork_child(code, req, fds, setup_w)
            os.close(setup_w)
            setup_w = -1
            t_forked = time.monotonic()
            pidfd = os.pidfd_open(pid)
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                wall_killed = not poller.poll(max(0.0, float(req["wall_limit_s"])) * 1000)
            finally:
                os.close(pidfd)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            t_exited = time.monotonic()
            _, wstatus, ru = os.wait4(pid, 0)
            wall = time.monotonic() - t0
            _reap(self.isolated)
            setup = os.read(setup_r, 4096)
            if setup != b"ok":
                return {"setup_failed": setup.decode("utf-8", "replace") or "the test's child died before running"}
            sig = os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else 0
            return {"status": os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else -1, "signal": sig,
                    "cpu_s": ru.ru_utime + ru.ru_stime, "wall_s": wall, "wall_killed": wall_killed,
                    "maxrss_kb": ru.ru_maxrss,
                    "timing": [t_forked - t_setup, t_exited - t_forked, time.monotonic() - t_exited]}
        except OSError as e:
            return {"setup_failed": f"{type(e).__name__}: {e}"}
        finally:
            for fd in (*fds, setup_r, setup_w):
                if fd >= 0:
                    os.close(fd)

    def trial(self) -> str | None:
        """Run one program that must fail to fork, as a test would run: None, or what went wrong."""
        code = compile("import os\ntry:\n    os.fork()\nexcept PermissionError:\n    pass\nelse:\n    raise SystemExit(3)\n"
                       "import collections, json, math\nopen('probe', 'w').write('x')\n", "trial", "exec")
        fds = [os.memfd_create(n, os.MFD_CLOEXEC) for n in ("stdin", "stdout", "stderr", "result")]
        err_fd = os.dup(fds[2])
        req = {"call_fn": None, "cpu_limit_s": 10, "wall_limit_s": 30, "memory_bytes": 1 << 30,
               "output_bytes": 1 << 20, "nproc": 16}
        try:
            reply = self.run_one(code, req, fds)
            self.recycle(req["workdir"], req["output_bytes"])
            if "setup_failed" in reply:
                return reply["setup_failed"]
            if reply["status"] != 0 or reply["signal"]:
                tail = os.pread(err_fd, 2000, max(0, os.fstat(err_fd).st_size - 2000)).decode("utf-8", "replace")
                why = "it could fork" if reply["status"] == 3 else f"status {reply['status']} signal {reply['signal']}"
                return f"a trial program failed ({why}): {tail.strip()[-500:]}"
            return None
        finally:
            os.close(err_fd)

    def serve(self, sock: socket.socket) -> None:
        check = None if self.filter is not None else "no seccomp filter for this machine's architecture"
        if check is None:
            check = self.trial()
        # Everything loaded so far is permanent: a garbage collection in a child then leaves these
        # objects alone instead of touching (and copying) every page of the inherited heap.
        gc.collect()
        gc.freeze()
        while True:
            try:
                req, fds = _recv(sock)
            except (EOFError, ConnectionError):
                return
            if req["op"] == "load":
                self.code = None
                try:
                    self.code = compile(req["code"], "main.py", "exec", dont_inherit=True)
                    _send(sock, {"ok": True})
                except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as e:
                    _send(sock, {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]})
            elif req["op"] == "run":
                if self.code is None or len(fds) != 4 or check is not None:
                    for fd in fds:
                        os.close(fd)
                    _send(sock, {"setup_failed": check or "no program loaded or bad descriptors"})
                    continue
                _send(sock, self.run_one(self.code, req, fds))
                self.recycle(req["workdir"], int(req["output_bytes"]))
            elif req["op"] == "ping":
                _send(sock, {"pong": os.getpid(), "isolated": self.isolated, "test_uid": self.test_uid,
                             "check": check})
            else:
                _send(sock, {"error": f"unknown op {req['op']!r}"})


def main(argv: list[str]) -> None:
    sock_fd = int(argv[0])
    isolated = "--isolated" in argv
    test_uid = int(argv[argv.index("--test-uid") + 1]) if "--test-uid" in argv else None
    # Descriptors the launcher passed on (bubblewrap keeps what it inherits) must not reach a test.
    os.closerange(3, sock_fd)
    os.closerange(sock_fd + 1, 1 << 16)
    if isolated and os.getpid() != 1:
        raise SystemExit("--isolated: expected to be process 1 of the sandbox")
    _prctl(PR_SET_DUMPABLE, 0)  # tests cannot read or trace this process through /proc
    if not isolated:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the judge stops us by closing the socket
    child.prepare()
    Server(isolated, test_uid).serve(socket.socket(fileno=sock_fd))


if __name__ == "__main__":
    main(sys.argv[1:])
