"""What runs inside the forked child that executes one test of an untrusted program.

Kept small and standard-library only so it can be audited in one sitting. The child is forked from
the fork-server (:mod:`forkserver`), a fresh interpreter that never receives expected outputs, so
nothing the program can reach in memory (``sys._getframe``, ``gc.get_objects``) holds an answer.

The child never decides a verdict: it reports an exit status, writes what the program printed to a
capped file, and in call-based mode serializes the returned value as JSON into a private
descriptor. The judge process compares everything. Exit statuses the program could fake itself
(``os._exit(n)``) can only turn a run into a failure, never into a pass.
"""

from __future__ import annotations

import atexit
import builtins
import io
import json
import numbers
import os
import resource
import sys
import types

# Exit statuses of the child (anything else, or a signal, is a runtime error).
EXIT_OK = 0
EXIT_EXCEPTION = 1

# The call-based result frame: magic, 16 hex digits of length, JSON payload. Anything else found in
# the result descriptor (extra bytes, a truncated frame) is a tampered channel: a failure.
RESULT_MAGIC = b"\x00NOUS-RESULT\x00"

# LiveCodeBench executes programs after these imports (its ``import_string``); matching it keeps our
# pass rates comparable with the benchmark's.
LCB_PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\nfrom functools import *\n"
    "from operator import *\nfrom io import *\nfrom sys import *\nfrom json import *\n"
    "from builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
    "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\n"
    "import statistics\nimport itertools\nimport functools\nimport operator\nimport io\nimport sys\n"
    "import json\n"
)
MEMORY_FRAME = RESULT_MAGIC + b"M" + b"%016x" % 0
RECURSION_LIMIT = 50_000  # LiveCodeBench's
INT_MAX_STR_DIGITS = 50_000  # LiveCodeBench's (sys.set_int_max_str_digits)

# One thread for every BLAS/OpenMP runtime: numpy stays importable under the address-space limit
# (a thread pool reserves a stack per core) and a test uses the one core it is given.
CHILD_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONHASHSEED": "0",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}


class Warm:
    """Built once in the fork-server, used as they are by each child (its copy-on-write copy): the
    standard streams over descriptors 0, 1, 2 and the program's module (``__main__`` for stdin
    programs, ``solution`` for call-based ones) holding LiveCodeBench's imports. Building them in a
    child would write to every object they refer to (reference counts), copying those pages."""

    def __init__(self):
        self.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                      encoding="utf-8", errors="strict")
        self.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                                       encoding="utf-8", errors="strict")
        self.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
                                       encoding="utf-8", errors="backslashreplace", line_buffering=True)
        self.argv = ["main.py"]
        # The fork-server's own streams stay referenced: replaced in a child, they would otherwise be
        # freed there, and freeing writes to (so copies) the pages they sit on.
        self.replaced = (sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__,
                         sys.argv)
        prelude: dict = {}
        exec(compile(LCB_PRELUDE, "<prelude>", "exec"), prelude)
        prelude.pop("__doc__", None)
        prelude.update(stdin=self.stdin, stdout=self.stdout, stderr=self.stderr, argv=self.argv,
                       __file__="main.py", __builtins__=builtins, __spec__=None, __loader__=None)
        self.modules = {}
        for name in ("__main__", "solution"):
            mod = types.ModuleType(name)
            mod.__dict__.update(prelude)
            mod.__name__ = name
            self.modules[name] = mod

    def enter(self, name: str):
        """In the child: the fresh streams become the process's, the module becomes ``name``."""
        sys.stdin = sys.__stdin__ = self.stdin
        sys.stdout = sys.__stdout__ = self.stdout
        sys.stderr = sys.__stderr__ = self.stderr
        sys.argv = self.argv
        mod = self.modules[name]
        sys.modules[name] = mod
        return mod


def _set_limits(cpu_s: int, memory_bytes: int, output_bytes: int, nproc: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # Output files (stdout, stderr, anything written in the working directory) stop growing past the
    # cap: the write fails with EFBIG (Python ignores SIGXFSZ) and the judge sees a full file.
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes + 1, output_bytes + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:  # loaded once in the fork-server (see prepare), not in every child
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


_NO_CAPS: tuple = ()


def _drop_capabilities() -> None:
    """Clear every capability of this process (the fork-server's CAP_SYS_ADMIN in its sandbox, or
    root's when unsandboxed); no_new_privs, set with the seccomp filter, keeps exec from granting any."""
    if _LIBC.capset(*_NO_CAPS) != 0:
        import ctypes

        raise OSError(ctypes.get_errno(), "capset failed")


def _clear_inheritable_capabilities() -> None:
    """The fork-server needs its permitted capabilities, never inheritable or ambient ones (which
    bubblewrap sets for --cap-add): clear those, so a test that leaves uid 0 is left with none at all."""
    import ctypes

    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    if _libc().capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    data[2] = data[5] = 0  # inheritable, both words; the ambient set follows it down
    if _libc().capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def prepare() -> None:
    """Called once in the fork-server: load what every child would otherwise load again."""
    import ctypes

    global _NO_CAPS
    _clear_inheritable_capabilities()
    # Resolve the C functions a child calls here, once (CDLL caches them): resolving them in every
    # child costs page faults.
    for name in ("capset", "prctl"):
        getattr(_libc(), name)
    # capset(2) arguments: _LINUX_CAPABILITY_VERSION_3 for this thread, all sets empty.
    _NO_CAPS = ((ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)())
    # LiveCodeBench's evaluator raises the limit on int <-> str conversions to 50,000 digits.
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(INT_MAX_STR_DIGITS)
    os.environ.clear()
    os.environ.update(CHILD_ENV)


def _become_test_user(uid: int) -> None:
    """In a sandbox that maps a second uid (the judge runs as root), run the test as that uid: the
    fork-server's own uid can then neither be signalled nor traced, and RLIMIT_NPROC applies."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _json_default(o):
    # numpy scalars and the like compare equal to plain numbers in LiveCodeBench's in-process check.
    if isinstance(o, bool):
        return o
    if isinstance(o, numbers.Integral):
        return int(o)
    if isinstance(o, numbers.Real):
        return float(o)
    raise TypeError(f"result of type {type(o).__name__} is not JSON serializable")


def _encode_result(value) -> bytes:
    if isinstance(value, tuple):
        value = list(value)
    try:
        payload = json.dumps(value, default=_json_default).encode()
    except (TypeError, ValueError, RecursionError) as e:
        # An unserializable value cannot equal any expected JSON value: report it as such.
        payload = json.dumps({"__nous_unserializable__": repr(type(e).__name__)}).encode()
        return RESULT_MAGIC + b"U" + b"%016x" % len(payload) + payload
    return RESULT_MAGIC + b"V" + b"%016x" % len(payload) + payload


def _finish_like_interpreter_exit() -> None:
    """What a real interpreter does at exit: join non-daemon threads (the ``threading.stack_size``
    idiom runs ``main`` in one), run atexit handlers, flush the standard streams."""
    threading = sys.modules.get("threading")  # no threads without it
    if threading is not None:
        threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass


def _exit_status_of(e: SystemExit) -> int:
    code = e.code
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return EXIT_EXCEPTION


def _lock_down(uid: int | None, syscall_filter, setup_fd: int) -> None:
    """The last steps before the program: its uid, no capabilities, the seccomp filter. Then tell the
    fork-server the sandbox is complete (the program cannot fake this: the descriptor is closed)."""
    try:
        if uid is not None:
            _become_test_user(uid)  # leaving uid 0 clears every capability
        else:
            _drop_capabilities()
        if syscall_filter is not None:
            syscall_filter.install(_LIBC)
    except BaseException as e:
        os.write(setup_fd, f"lock-down failed: {type(e).__name__}: {e}".encode()[:4000])
        os._exit(EXIT_EXCEPTION)
    os.write(setup_fd, b"ok")
    os.close(setup_fd)


def run_child(code, *, warm: Warm, call_fn: str | None, stdin_fd: int, stdout_fd: int,
              stderr_fd: int, result_fd: int, workdir: str, cpu_limit_s: int, memory_bytes: int,
              output_bytes: int, nproc: int, uid: int | None, syscall_filter, setup_fd: int) -> None:
    """Never returns: runs ``code`` (a compiled module) and ``os._exit``s with a status.

    ``call_fn`` None: standard-input mode, the program runs as the ``__main__`` module (a real one:
    pickle finds the classes it defines). Otherwise call-based: stdin_fd holds the arguments (one JSON
    value per line); the program's module (``solution``) is run, then ``Solution().<call_fn>(*args)``
    (or the top-level function) is called
    and its JSON written to ``result_fd``; the program's own stdout goes to ``stdout_fd`` (discarded by
    the judge). ``setup_fd`` receives "ok" once the sandbox is complete, before any program code runs.
    """
    status = EXIT_EXCEPTION
    private = -1
    try:
        os.setsid()
        args_text = None
        if call_fn is not None:
            with os.fdopen(os.dup(stdin_fd), "rb") as f:
                args_text = f.read().decode()
            stdin_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin_fd, 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        # The private result descriptor, in both modes (stdio uses it only to report MemoryError).
        private = os.dup(result_fd)
        # Only 0, 1, 2, the private result descriptor and the set-up pipe survive: the program must
        # not reach the fork-server's channel to the judge.
        keep = sorted({0, 1, 2, private, setup_fd})
        lo = 3
        for k in keep:
            if k >= lo:
                os.closerange(lo, k)
                lo = k + 1
        os.closerange(lo, 1 << 16)
        os.chdir(workdir)
        # The fork-server's environment is already CHILD_ENV (prepare); only the paths differ.
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir
        # Locked down first: a memory limit below what the interpreter already maps then fails the
        # program (MemoryError: -1), not the sandbox's set-up.
        _lock_down(uid, syscall_filter, setup_fd)
        _set_limits(cpu_limit_s, memory_bytes, output_bytes, nproc)
        sys.path[0] = workdir
        sys.setrecursionlimit(RECURSION_LIMIT)
        if call_fn is None:
            mod = warm.enter("__main__")
            try:
                exec(code, mod.__dict__)
                status = EXIT_OK
            except SystemExit as e:
                status = _exit_status_of(e)
            _finish_like_interpreter_exit()
        else:
            args = [json.loads(line) for line in args_text.split("\n") if line.strip()]
            del args_text
            g = warm.enter("solution").__dict__
            try:
                exec(code, g)
                sol = g.get("Solution")
                fn = getattr(sol(), call_fn) if isinstance(sol, type) else g[call_fn]
                value = fn(*args)
                frame = _encode_result(value)
                # A program that closed or replaced our descriptor makes this fail: no result.
                view = memoryview(frame)
                while view:
                    view = view[os.write(private, view):]
                status = EXIT_OK
            except SystemExit:
                status = EXIT_EXCEPTION  # exiting before returning the answer is a failure
            try:
                sys.stdout.flush()
            except Exception:
                pass
    except MemoryError:
        # Reported on the private descriptor, so that a program's own ``sys.exit(n)`` never reads
        # as a memory verdict; a program faking this only earns another failure.
        try:
            os.write(private, MEMORY_FRAME)
        except BaseException:
            pass
        status = EXIT_EXCEPTION
    except BaseException:
        try:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
        status = EXIT_EXCEPTION
    finally:
        os._exit(status)
