"""The run directory: where ``run.run_dir`` resolves, and the check that every node sees the same one.

A run writes its checkpoints from several processes on several nodes: each learner rank writes its
own DCP shards, rank 0 renames the folder, the driver writes its state and the ``COMPLETE`` marker
and prunes old checkpoints. That only works if every node sees one directory (a shared file system
mounted at the same path); on a node-local disk each node would hold a different part of every
checkpoint and resume would find none complete. So at start-up the driver writes a probe file, every
learner rank reads it back and writes its own answer, and the driver reads the answers back
(:func:`write_probe`, :func:`answer_probe`, :func:`check_probe`); any miss is an error that names
the fix.

A relative ``run.run_dir`` is taken from the current directory, except inside Ray's temporary copy
of a job's working directory (``ray job submit --working-dir``), which changes with every code
change and goes away with the Ray session: there it is an error.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

PROBE_DIR = ".probe"
SHARED_FIX = ("mount one shared file system (FSx for Lustre, EFS, NFS) at the same path on every node and "
              "set run.run_dir to an absolute path on it, e.g. run.run_dir=/fsx/nous-ray/runs/<name> "
              "(cluster.yaml mounts FSx at /fsx)")


class RunDirError(RuntimeError):
    """The run directory cannot hold a multi-node run's checkpoints."""


def in_ray_job_copy(cwd: str | Path) -> bool:
    """Whether ``cwd`` is Ray's per-session copy of a job's ``--working-dir``."""
    parts = Path(cwd).resolve().parts
    return "runtime_resources" in parts and any(p.startswith("_ray_pkg_") for p in parts)


def resolve_run_dir(run_dir: str, cwd: str | Path | None = None) -> Path:
    """The absolute run directory for ``run.run_dir`` (relative: from ``cwd``, default the current one)."""
    p = Path(run_dir)
    if p.is_absolute():
        return p
    cwd = Path(cwd or os.getcwd())
    if in_ray_job_copy(cwd):
        raise RunDirError(
            f"run.run_dir={run_dir!r} is relative, and this job runs in Ray's temporary copy of its working "
            f"directory ({cwd}), which changes with every code change (resume would find nothing) and is "
            f"deleted with the Ray session: {SHARED_FIX}")
    return cwd / p


@dataclass(frozen=True)
class ProbeAnswer:
    """What one process saw of the driver's probe file, and where it wrote its own."""

    who: str
    host: str
    saw: bool
    wrote: str = ""
    error: str = ""


def write_probe(run_dir: str | Path) -> str:
    """The driver's side: write a fresh probe file into ``run_dir``; returns its token."""
    token = uuid.uuid4().hex
    d = Path(run_dir) / PROBE_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / f"driver-{token}").write_text(token)
    return token


def answer_probe(run_dir: str | Path, token: str, who: str) -> ProbeAnswer:
    """A learner rank's side, on its node: read the driver's probe and write an answer beside it."""
    d = Path(run_dir) / PROBE_DIR
    host = socket.gethostname()
    try:
        saw = (d / f"driver-{token}").read_text() == token
    except OSError:
        saw = False
    try:
        d.mkdir(parents=True, exist_ok=True)
        answer = d / f"{who}-{token}"
        answer.write_text(token)
        return ProbeAnswer(who, host, saw, wrote=str(answer))
    except OSError as e:
        return ProbeAnswer(who, host, saw, error=f"cannot write there ({e.strerror or e})")


def check_probe(run_dir: str | Path, token: str, answers: list[ProbeAnswer]) -> None:
    """The driver's side again: every answer must have seen the probe, and the driver must see every
    answer file. Removes the probe files; raises :class:`RunDirError` naming each process that missed."""
    d = Path(run_dir) / PROBE_DIR
    problems = []
    for a in answers:
        if a.error:
            problems.append(f"{a.who} on {a.host}: {a.error}")
        elif not a.saw:
            problems.append(f"{a.who} on {a.host} does not see the driver's probe file")
        elif not (d / f"{a.who}-{token}").is_file():
            problems.append(f"the driver does not see the file {a.who} on {a.host} wrote")
    for f in d.glob(f"*-{token}"):
        f.unlink(missing_ok=True)
    if problems:
        raise RunDirError(f"run.run_dir={str(run_dir)!r} is not one directory shared by every node: "
                          + "; ".join(problems) + f". Fix: {SHARED_FIX}")
