"""Checkpoint folders of a run: ``<run_dir>/checkpoints/step_N/``.

A folder holds the learner's sharded state (``learner/``, written by the learner ranks), the
driver's state (``driver_state.json``) and, written last, the ``COMPLETE`` marker: a crash while
writing leaves a folder without it, which resume ignores. Only the newest ``keep`` complete folders
are kept; torn folders older than the newest complete one are removed with them.

A marker is not proof: a disk that filled up, or a copy that was cut short, leaves a folder that has
it and still cannot be loaded. :func:`find_resume_point` verifies each candidate
(:func:`checkpoint_problem`) and falls back to the newest one that holds up, saying which it skipped
and why. Checkpoints newer than the one a run resumes from hold weights the run no longer has;
:func:`discard_after` moves them to ``checkpoints/discarded/`` so that neither pruning nor a later
resume ever takes them for this run's.

Every learner rank writes its own shards from its own node and the driver writes the marker and
prunes, so all of them must see one directory: the run starts only after the probe of
:mod:`nous_ray.run_storage` proved that ``run_dir`` is shared, and then the driver's pruning
removes the ranks' shards where they are.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_DONE = "COMPLETE"
DRIVER_STATE = "driver_state.json"
DISCARDED = "discarded"
DRIVER_STATE_KEYS = ("step", "sampler", "counters", "rng")


class ResumeError(RuntimeError):
    """``trainer.resume`` cannot be honoured; the message names the checkpoint, the file and the fix."""


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    return sorted((p for p in root.glob("step_*") if (p / CHECKPOINT_DONE).exists()),
                  key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def start_checkpoint(run_dir: Path, step: int) -> Path:
    """An empty folder for step ``step`` (a torn earlier attempt at the same step is removed)."""
    path = checkpoint_dir(run_dir, step)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def finish_checkpoint(path: Path, driver_state: dict, keep: int) -> None:
    """Driver state, then the COMPLETE marker, then drop all but the newest ``keep`` checkpoints."""
    (path / DRIVER_STATE).write_text(json.dumps(driver_state))
    (path / CHECKPOINT_DONE).write_text(str(driver_state.get("step", "")))
    prune_checkpoints(path.parent.parent, keep)


def _step_of(p: Path) -> int:
    try:
        return int(p.name.split("_")[1])
    except (IndexError, ValueError):
        return -1


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` complete checkpoints (``keep`` <= 0: keep all), and every
    torn folder older than the newest complete one; returns what was removed."""
    done = complete_checkpoints(run_dir)
    if not done:
        return []
    gone = done[:-keep] if keep > 0 else []
    newest = _step_of(done[-1])
    gone += [p for p in (Path(run_dir) / "checkpoints").glob("step_*")
             if not (p / CHECKPOINT_DONE).exists() and _step_of(p) < newest]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from (naming the file); None when it can.

    Reads the driver state and the learner's index of its shards, never the weights themselves.
    """
    path = Path(path)
    if not (path / CHECKPOINT_DONE).exists():
        return f"no {CHECKPOINT_DONE} marker in {path} (its save did not finish)"
    state_file = path / DRIVER_STATE
    try:
        text = state_file.read_text()
    except FileNotFoundError:
        return f"{state_file} is missing"
    if not text.strip():
        return f"{state_file} is empty"
    try:
        state = json.loads(text)
    except ValueError as e:
        return f"{state_file} is not JSON ({e})"
    missing = [k for k in DRIVER_STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        return f"{state_file} lacks {missing}"
    if state["step"] != _step_of(path):
        return f"{state_file} says step {state['step']}, the folder is {path.name}"
    from nous_ray.train.checkpoint import checkpoint_problem as learner_problem

    return learner_problem(path / "learner")


@dataclass
class ResumePoint:
    """The checkpoint a run resumes from (None: it starts from the beginning), and the newer complete
    checkpoints that were skipped as broken, each with the reason."""

    path: Path | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def find_resume_point(run_dir: Path, how: str) -> ResumePoint:
    """``trainer.resume``: ``never`` -> start over; ``auto`` -> the newest complete checkpoint that
    :func:`checkpoint_problem` finds whole (none at all: start over); a path -> that checkpoint.

    Raises :class:`ResumeError` when a named checkpoint is broken, or when ``auto`` finds complete
    checkpoints and none of them whole (starting over would silently throw the run away).
    """
    if how == "never":
        return ResumePoint(None)
    if how != "auto":
        path = Path(how)
        why = checkpoint_problem(path)
        if why is not None:
            raise ResumeError(f"trainer.resume={how!r} cannot be resumed from: {why}")
        return ResumePoint(path)
    skipped = []
    for path in reversed(complete_checkpoints(run_dir)):
        why = checkpoint_problem(path)
        if why is None:
            return ResumePoint(path, skipped)
        skipped.append((path, why))
    if skipped:
        raise ResumeError(
            f"trainer.resume=auto: no checkpoint in {Path(run_dir) / 'checkpoints'} can be resumed from: "
            + "; ".join(f"{p.name}: {why}" for p, why in skipped)
            + ". Repair or remove them, or start over with trainer.resume=never")
    return ResumePoint(None)


def discard_after(run_dir: Path, step: int) -> list[Path]:
    """Move every checkpoint folder of a step after ``step`` (torn, broken or whole) to
    ``checkpoints/discarded/``, replacing an earlier one of the same name; returns the new places.

    A run that resumes from ``step`` (``-1``: starts over) trains those steps again with other
    weights: left in place, the old folders would be pruned in place of the new ones, or resumed
    from by a later ``trainer.resume=auto``.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    moved = []
    for p in sorted(root.glob("step_*"), key=_step_of):
        if _step_of(p) <= step:
            continue
        dest = root / DISCARDED / p.name
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(exist_ok=True)
        p.rename(dest)
        moved.append(dest)
    return moved


def read_driver_state(path: Path) -> dict:
    return json.loads((path / DRIVER_STATE).read_text())
