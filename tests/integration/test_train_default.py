"""The default job, exactly as a user runs it (`python launch/train.py`), learns."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nous_ray.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_default_run_learns(tmp_path):
    proc = subprocess.run([sys.executable, "launch/train.py", f"run.run_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for r in read_metrics(tmp_path) if "reward_mean" in r]
    assert [r["step"] for r in rows] == list(range(1, 61))
    first = sum(r["reward_mean"] for r in rows[:10]) / 10
    last = sum(r["reward_mean"] for r in rows[-10:]) / 10
    assert last > first + 0.15, (first, last)
    # The staleness bound held on every trained sample.
    assert max(r["staleness_max"] for r in rows) <= 2
    # Every generated sample is accounted for.
    s = json.loads((tmp_path / "summary.json").read_text())
    c = s["counters"]
    assert c["generated"] == c["trained"] + c["filtered"] + c["dropped_stale"] + c["dropped_infra"] \
        + c["dropped_resume"] + c["dropped_truncated"] + s["pending"]
    # 16 groups of 8 per step, less the truncated responses (overlong filtering leaves them out).
    assert c["trained"] == sum(r["batch_samples"] for r in rows) and all(r["batch_samples"] <= 16 * 8 for r in rows)
    # One progress line per step, and periodic evaluation logged to the same sinks.
    assert sum(line.startswith("step ") for line in proc.stdout.splitlines()) == 60
    evals = [r for r in rows if "eval/pass@1" in r]
    assert [r["step"] for r in evals] == [20, 40, 60]
    assert (tmp_path / "tb").is_dir() and any((tmp_path / "tb").iterdir())
    assert (tmp_path / "checkpoints" / "step_000060" / "COMPLETE").exists()
