"""Issue 16 as a user meets it, on real `launch/train.py` and `launch/eval.py` processes (tiny default):

- a run whose trainer.steps is not a multiple of checkpoint_every ends with its last step saved, and
  prints nothing after "done:" (item 5, item 7);
- the README's evaluation command on that checkpoint works as written (item 6), twice (the second
  resumes everything);
- a truncated newest checkpoint is skipped with a warning, the run resumes from the one before, moves the
  broken one aside, and evaluates the step it trains again afresh (items 2, 3);
- Ctrl-C during an evaluation prints one line and no traceback; the same command resumes (item 6);
- SIGTERM during the warm start stops it within a step; the re-run's metrics hold its rows once (item 4).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from process_helpers import signal_at_line

from nous_ray.driver.checkpoint import checkpoint_dir, complete_checkpoints
from nous_ray.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

FAST = ["algo.dynamic_sampling=false", "trainer.prompts_per_step=4", "rollout.max_prompts_per_worker=4",
        "rollout.group_size=4", "learner.minibatches=1", "eval.every_steps=2", "eval.n_samples=2"]
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}


def _train(run_dir, *extra, timeout=900):
    """A real `launch/train.py`; stdout and stderr in one stream, in the order they were written."""
    return subprocess.run([sys.executable, "launch/train.py", f"run.run_dir={run_dir}", *FAST, *extra], cwd=ROOT,
                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def _ok(proc):
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0, "\n".join(line for line in lines if " INFO " not in line)[-8000:]
    return lines


def test_last_step_saved_readme_eval_works_and_a_truncated_checkpoint_is_skipped(tmp_path):
    run = tmp_path / "run"
    first = _train(run, "trainer.steps=4", "trainer.checkpoint_every=3", "init.sft_steps=5", "init.sft_check_every=5")
    out = _ok(first)
    assert [p.name for p in complete_checkpoints(run)] == ["step_000003", "step_000004"]  # 4 is the last step
    assert out[-2] == f"checkpoint written: {checkpoint_dir(run, 4)}"
    assert out[-1].startswith("done: 4 steps in "), "\n".join(out[-20:])  # nothing after it on either stream
    assert not any("Error" in line or "Traceback" in line for line in out), first.stdout[-6000:]
    assert (run / "eval" / "step_000004" / "summary.json").exists()

    # The README's command, as written, on the run's last checkpoint: periodic evaluation already wrote
    # run/eval/step_000004 with the training engines' settings; this one has a folder of its own.
    ckpt = checkpoint_dir(run, 4)
    readme = [sys.executable, "launch/eval.py", "--model", str(ckpt)]
    evaluated = subprocess.run(readme, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-5000:]
    standalone = run / "eval_standalone" / "step_000004"
    assert evaluated.stdout.splitlines()[-1].startswith("pass@1 ") and str(standalone) in evaluated.stdout
    again = subprocess.run(readme, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "eval: every problem is already in results.jsonl; no engine started" in again.stderr
    assert "Started a local Ray" not in again.stderr  # the export is reused, nothing to start
    # --out is honoured; a folder of results made otherwise is refused before anything starts.
    other = subprocess.run(readme + ["--out", str(run / "eval" / "step_000004")], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=900)
    assert other.returncode == 2
    err = other.stderr.strip().splitlines()
    assert err[-1].startswith(f"eval: {run / 'eval' / 'step_000004' / 'results.jsonl'} holds results made with "
                              f"other settings (")
    assert "already in results.jsonl" not in other.stderr and "Started a local Ray" not in other.stderr

    # A truncated shard in the newest checkpoint: skipped with the reason, resumed from step 3.
    shard = ckpt / "learner" / "__0_0.distcp"
    size = shard.stat().st_size
    os.truncate(shard, size - 100)
    second = _train(run, "trainer.steps=5", "trainer.checkpoint_every=3", "init.sft_steps=5",
                    "init.sft_check_every=5")
    out = _ok(second)
    assert f"warning: skipping checkpoint {ckpt}: {shard} is truncated ({size - 100} of at least {size} bytes)" in out
    assert (f"moved 1 checkpoint(s) after the resume point to {run / 'checkpoints' / 'discarded'} (weights this run "
            f"does not continue): step_000004") in out
    assert f"resumed from {checkpoint_dir(run, 3)} at step 3" in out
    # Step 4 is trained again by other weights: its evaluation is made again, not reused.
    assert (f"eval at step 4: {run / 'eval' / 'step_000004'} holds results of the weights of an earlier run "
            f"(rolled back since); evaluating these weights afresh") in out
    summary = json.loads((run / "eval" / "step_000004" / "summary.json").read_text())
    assert summary["run"]["problems_resumed"] == 0
    assert [p.name for p in complete_checkpoints(run)][-1] == "step_000005"
    assert [r["step"] for r in read_metrics(run) if r["step"] > 0] == [1, 2, 3, 4, 5]


def _eval_cmd(out):
    return [sys.executable, "launch/eval.py", "--model", "tiny", "--no-progress", "--out", str(out),
            "eval.dataset=tiny", "eval.n_samples=16", "eval.max_tokens=64", "rollout.max_prompts_per_worker=1"]


def test_ctrl_c_during_evaluation_prints_one_line_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "eval"
    # Its own session, so Ctrl-C reaches the whole process group, as a terminal's does.
    proc = subprocess.Popen(_eval_cmd(out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)

    def ctrl_c():  # to the whole process group, as a terminal's Ctrl-C, a moment into the generation
        time.sleep(2.0)
        os.killpg(proc.pid, signal.SIGINT)

    lines = signal_at_line(proc, proc.stderr, "eval: 16 problems x 16 samples", ctrl_c)
    assert proc.returncode == 130, "\n".join(lines[-30:])
    assert not any("Traceback" in line for line in lines), "\n".join(lines[-40:])
    last = lines[-1]
    assert last.startswith("eval: interrupted; ") and last.endswith(
        f" of 16 problems are complete in {out / 'results.jsonl'}; run the same command to resume")
    done = int(last.split("; ")[1].split()[0])

    again = subprocess.run(_eval_cmd(out), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"eval: 16 problems x 16 samples; {done} resumed from {out / 'results.jsonl'}, {16 - done} to generate" \
        in again.stderr


def test_sigterm_during_the_warm_start_stops_it_and_the_rerun_writes_its_rows_once(tmp_path):
    run = tmp_path / "run"
    warm = ["init.sft_steps=60", "init.sft_check_every=5", "init.sft_target_pass_rate=1.1", "trainer.steps=1",
            "eval.every_steps=0"]
    proc = subprocess.Popen([sys.executable, "launch/train.py", f"run.run_dir={run}", *FAST, *warm], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # SIGTERM is what `ray job stop` sends.
    lines = signal_at_line(proc, proc.stdout, "warm start   5/60", lambda: proc.send_signal(signal.SIGTERM))
    assert proc.returncode == 0, "\n".join(lines[-30:])
    assert ("stop requested during the warm start: stopping after the warm-start step in flight (nothing to "
            "checkpoint before the warm start ends; the next run starts it again)") in lines
    stopped = [line for line in lines if line.startswith("warm start stopped after ")]
    assert len(stopped) == 1 and int(stopped[0].split()[4].split("/")[0]) <= 6  # within one step of the signal
    assert "stopped before the first training step: nothing to checkpoint; the next run starts from the beginning" \
        in lines
    assert complete_checkpoints(run) == []
    assert [r["warmup/step"] for r in read_metrics(run)] == [5]

    again = _ok(_train(run, *warm[:-2], "init.sft_steps=10", "trainer.steps=1", "eval.every_steps=0"))
    assert again[-1].startswith("done: 1 steps in ")
    steps = [(r["step"], r.get("warmup/step")) for r in read_metrics(run)]
    assert steps == [(0, 5), (0, 10), (1, None)]  # the stopped warm start's row is gone, none twice
