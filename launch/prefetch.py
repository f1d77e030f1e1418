"""Fetch a run's model and data once, before the job: ``python launch/prefetch.py --config FILE [key=value ...]``.

Downloads every input the config names (``model.hub_id`` into ``model.path``, the training dataset
into ``data.train_path``, LiveCodeBench into ``eval.path`` when the run evaluates) with
``huggingface_hub.snapshot_download``, on a machine that reaches the hub and mounts the storage every
node sees (on the recipe's cluster: ``ray exec cluster.yaml "cd ~/nous-ray && ~/venv/bin/python
launch/prefetch.py --config configs/nouscoder_14b.yaml"``). Downloads resume where an interrupted one
stopped; a second run fetches nothing new. Gated or private repositories need ``HF_TOKEN``.
``--dry-run`` prints the plan and what is already in place, and downloads nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch.config_cli import config_from_argv  # noqa: E402
from nous_ray.inputs import Fetch, missing_inputs, prefetch_plan  # noqa: E402


def describe(f: Fetch) -> str:
    rev = f"@{f.revision}" if f.revision else ""
    return f"{f.key}: {f.repo_type} {f.repo_id}{rev} [{', '.join(f.allow_patterns)}] -> {f.local_dir}"


def fetch(f: Fetch) -> str:
    # The stack's environment sets HF_HUB_OFFLINE=1 for jobs; this is the one place that downloads.
    os.environ["HF_HUB_OFFLINE"] = "0"
    from huggingface_hub import snapshot_download

    Path(f.local_dir).mkdir(parents=True, exist_ok=True)
    return snapshot_download(f.repo_id, repo_type=f.repo_type, revision=f.revision, local_dir=f.local_dir,
                             allow_patterns=list(f.allow_patterns))


def main(argv=None, fetch_one=fetch, out=print) -> int:
    args, cfg = config_from_argv("prefetch", __doc__, argv, "print the plan, download nothing",
                                 "key=value overrides, the same as the job's")
    if cfg is None:
        return 2
    try:
        plan = prefetch_plan(cfg)
    except ValueError as e:
        print(f"prefetch: {e}", file=sys.stderr)
        return 2
    if not plan:
        out("prefetch: nothing to fetch (built-in tiny model and data)")
        return 0
    missing_before = missing_inputs(cfg)
    for f in plan:
        present = not any(line.startswith(f"{f.key}=") for line in missing_before)
        out(f"{'present' if present else 'missing'} {describe(f)}")
    if args.dry_run:
        return 0
    for f in plan:
        out(f"fetching {f.key} ...")
        fetch_one(f)
    still = missing_inputs(cfg)
    if still:
        print("prefetch: downloaded, but still incomplete: " + "; ".join(still), file=sys.stderr)
        return 1
    out("prefetch: every input is in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
