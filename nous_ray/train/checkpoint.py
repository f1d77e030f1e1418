"""Sharded checkpoints of model and optimizer with torch.distributed.checkpoint (DCP).

Every rank writes its own shards into ``<path>.tmp``; after a barrier rank 0 renames the folder to
``<path>``, so a crash mid-save never leaves a folder at ``<path>`` that looks complete. Across
machines ``path`` must be on storage all ranks share. The world size may differ between save and
load (DCP reshards).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_state_dict,
)

__all__ = ["save_checkpoint", "load_checkpoint", "read_state", "checkpoint_problem", "full_model_state",
           "full_optimizer_state", "STATE_FILE"]

STATE_FILE = "learner_state.json"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(path: str | Path, model, optimizer, state: dict[str, Any]) -> Path:
    """Save sharded model + optimizer state and a small JSON ``state`` (step counters, caller data)."""
    final = Path(path)
    tmp = final.with_name(final.name + ".tmp")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    if _rank() == 0:
        (tmp / STATE_FILE).write_text(json.dumps(state))
    _barrier()
    if _rank() == 0:
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def read_state(path: str | Path) -> dict[str, Any]:
    """The JSON state saved with a checkpoint; a clear error if ``path`` is not a complete one."""
    p = Path(path)
    if not (p / STATE_FILE).exists():
        raise FileNotFoundError(f"load_checkpoint: {p} is not a complete learner checkpoint (no {STATE_FILE})")
    return json.loads((p / STATE_FILE).read_text())


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be loaded, without loading it; None when it looks whole.

    Checks what a crash or a full disk leaves behind: the state file (present, a JSON object), DCP's
    ``.metadata`` (present, readable), and every shard file the metadata points into (present and
    long enough for each piece read from it: a truncated shard fails here, not in the middle of a load).
    """
    p = Path(path)
    if not p.is_dir():
        return f"no folder {p}"
    try:
        state = json.loads((p / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"{p / STATE_FILE} is missing"
    except (OSError, ValueError) as e:
        return f"{p / STATE_FILE} is not JSON ({type(e).__name__}: {e})"
    if not isinstance(state, dict):
        return f"{p / STATE_FILE} is not a JSON object"
    if not (p / ".metadata").is_file():
        return f"{p / '.metadata'} is missing (torch.distributed.checkpoint's index of the shards)"
    try:
        storage = dcp.FileSystemReader(str(p)).read_metadata().storage_data
    except Exception as e:  # unpickling a torn file raises anything
        return f"{p / '.metadata'} cannot be read ({type(e).__name__}: {e})"
    needed: dict[str, int] = {}
    for info in (storage or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        f = p / name
        if not f.is_file():
            return f"{f} is missing"
        have = f.stat().st_size
        if have < size:
            return f"{f} is truncated ({have} of at least {size} bytes)"
    return None


def load_checkpoint(path: str | Path, model, optimizer) -> dict[str, Any]:
    """Load what :func:`save_checkpoint` wrote into ``model`` and ``optimizer``; return its state."""
    p = Path(path)
    state = read_state(p)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    sd = {"model": model_sd, "optim": optim_sd}
    dcp.load(sd, checkpoint_id=str(p))
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    return state


def full_model_state(model) -> dict:
    """The unsharded model state dict on CPU, on rank 0 (other ranks get {}); all ranks must call."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model, optimizer) -> dict:
    """The unsharded optimizer state dict on CPU, keyed by parameter names; rank 0 only."""
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
