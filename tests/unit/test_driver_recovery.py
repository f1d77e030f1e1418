"""Issue 16 in the driver, on stand-in workers (tests/driver_fakes.py) so each run takes seconds: stops in
each phase, the last step always saved, broken checkpoints skipped on resume, evaluation results owned by
the weights that made them, null metrics for a step with nothing verified."""

import asyncio
import json
import os

import pytest
from driver_fakes import CannedRollout, SandboxVerifiers, TinyLearner, fake_workers

from nous_ray.config import load_config
from nous_ray.data import load_problems
from nous_ray.driver.checkpoint import (
    CHECKPOINT_DONE,
    DRIVER_STATE,
    ResumeError,
    checkpoint_dir,
    complete_checkpoints,
)
from nous_ray.driver.loop import Driver
from nous_ray.metrics import read_metrics
from nous_ray.samples import Sample

PROBLEMS = load_problems("tiny")
PROMPTS = [[1, 2, 3]] * len(PROBLEMS)
EVAL_SET = (PROBLEMS[:4], PROMPTS[:4])
BASE = ["trainer.prompts_per_step=2", "rollout.group_size=4", "rollout.max_prompts_per_worker=2",
        "algo.dynamic_sampling=false", "init.sft_steps=0", "eval.every_steps=0", "trainer.save_samples=0",
        "trainer.checkpoint_every=0", "eval.n_samples=2", "verifier.workers=1", "learner.minibatches=1"]
# The stand-in learner saves and loads DCP checkpoints in one process, which DCP remarks on each time.
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def cfg_of(run_dir, *extra):
    return load_config(None, BASE + [f"run.run_dir={run_dir}", *extra])


def sft_examples():
    return [Sample(problem_id=p.id, group_id=k, prompt_ids=PROMPTS[k], response_ids=[5, 6], logprobs=[0.0, 0.0],
                   finish_reason="stop", version=0) for k, p in enumerate(PROBLEMS)]


def run(cfg, run_dir, workers, *, eval_set=None, sft=None, hold=None):
    """One ``Driver.run`` on ``workers``; ``hold`` gets the driver before it starts (to wire hooks)."""
    lines = []
    driver = Driver(cfg, PROBLEMS, PROMPTS, workers, run_dir, sft_examples=sft, progress=lines.append,
                    eval_set=eval_set)
    if hold is not None:
        hold(driver)
    try:
        summary = asyncio.run(driver.run())
    finally:
        workers.verifiers.close()
    return driver, summary, lines


def rows(run_dir, key):
    return [r for r in read_metrics(run_dir) if key in r]


# ---- item 4: a stop during the warm start; nothing written twice --------------------------------

def test_a_stop_during_the_warm_start_ends_it_within_one_step_and_its_rows_are_never_duplicated(tmp_path):
    warm = ["init.sft_steps=20", "init.sft_check_every=5", "init.sft_target_pass_rate=1.1", "trainer.steps=2"]
    state = {}

    async def stop_at_step_7(learner):
        if learner.sft_steps == 7:
            state["driver"].request_stop()  # what SIGINT / SIGTERM call

    learner = TinyLearner(on_sft_step=stop_at_step_7)
    cfg = cfg_of(tmp_path, *warm)
    _, summary, lines = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS, learner=learner), sft=sft_examples(),
                            hold=lambda d: state.update(driver=d))
    assert learner.sft_steps == 7 and learner.train_steps == 0  # the step in flight, then nothing more
    assert ("stop requested during the warm start: stopping after the warm-start step in flight (nothing to "
            "checkpoint before the warm start ends; the next run starts it again)") in lines
    assert "warm start stopped after 7/20 steps" in lines
    assert lines[-1] == ("stopped before the first training step: nothing to checkpoint; the next run starts from "
                         "the beginning")
    assert summary["step"] == 0 and complete_checkpoints(tmp_path) == []
    assert [r["warmup/step"] for r in rows(tmp_path, "warmup/step")] == [5]

    # The same command again: the warm start runs whole, and its rows replace the stopped one's.
    cfg = cfg_of(tmp_path, *warm)
    _, summary, lines = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS), sft=sft_examples())
    assert summary["step"] == 2
    assert [r["warmup/step"] for r in rows(tmp_path, "warmup/step")] == [5, 10, 15, 20]
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 0, 0, 0, 1, 2]


def test_a_stop_after_the_warm_start_saves_step_0_and_the_next_run_skips_the_warm_start(tmp_path):
    warm = ["init.sft_steps=5", "init.sft_check_every=5", "init.sft_target_pass_rate=1.1", "trainer.steps=3"]
    state = {}

    async def stop_at_first_call(pool, requests, sampling):
        if pool.calls and len(state.setdefault("calls", [])) == 1:  # the first call after the warm-start check
            state["driver"].request_stop()
        state["calls"].append(1)

    cfg = cfg_of(tmp_path, *warm)
    rollout = CannedRollout(PROBLEMS, on_generate=stop_at_first_call)
    _, summary, lines = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS, rollout=rollout), sft=sft_examples(),
                            hold=lambda d: state.update(driver=d))
    assert summary["step"] == 0
    assert "stop requested: finishing the step in flight and writing a checkpoint" in lines
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000000"]

    cfg = cfg_of(tmp_path, *warm)
    learner = TinyLearner()
    _, summary, lines = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS, learner=learner), sft=sft_examples())
    assert learner.sft_steps == 0 and summary["step"] == 3
    assert f"resumed from {checkpoint_dir(tmp_path, 0)} at step 0" in lines
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2, 3]  # the warm start's row, once


# ---- item 4: a stop during periodic evaluation ----------------------------------------------------

def test_a_stop_during_evaluation_abandons_it_and_writes_the_checkpoint(tmp_path):
    state = {}

    async def stop_in_the_evaluation(pool, requests, sampling):
        if sampling["temperature"] == 0.6:  # eval.temperature: an evaluation request
            state["driver"].request_stop()
            await asyncio.sleep(30)  # a long generation: the stop must not wait for it

    cfg = cfg_of(tmp_path, "trainer.steps=4", "eval.every_steps=2", "eval.dataset=tiny")
    rollout = CannedRollout(PROBLEMS, on_generate=stop_in_the_evaluation)
    _, summary, lines = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS, rollout=rollout), eval_set=EVAL_SET,
                            hold=lambda d: state.update(driver=d))
    assert summary["step"] == 2
    assert "stop requested during the evaluation at step 2: abandoning it, writing a checkpoint" in lines
    assert "eval at step 2: abandoned at the stop" in lines
    assert lines[-1] == f"checkpoint written: {checkpoint_dir(tmp_path, 2)}"
    last = read_metrics(tmp_path)[-1]
    assert last["step"] == 2 and not any(k.startswith("eval/") for k in last)


# ---- item 5: the last step is always saved --------------------------------------------------------

def test_the_last_step_is_checkpointed_when_steps_is_not_a_multiple_of_checkpoint_every(tmp_path):
    cfg = cfg_of(tmp_path, "trainer.steps=5", "trainer.checkpoint_every=3", "trainer.keep_checkpoints=0")
    _, summary, lines = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS))
    assert summary["step"] == 5
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000003", "step_000005"]
    assert lines[-1] == f"checkpoint written: {checkpoint_dir(tmp_path, 5)}"
    assert json.loads((checkpoint_dir(tmp_path, 5) / DRIVER_STATE).read_text())["step"] == 5


# ---- item 2: a broken newest checkpoint is skipped, with the reason -------------------------------

def _two_checkpoints(tmp_path):
    cfg = cfg_of(tmp_path, "trainer.steps=4", "trainer.checkpoint_every=2")
    run(cfg, tmp_path, fake_workers(cfg, PROBLEMS))
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000002", "step_000004"]
    return checkpoint_dir(tmp_path, 2), checkpoint_dir(tmp_path, 4)


@pytest.mark.parametrize("damage", ["truncated shard", "empty driver state"])
def test_resume_skips_a_broken_newest_checkpoint_and_resumes_from_the_one_before(tmp_path, damage):
    good, broken = _two_checkpoints(tmp_path)
    if damage == "truncated shard":
        shard = broken / "learner" / "__0_0.distcp"
        size = shard.stat().st_size
        os.truncate(shard, size // 2)
        why = f"{shard} is truncated ({size // 2} of at least {size} bytes)"
    else:
        (broken / DRIVER_STATE).write_text("")
        why = f"{broken / DRIVER_STATE} is empty"

    cfg = cfg_of(tmp_path, "trainer.steps=5", "trainer.checkpoint_every=2")
    learner = TinyLearner()
    _, summary, lines = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS, learner=learner))
    assert f"warning: skipping checkpoint {broken}: {why}" in lines
    discarded = tmp_path / "checkpoints" / "discarded"
    assert (f"moved 1 checkpoint(s) after the resume point to {discarded} (weights this run does not continue): "
            f"step_000004") in lines
    assert f"resumed from {good} at step 2" in lines
    assert learner.loaded_from == [str(good / "learner")]
    assert summary["step"] == 5 and summary["resumed_from"] == str(good)
    # The broken folder is kept aside, never pruned in place of the new ones nor resumed from later.
    assert (discarded / "step_000004" / CHECKPOINT_DONE).exists()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000004", "step_000005"]
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]


def test_no_whole_checkpoint_is_an_error_naming_each_and_the_way_out(tmp_path):
    good, broken = _two_checkpoints(tmp_path)
    (broken / "learner" / ".metadata").unlink()
    (good / DRIVER_STATE).write_text("{\"step\": 2")
    cfg = cfg_of(tmp_path, "trainer.steps=5")
    with pytest.raises(ResumeError) as e:
        run(cfg, tmp_path, fake_workers(cfg, PROBLEMS))
    assert str(e.value) == (
        f"trainer.resume=auto: no checkpoint in {tmp_path / 'checkpoints'} can be resumed from: step_000004: "
        f"{broken / 'learner' / '.metadata'} is missing (torch.distributed.checkpoint's index of the shards); "
        f"step_000002: {good / DRIVER_STATE} is not JSON (Expecting ',' delimiter: line 1 column 11 (char 10)). "
        f"Repair or remove them, or start over with trainer.resume=never")


# ---- item 3: after a rollback, evaluation results belong to the weights that made them ----------

def test_after_a_rollback_the_evaluation_at_a_step_is_made_again_by_the_new_weights(tmp_path):
    ev = ["eval.every_steps=2", "eval.dataset=tiny", "trainer.checkpoint_every=2", "trainer.keep_checkpoints=0"]
    cfg = cfg_of(tmp_path, "trainer.steps=4", *ev)
    first, _, _ = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS), eval_set=EVAL_SET)
    out = tmp_path / "eval" / "step_000004"
    assert json.loads((out / "summary.json").read_text())["run"]["weights"] == first.segment

    # Roll back to step 2 and train steps 3-4 again: other weights at step 4.
    cfg = cfg_of(tmp_path, "trainer.steps=4", f"trainer.resume={checkpoint_dir(tmp_path, 2)}", *ev)
    rollout = CannedRollout(PROBLEMS, seed=1)
    second, _, lines = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS, rollout=rollout), eval_set=EVAL_SET)
    assert second.segment != first.segment
    assert (f"eval at step 4: {out} holds results of the weights of an earlier run (rolled back since); "
            f"evaluating these weights afresh") in lines
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["weights"] == second.segment
    assert summary["run"]["problems_resumed"] == 0 and summary["run"]["problems_generated"] == 4
    assert len((out / "results.jsonl").read_text().splitlines()) == 4 * 2  # problems x eval.n_samples, once
    assert sum(c["temperature"] == 0.6 for c in rollout.calls) == 4  # every eval problem generated again
    assert (tmp_path / "checkpoints" / "discarded" / "step_000004").is_dir()  # the rolled-back weights
    evals = [(r["step"], r["eval/pass@1"]) for r in rows(tmp_path, "eval/pass@1")]
    assert [s for s, _ in evals] == [2, 4]


# ---- item 7: a step with nothing verified is null, not 0 ------------------------------------------

def test_a_step_with_nothing_verified_logs_null_and_the_progress_line_says_so(tmp_path):
    """Generation runs a batch ahead: step 2's group was verified before step 1's batch formed, and
    nothing is verified between the two, so step 2 has no reward or pass rate of its own."""
    cfg = cfg_of(tmp_path, "trainer.steps=2", "trainer.prompts_per_step=1", "trainer.max_off_policy_steps=2")
    both_in = asyncio.Event()
    waiting = []

    async def answer_the_first_two_together(problem):
        waiting.append(problem.id)
        if len(waiting) == 2:
            both_in.set()
        await both_in.wait()

    async def later_calls_are_slow(pool, requests, sampling):
        if len(pool.calls) > 1:
            await asyncio.sleep(1.0)

    rollout = CannedRollout(PROBLEMS, on_generate=later_calls_are_slow)
    verifiers = SandboxVerifiers(cfg, hold=answer_the_first_two_together)
    _, summary, lines = run(cfg, tmp_path, fake_workers(cfg, PROBLEMS, rollout=rollout, verifiers=verifiers))
    first, second = read_metrics(tmp_path)
    assert first["reward_mean"] is not None and first["verdict/accepted"] + first["verdict/wrong_answer"] == 8
    assert second["reward_mean"] is None and second["pass_rate"] is None
    assert second["truncated_frac"] is None and second["time_verify_group_s"] is None
    assert not any(k.startswith("verdict/") for k in second)
    assert second["batch_samples"] == 4  # it trained, on the group verified earlier
    step2 = next(line for line in lines if line.startswith("step    2/2"))
    assert step2.startswith("step    2/2 | reward n/a | pass n/a | filtered 0")
    assert '"reward_mean": null, "pass_rate": null' in (tmp_path / "metrics.jsonl").read_text().splitlines()[1]
