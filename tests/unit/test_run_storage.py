"""Item 7 of issue 10: a run directory every node sees, checked at start-up; pruning where the files are.

A node-local disk is simulated by giving each learner rank its own copy of the path (what a rank
on another machine would see at the same absolute path).
"""

import subprocess
import sys
from pathlib import Path

import pytest

from nous_ray.driver.checkpoint import (
    CHECKPOINT_DONE,
    checkpoint_dir,
    complete_checkpoints,
    finish_checkpoint,
    start_checkpoint,
)
from nous_ray.run_storage import RunDirError, answer_probe, check_probe, resolve_run_dir, write_probe

ROOT = Path(__file__).resolve().parents[2]


def test_a_shared_run_dir_passes_the_probe_and_leaves_nothing_behind(tmp_path):
    token = write_probe(tmp_path)
    answers = [answer_probe(tmp_path, token, f"learner-{r}") for r in range(3)]
    assert all(a.saw and not a.error for a in answers)
    check_probe(tmp_path, token, answers)
    assert list((tmp_path / ".probe").iterdir()) == []


def test_a_node_local_run_dir_is_an_error_naming_each_rank_and_the_fix(tmp_path):
    driver_view = tmp_path / "head" / "runs" / "x"
    token = write_probe(driver_view)
    # Rank 0 shares the head's disk; ranks 1 and 2 see their own node's disk at that path.
    views = {0: driver_view, 1: tmp_path / "node1" / "runs" / "x", 2: tmp_path / "node2" / "runs" / "x"}
    answers = [answer_probe(views[r], token, f"learner-{r}") for r in range(3)]
    assert [a.saw for a in answers] == [True, False, False]
    with pytest.raises(RunDirError) as e:
        check_probe(driver_view, token, answers)
    msg = str(e.value)
    assert f"run.run_dir='{driver_view}' is not one directory shared by every node" in msg
    assert "learner-1 on" in msg and "learner-2 on" in msg and "learner-0" not in msg
    assert "set run.run_dir to an absolute path on it" in msg and "/fsx" in msg


def test_answers_the_driver_cannot_read_back_are_errors(tmp_path):
    """A rank sees the driver's file but writes where the driver does not look (a read-only or
    cached view): the read-back half of the probe catches it."""
    token = write_probe(tmp_path)
    answer = answer_probe(tmp_path, token, "learner-0")
    Path(answer.wrote).unlink()
    with pytest.raises(RunDirError, match="the driver does not see the file learner-0"):
        check_probe(tmp_path, token, [answer])


def test_relative_run_dir_in_rays_job_copy_is_an_error(tmp_path):
    job_copy = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    job_copy.mkdir(parents=True)
    with pytest.raises(RunDirError) as e:
        resolve_run_dir("runs/nouscoder-14b", job_copy)
    assert "run.run_dir='runs/nouscoder-14b' is relative" in str(e.value)
    assert "Ray's temporary copy" in str(e.value) and "absolute path" in str(e.value)
    assert resolve_run_dir("/fsx/runs/a", job_copy) == Path("/fsx/runs/a")
    assert resolve_run_dir("runs/a", tmp_path) == tmp_path / "runs" / "a"


def test_train_refuses_a_relative_run_dir_inside_a_ray_job_copy(tmp_path):
    """What `ray job submit --working-dir . -- python launch/train.py` runs: the script in Ray's
    copy, started there. It stops before writing anything into Ray's session folder."""
    job_copy = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    job_copy.mkdir(parents=True)
    proc = subprocess.run([sys.executable, str(ROOT / "launch" / "train.py"), "trainer.steps=1"],
                          cwd=job_copy, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "run.run_dir='runs/tiny' is relative" in proc.stderr
    assert not (job_copy / "runs").exists()


def _checkpoint(run_dir, step, complete=True):
    path = start_checkpoint(run_dir, step)
    for rank in range(2):  # each rank's DCP shard, as the learner writes them
        (path / "learner").mkdir(exist_ok=True)
        (path / "learner" / f"__{rank}_0.distcp").write_bytes(b"shard")
    if complete:
        finish_checkpoint(path, {"step": step}, keep=2)
    return path


def test_pruning_removes_old_and_torn_checkpoints_with_every_ranks_shards(tmp_path):
    _checkpoint(tmp_path, 10)
    torn = _checkpoint(tmp_path, 15, complete=False)  # killed mid-save
    _checkpoint(tmp_path, 20)
    assert not torn.exists()  # older than the newest complete checkpoint: a leftover
    assert (checkpoint_dir(tmp_path, 10) / "learner" / "__1_0.distcp").exists()  # keep=2: still there
    _checkpoint(tmp_path, 30)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000020", "step_000030"]
    assert [p.name for p in complete_checkpoints(tmp_path)] == names
    assert (checkpoint_dir(tmp_path, 30) / CHECKPOINT_DONE).exists()
    # A torn folder newer than every complete one (a save in flight elsewhere) is left alone.
    _checkpoint(tmp_path, 40, complete=False)
    finish_checkpoint(checkpoint_dir(tmp_path, 30), {"step": 30}, keep=2)
    assert checkpoint_dir(tmp_path, 40).exists()
