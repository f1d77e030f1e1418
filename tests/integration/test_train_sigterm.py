"""Item 7 of issue 10: SIGTERM (what `ray job stop` sends) leads to a complete checkpoint, and the
same command resumes from it. A real `launch/train.py` process on the tiny default."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from process_helpers import signal_at_line

from nous_ray.driver.checkpoint import CHECKPOINT_DONE, latest_checkpoint

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

FAST = ["init.sft_steps=0", "algo.dynamic_sampling=false", "eval.every_steps=0", "trainer.checkpoint_every=0",
        "trainer.prompts_per_step=4", "rollout.max_prompts_per_worker=4", "rollout.group_size=4",
        "learner.minibatches=1"]


def _train(run_dir, *extra):
    return subprocess.Popen([sys.executable, "launch/train.py", f"run.run_dir={run_dir}", *FAST, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigterm_writes_a_complete_checkpoint_and_the_same_command_resumes(tmp_path):
    proc = _train(tmp_path, "trainer.steps=1000")
    lines = signal_at_line(proc, proc.stdout, "step    2/", lambda: proc.send_signal(signal.SIGTERM))
    assert proc.returncode == 0, "\n".join(lines[-30:])
    assert any(line.startswith("stop requested") for line in lines)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None, "\n".join(lines[-30:])
    k = json.loads((ckpt / "driver_state.json").read_text())["step"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert k == summary["step"] >= 2 and ckpt.name == f"step_{k:06d}"
    assert (ckpt / CHECKPOINT_DONE).read_text() == str(k)
    learner = ckpt / "learner"
    assert (learner / ".metadata").exists() and (learner / "learner_state.json").exists()
    assert len(list(learner.glob("*.distcp"))) == 2  # one shard file per learner rank
    assert f"checkpoint written: {ckpt}" in lines

    again = _train(tmp_path, f"trainer.steps={k + 1}")
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert f"resumed from {ckpt} at step {k}" in out
    assert f"step {k + 1:4d}/{k + 1}" in out
