"""Shared by the sandbox tests: problems in a line, and the processes below a fork-server."""

import os

from nous_ray.data.problem import Problem, TestCase


def stdin_problem(tests, time_limit_s=1.0, memory_limit_mb=512, **kw):
    return Problem("p-stdin", "test", "statement", [TestCase(i, o) for i, o in tests],
                   time_limit_s=time_limit_s, memory_limit_mb=memory_limit_mb, **kw)


def call_problem(fn_name, tests, time_limit_s=1.0, memory_limit_mb=512, **kw):
    return Problem("p-call", "test", "statement", [TestCase(i, o, "functional") for i, o in tests],
                   fn_name=fn_name, time_limit_s=time_limit_s, memory_limit_mb=memory_limit_mb, **kw)


def descendants(pid):
    """Host pids of every process below ``pid`` (a worker's bubblewrap: the fork-server, its tests)."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        out += kids
        frontier = kids
    return out
