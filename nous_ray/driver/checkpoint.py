"""Checkpoint folders of a run: ``<run_dir>/checkpoints/step_N/``.

A folder holds the learner's sharded state (``learner/``, written by the learner ranks), the
driver's state (``driver_state.json``) and, written last, the ``COMPLETE`` marker: a crash while
writing leaves a folder without it, which resume ignores. Only the newest ``keep`` complete folders
are kept; torn folders older than the newest complete one are removed with them.

Every learner rank writes its own shards from its own node and the driver writes the marker and
prunes, so all of them must see one directory: the run starts only after the probe of
:mod:`nous_ray.run_storage` proved that ``run_dir`` is shared, and then the driver's pruning
removes the ranks' shards where they are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHECKPOINT_DONE = "COMPLETE"
DRIVER_STATE = "driver_state.json"


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


def find_resume_point(run_dir: Path, how: str) -> Path | None:
    """``trainer.resume``: ``never`` -> None; ``auto`` -> the newest complete checkpoint (or None);
    a path -> that checkpoint, which must be complete."""
    if how == "never":
        return None
    path = latest_checkpoint(run_dir) if how == "auto" else Path(how)
    if path is not None and not (path / CHECKPOINT_DONE).exists():
        raise FileNotFoundError(f"trainer.resume={how!r}: {path} is not a complete checkpoint "
                                f"(no {CHECKPOINT_DONE} marker)")
    return path


def read_driver_state(path: Path) -> dict:
    return json.loads((path / DRIVER_STATE).read_text())
