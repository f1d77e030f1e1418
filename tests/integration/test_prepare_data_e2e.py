"""``launch/prepare_data.py`` end to end: the difficulty stage on the tiny model with real rollout
workers (Ray, vLLM) and the real judge, its saved pass counts reused by the next run; and a training
run on the prepared fixture file (``data.train=jsonl data.train_path=DIR/problems.jsonl``). Resuming
from a torn pass-count file is covered on the same code with scripted samples
(tests/unit/test_prepare_difficulty.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nous_ray.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "data" / "prepare"
EVAL = f"lcb:{FIX / 'lcb_eval.jsonl'}"
N = 4


def prepare(out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "launch/prepare_data.py", "--out", str(out), "--eval", EVAL, "--no-progress", *args]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def pass_counts(out: Path) -> dict:
    return {r["id"]: r for r in map(json.loads, (out / "pass_counts.jsonl").read_text().splitlines()) if r}


@pytest.mark.slow
def test_difficulty_on_the_tiny_model_saves_and_reuses_pass_counts(tmp_path):
    out = tmp_path / "prepared"
    args = ["--train", "tiny", "prepare.min_tests=4", "prepare.difficulty=true", f"prepare.difficulty_samples={N}",
            "rollout.max_prompts_per_worker=8"]
    first = prepare(out, *args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    assert "starting 1 rollout worker" in first.stderr
    report = json.loads((out / "report.json").read_text())
    d = report["stages"]["difficulty"]
    assert d["in"] == 16 and d["info"]["sampled"] == 16 and d["info"]["reused"] == 0
    counts = pass_counts(out)
    assert len(counts) == 16 and all(r["n"] == N and r["valid"] == N and 0 <= r["passed"] <= N for r in counts.values())
    # The report's decisions are the saved counts' (0/N never, N/N always solved).
    expect = {"never_solved": sum(r["passed"] == 0 for r in counts.values()),
              "always_solved": sum(r["passed"] == N for r in counts.values())}
    assert d["dropped"] == {k: v for k, v in expect.items() if v}
    assert d["out"] == 16 - sum(expect.values())
    kept = [json.loads(x)["id"] for x in (out / "problems.jsonl").read_text().splitlines()]
    assert kept == [pid for pid, r in counts.items() if 0 < r["passed"] < N]
    # The tiny model's random weights answer with no program at all.
    assert sum(r["verdicts"].get("no_code", 0) for r in counts.values()) >= 16 * N // 2

    # Everything saved: no worker starts, nothing is sampled, verification is reused too.
    third = prepare(out, *args)
    assert third.returncode == 0, third.stderr[-5000:]
    assert "rollout worker" not in third.stderr
    r3 = json.loads((out / "report.json").read_text())["stages"]
    assert (r3["difficulty"]["info"]["sampled"], r3["difficulty"]["info"]["reused"]) == (0, 16)
    assert r3["verify_tests"]["info"]["judged"] == 0 and r3["verify_tests"]["info"]["reused"] == 16


@pytest.mark.slow
def test_training_runs_on_the_prepared_file(tmp_path):
    out = tmp_path / "prepared"
    prep = prepare(out, "--train", f"deepcoder/taco:{FIX / 'deepcoder'}",
                   "--train", f"deepcoder/primeintellect:{FIX / 'deepcoder'}",
                   "--train", f"lcb:{FIX / 'lcb_train.jsonl'}")
    assert prep.returncode == 0, prep.stderr[-5000:]
    assert "verify_tests                10     7" in prep.stdout  # the printed table
    run_dir = tmp_path / "run"
    # The random tiny model fails every sample, most by running to the length limit: keep all-failed
    # groups (dynamic sampling off) and truncated samples (overlong filter off) so that both steps train
    # whole batches; its prompts are the fixtures' full statements (max_model_len).
    cmd = [sys.executable, "launch/train.py", f"run.run_dir={run_dir}", "data.train=jsonl",
           f"data.train_path={out / 'problems.jsonl'}", "trainer.steps=2", "init.sft_steps=0", "eval.every_steps=0",
           "algo.dynamic_sampling=false", "algo.overlong_filter=false", "trainer.prompts_per_step=4", "rollout.group_size=4",
           "learner.num_ranks=1", "learner.minibatches=1", "rollout.max_model_len=1024",
           "learner.micro_batch_tokens=2048", "trainer.checkpoint_every=0"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "| 7 problems |" in proc.stdout
    rows = [r for r in read_metrics(run_dir) if "reward_mean" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert json.loads((run_dir / "summary.json").read_text())["counters"]["trained"] == 2 * 4 * 4
