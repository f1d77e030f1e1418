"""The fork-server: a warm interpreter that forks one child per test.

Started as a fresh interpreter (``python forkserver.py FD``, never forked from the judge), so its
memory never holds an expected output, nor anything a previous child printed: the judge creates the
descriptors a test reads and writes (memfds) and passes them over the socket with SCM_RIGHTS; this
process only forks, waits, kills and reaps. Standard library only.

Protocol on the socket FD, one request at a time (judge -> server), frames of
``u32 length + JSON``:

- ``{"op": "load", "code": str}`` -> ``{"ok": true}`` or ``{"ok": false, "error": str}`` (compile).
- ``{"op": "run", "call_fn", "cpu_limit_s", "wall_limit_s", "memory_bytes", "output_bytes",
  "nproc"}`` with 4 descriptors (stdin, stdout, stderr, result) -> ``{"status", "signal", "cpu_s",
  "wall_s", "wall_killed"}``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == _HERE:
    sys.path.pop(0)  # the program must not import the judge's modules by accident
sys.path.insert(0, _HERE)
import child  # noqa: E402

sys.path.remove(_HERE)

# Warm the modules programs use most, so a child does not pay for importing them.
import bisect  # noqa: E401,E402,F401
import operator  # noqa: E401,E402,F401

PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
UID_BASE = 200_000
_HDR = struct.Struct("<I")


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except Exception:
        pass


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


def _has_children() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


def _kill_leftovers(uid: int) -> None:
    """Kill and reap the program's descendants that left its process group.

    As subreaper, every orphaned descendant becomes our child, so "no children" means nothing is
    left (the common case, checked without a syscall per process). As root, kill everything the
    sandbox uid owns; otherwise kill our remaining children found in /proc.
    """
    for _ in range(50):
        if not _has_children():
            return
        if os.geteuid() == 0:
            pid = os.fork()
            if pid == 0:
                try:
                    os.setresuid(uid, uid, uid)
                    os.kill(-1, signal.SIGKILL)  # as uid: every process of uid but this one
                except BaseException:
                    pass
                os._exit(0)
            os.waitpid(pid, 0)
        else:
            me = str(os.getpid())
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        with open(f"/proc/{name}/stat") as f:
                            ppid = f.read().rsplit(")", 1)[1].split()[1]
                        if ppid == me:
                            os.kill(int(name), signal.SIGKILL)
                    except (OSError, IndexError, ValueError):
                        pass
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.001)


def run_one(code, prelude: dict, req: dict, fds: list[int], uid: int, keep_root_files: bool) -> dict:
    stdin_fd, stdout_fd, stderr_fd, result_fd = fds
    t_setup = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="nous-run-")
    try:
        if os.geteuid() == 0 and not keep_root_files:  # else files are accessed as uid 0
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child.run_child(code, prelude=prelude, call_fn=req.get("call_fn"), stdin_fd=stdin_fd,
                            stdout_fd=stdout_fd, stderr_fd=stderr_fd, result_fd=result_fd,
                            workdir=workdir, cpu_limit_s=int(req["cpu_limit_s"]),
                            memory_bytes=int(req["memory_bytes"]), output_bytes=int(req["output_bytes"]),
                            nproc=int(req["nproc"]), uid=uid, keep_root_files=keep_root_files)
            os._exit(child.EXIT_EXCEPTION)  # not reached
        t_forked = time.monotonic()
        pidfd = os.pidfd_open(pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            wall_killed = not poller.poll(max(0.0, float(req["wall_limit_s"])) * 1000)
        finally:
            os.close(pidfd)
        # The child is dead or still running, but not reaped: its pid still names its group.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        t_exited = time.monotonic()
        _, wstatus, ru = os.wait4(pid, 0)
        wall = time.monotonic() - t0
        _kill_leftovers(uid)
        sig = os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else 0
        return {"status": os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else -1, "signal": sig,
                "cpu_s": ru.ru_utime + ru.ru_stime, "wall_s": wall, "wall_killed": wall_killed,
                "maxrss_kb": ru.ru_maxrss,
                "timing": [t_forked - t_setup, t_exited - t_forked, time.monotonic() - t_exited]}
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)


def serve(sock: socket.socket) -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_DUMPABLE, 0)  # same-uid programs cannot read this process through /proc
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the judge stops us by closing the socket
    prelude = child.build_prelude_namespace()
    child.prepare()
    # Everything loaded so far is permanent: a garbage collection in a child then leaves these
    # objects alone instead of touching (and copying) every page of the inherited heap.
    gc.collect()
    gc.freeze()
    uid = UID_BASE + os.getpid()  # unique among live fork-servers on this machine
    keep_root_files = not child.interpreter_readable_by(uid)
    code = None
    while True:
        try:
            req, fds = _recv(sock)
        except (EOFError, ConnectionError):
            return
        if req["op"] == "load":
            code = None
            try:
                code = compile(req["code"], "main.py", "exec", dont_inherit=True)
                _send(sock, {"ok": True})
            except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as e:
                _send(sock, {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]})
        elif req["op"] == "run":
            if code is None or len(fds) != 4:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"error": "no program loaded or bad descriptors"})
                continue
            _send(sock, run_one(code, prelude, req, fds, uid, keep_root_files))
        elif req["op"] == "ping":
            _send(sock, {"pong": os.getpid(), "uid": uid, "keep_root_files": keep_root_files})
        else:
            _send(sock, {"error": f"unknown op {req['op']!r}"})


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
