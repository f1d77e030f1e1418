"""The judge's handle on one fork-server process: load a program, run it on one input.

The judge creates every descriptor a test uses (memfds for stdin, stdout, stderr and the call-based
result) and hands them to the fork-server with SCM_RIGHTS; after the run it reads them itself. So the
fork-server, and every child forked from it, never holds an expected output nor another run's output.
Where the fork-server runs (a bubblewrap sandbox, or unsandboxed) is :mod:`isolation`'s business.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
from dataclasses import dataclass

from nous_ray.config import VerifierConfig
from nous_ray.verify import child
from nous_ray.verify.isolation import InfraError, Launch, SandboxUnavailable, unavailable

__all__ = ["InfraError", "SandboxUnavailable", "SandboxWorker", "RunLimits", "RawRun", "WorkerDied",
           "check_sandbox"]

_DEFAULTS = VerifierConfig()
_HDR = struct.Struct("<I")
STDERR_TAIL = 2000
RESULT_CAP = 1 << 26  # the call-based result frame is never read past this


class WorkerDied(RuntimeError):
    """The fork-server stopped answering (crashed, was killed, or hung)."""


@dataclass(frozen=True)
class RunLimits:
    cpu_limit_s: int  # RLIMIT_CPU soft limit (SIGXCPU); hard is one second more
    wall_limit_s: float  # the fork-server kills the process group after this
    memory_bytes: int  # RLIMIT_AS
    output_bytes: int  # cap on stdout (and any file the program writes)
    nproc: int  # RLIMIT_NPROC: threads of one test (process creation is denied outright)


@dataclass
class RawRun:
    status: int  # exit status, -1 when killed by a signal
    signal: int
    cpu_s: float
    wall_s: float
    wall_killed: bool
    stdout: bytes  # empty when stdout_size is over the read cap of run()
    stdout_overflow: bool  # over the output cap (RLIMIT_FSIZE stopped it)
    result: bytes  # call-based result channel, raw; empty when result_size is over the read cap
    stderr_tail: str
    timing: tuple = ()  # fork-server side: setup+fork, child lifetime, reap+cleanup (seconds)
    stdout_size: int = -1  # bytes the program wrote (-1: as long as ``stdout``)
    result_size: int = -1

    def __post_init__(self):
        if self.stdout_size < 0:
            self.stdout_size = len(self.stdout)
        if self.result_size < 0:
            self.result_size = len(self.result)


def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_unless_over(fd: int, cap: int) -> tuple[bytes, int]:
    """(the whole file, its size); nothing is read when it is larger than ``cap``."""
    size = os.fstat(fd).st_size
    want = size if size <= cap else 0
    chunks, off = [], 0
    while off < want:
        b = os.pread(fd, min(want - off, 1 << 24), off)
        if not b:
            break
        chunks.append(b)
        off += len(b)
    return b"".join(chunks), size


class SandboxWorker:
    """One fork-server process. Not thread-safe: one caller at a time.

    bubblewrap's ``--die-with-parent`` ties the sandbox to the thread that starts it: start a worker
    from the thread that keeps using it (the local backend's threads live as long as the pool).
    """

    def __init__(self, isolation: str = _DEFAULTS.isolation, sandbox_uid: int = _DEFAULTS.sandbox_uid,
                 reply_grace_s: float = 10.0):
        self.isolation = isolation
        self.sandbox_uid = sandbox_uid
        self.reply_grace_s = reply_grace_s
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.pid = -1
        self.info: dict = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the fork-server; InfraError (SandboxUnavailable: the machine cannot isolate) if not."""
        self.close()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        err = os.memfd_create("forkserver-stderr", os.MFD_CLOEXEC)
        launch = None
        try:
            launch = Launch(self.isolation, theirs.fileno(), self.sandbox_uid)
            self.proc = subprocess.Popen(
                launch.argv, pass_fds=launch.fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, env=dict(child.CHILD_ENV), cwd="/", start_new_session=True)
        except OSError as e:
            mine.close()
            os.close(err)
            raise InfraError(f"cannot start the fork-server ({self.isolation}): {e}") from e
        except BaseException:
            mine.close()
            os.close(err)
            raise
        finally:
            theirs.close()
            if launch is not None:
                launch.close()
        self.sock = mine
        self.pid = self.proc.pid
        try:
            reply = self._call({"op": "ping"}, timeout=60.0)
        except WorkerDied as e:
            self.close()
            tail = os.pread(err, 4000, max(0, os.fstat(err).st_size - 4000)).decode("utf-8", "replace")
            os.close(err)
            if self.isolation == "none":
                raise InfraError(f"fork-server did not start: {e}: {tail.strip()[-1000:]}") from e
            raise unavailable(tail, str(e)) from e
        os.close(err)
        if "pong" not in reply:
            self.kill()
            raise InfraError(f"fork-server answered {reply!r} to ping")
        if reply.get("check"):
            self.kill()
            raise SandboxUnavailable(f"verifier.isolation={self.isolation}: a trial test cannot run in the "
                                     f"sandbox: {reply['check']}")
        self.info = reply

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- protocol ----------------------------------------------------------------------------
    def _call(self, msg: dict, fds: list[int] = (), timeout: float = 60.0) -> dict:
        if self.sock is None:
            raise WorkerDied("fork-server not started")
        body = json.dumps(msg).encode()
        try:
            self.sock.settimeout(timeout)
            frame = memoryview(_HDR.pack(len(body)) + body)
            # One sendmsg carries the descriptors and as much of the frame as the socket takes; a large
            # program needs the rest sent after it.
            sent = socket.send_fds(self.sock, [frame], list(fds))
            if sent < len(frame):
                self.sock.sendall(frame[sent:])
            (n,) = _HDR.unpack(self._recv_exact(_HDR.size))
            reply = json.loads(self._recv_exact(n))
        except (OSError, EOFError, ValueError, struct.error) as e:
            self.kill()
            raise WorkerDied(f"fork-server {self.pid}: {type(e).__name__}: {e}") from e
        if not isinstance(reply, dict):
            self.kill()
            raise WorkerDied(f"fork-server {self.pid}: malformed reply")
        return reply

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            data = self.sock.recv(n - len(buf))
            if not data:
                raise EOFError("connection closed")
            buf += data
        return bytes(buf)

    def load(self, code: str) -> str | None:
        """Compile ``code`` in the fork-server; returns None, or the compile error."""
        if self.sock is None:
            self.start()
        reply = self._call({"op": "load", "code": code}, timeout=60.0)
        return None if reply.get("ok") else str(reply.get("error", "compile error"))

    def run(self, stdin: bytes, limits: RunLimits, call_fn: str | None = None,
            read_cap: int | None = None) -> RawRun:
        """Run the loaded program once. Raises WorkerDied if the fork-server fails, InfraError if the
        test's sandbox could not be built. Output larger than ``read_cap`` bytes is not read (its
        size is reported): the judge decides without holding it."""
        fds = [_memfd("stdin", stdin), _memfd("stdout"), _memfd("stderr"), _memfd("result")]
        cap = limits.output_bytes if read_cap is None else min(read_cap, limits.output_bytes)
        try:
            req = {"op": "run", "call_fn": call_fn, "cpu_limit_s": limits.cpu_limit_s,
                   "wall_limit_s": limits.wall_limit_s, "memory_bytes": limits.memory_bytes,
                   "output_bytes": limits.output_bytes, "nproc": limits.nproc}
            reply = self._call(req, fds, timeout=limits.wall_limit_s + self.reply_grace_s)
            if "setup_failed" in reply:
                raise InfraError(f"fork-server {self.pid}: the test's sandbox failed: {reply['setup_failed']}")
            if "error" in reply:
                raise WorkerDied(f"fork-server {self.pid}: {reply['error']}")
            out, out_size = _read_unless_over(fds[1], cap)
            err_size = os.fstat(fds[2]).st_size
            err = os.pread(fds[2], STDERR_TAIL, max(0, err_size - STDERR_TAIL))
            result, result_size = _read_unless_over(fds[3], min(cap, RESULT_CAP))
            return RawRun(status=int(reply["status"]), signal=int(reply["signal"]),
                          cpu_s=float(reply["cpu_s"]), wall_s=float(reply["wall_s"]),
                          wall_killed=bool(reply["wall_killed"]), stdout=out,
                          stdout_overflow=out_size > limits.output_bytes, result=result,
                          stderr_tail=err.decode("utf-8", "replace"), timing=tuple(reply.get("timing", ())),
                          stdout_size=out_size, result_size=result_size)
        finally:
            for fd in fds:
                os.close(fd)


_CHECKED: set = set()


def check_sandbox(isolation: str = _DEFAULTS.isolation, sandbox_uid: int = _DEFAULTS.sandbox_uid) -> None:
    """Refuse to go on where programs cannot be isolated as configured: start one fork-server (its
    trial test included) and raise SandboxUnavailable naming the cause and the fix. Once per process."""
    key = (isolation, sandbox_uid)
    if key in _CHECKED:
        return
    w = SandboxWorker(isolation, sandbox_uid)
    try:
        w.start()
    except SandboxUnavailable:
        raise
    except InfraError as e:
        raise SandboxUnavailable(f"verifier.isolation={isolation}: {e}") from e
    finally:
        w.close()
    _CHECKED.add(key)
