"""A seccomp filter for a test's process: no new processes (threads stay allowed), no new namespaces,
no kernel state that would outlive the test or memory its address-space limit would not see.

Standard library only (the fork-server imports it). The filter is a classic BPF program, built once
in the fork-server and installed in each child just before the program runs. What it denies, and why:

- ``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD`` (EPERM) and ``clone3`` (ENOSYS, so the C
  library falls back to ``clone`` for threads): a test is one process, so its CPU time and memory are
  exactly what ``wait4`` and ``RLIMIT_AS`` see, and nothing it starts can outlive it. This is the rule
  LiveCodeBench's own guard states (it sets ``os.fork`` and ``subprocess.Popen`` to None), enforced by
  the kernel instead of by Python attributes.
- ``unshare``, ``setns``: no namespaces of its own (a user namespace would give it capabilities).
- ``add_key``, ``request_key``, ``keyctl``: kernel keyrings are shared by every test of a sandbox.
- ``shmget``, ``semget``, ``msgget``, ``mq_open``: SysV and POSIX message-queue objects live in the
  sandbox's IPC namespace, which every test of the sandbox shares; their memory is not charged to the
  test. POSIX shared memory and semaphores are files in ``/dev/shm``, fresh for every test.
- ``memfd_create``, ``memfd_secret``: memory outside the address-space limit.

Every other architecture's system calls (i386 through ``int 0x80``, x32) kill the process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

CLONE_THREAD = 0x00010000
# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# (audit arch, syscall numbers) per machine; aarch64 has no fork/vfork system calls.
_ARCHES = {
    "x86_64": (0xC000003E, {
        "clone": 56, "fork": 57, "vfork": 58, "clone3": 435, "unshare": 272, "setns": 308,
        "add_key": 248, "request_key": 249, "keyctl": 250, "shmget": 29, "semget": 64, "msgget": 68,
        "mq_open": 240, "memfd_create": 319, "memfd_secret": 447}),
    "aarch64": (0xC00000B7, {
        "clone": 220, "clone3": 435, "unshare": 97, "setns": 268, "add_key": 217, "request_key": 218,
        "keyctl": 219, "shmget": 194, "semget": 190, "msgget": 186, "mq_open": 180, "memfd_create": 279,
        "memfd_secret": 447}),
}
_X32_BIT = 0x40000000  # x86_64: system calls of the x32 ABI

DENIED = {name: errno.EPERM for name in (
    "fork", "vfork", "unshare", "setns", "add_key", "request_key", "keyctl", "shmget", "semget", "msgget",
    "mq_open", "memfd_create", "memfd_secret")}
DENIED["clone3"] = errno.ENOSYS

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # struct seccomp_data (little-endian: low word of args[0])
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Filter:
    """A BPF program ready for ``prctl(PR_SET_SECCOMP)``; keeps its buffers alive."""

    def __init__(self, insns: list[tuple[int, int, int, int]]):
        raw = b"".join(struct.pack("<HBBI", *i) for i in insns)
        self._buf = ctypes.create_string_buffer(raw, len(raw))
        self.prog = _SockFprog(len(insns), ctypes.cast(self._buf, ctypes.c_void_p))
        self.size = len(insns)

    def install(self, libc=None) -> None:
        """Apply the filter to the calling thread and its future threads, for good (no_new_privs first)."""
        libc = libc or ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
                libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self.prog), 0, 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"cannot install the seccomp filter: {errno.errorcode.get(e, e)}")


def build(deny: dict[str, int] = DENIED, clone_allowed_only_with: int | None = CLONE_THREAD,
          clone_denied_with: int = 0, machine: str | None = None) -> Filter | None:
    """The filter for ``machine`` (this one by default); None where the machine is not known.

    ``deny``: system call name -> errno. ``clone`` is allowed only when its flags contain
    ``clone_allowed_only_with`` (None: always) and none of ``clone_denied_with``.
    """
    arch = _ARCHES.get(machine or os.uname().machine)
    if arch is None:
        return None
    audit, nrs = arch
    p: list[tuple[int, int, int, int]] = [(_LD_W_ABS, 0, 0, _OFF_ARCH), (_JEQ, 1, 0, audit),
                                          (_RET, 0, 0, _KILL_PROCESS), (_LD_W_ABS, 0, 0, _OFF_NR)]
    if audit == _ARCHES["x86_64"][0]:
        p += [(_JGE, 0, 1, _X32_BIT), (_RET, 0, 0, _KILL_PROCESS)]
    for name, err in sorted(deny.items()):
        if name in nrs:
            p += [(_JEQ, 0, 1, nrs[name]), (_RET, 0, 0, _ERRNO | err)]
    # clone: load its flags, decide, return; any other call skips the block with A still = nr.
    block = [(_LD_W_ABS, 0, 0, _OFF_ARG0)]
    if clone_denied_with:
        block += [(_JSET, 0, 1, clone_denied_with), (_RET, 0, 0, _ERRNO | errno.EPERM)]
    if clone_allowed_only_with is not None:
        block += [(_JSET, 1, 0, clone_allowed_only_with), (_RET, 0, 0, _ERRNO | errno.EPERM)]
    block += [(_RET, 0, 0, _ALLOW)]
    p += [(_JEQ, 0, len(block), nrs["clone"])] + block
    p += [(_RET, 0, 0, _ALLOW)]
    return Filter(p)

