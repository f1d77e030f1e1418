"""The real Driver on stand-in workers (nous_ray/sim) and a virtual clock: its behaviour in seconds,
without vLLM or FSDP: fair prompt spreading, streaming groups, staleness, worker replacement, stop and
resume, the dynamic-sampling give-up, infra-error drops, a lost learner."""

import asyncio
import json

import pytest

from nous_ray.config import load_config
from nous_ray.driver.checkpoint import CHECKPOINT_DONE, latest_checkpoint
from nous_ray.driver.loop import Driver, LearnerFailed
from nous_ray.driver.sampler import ProblemSampler
from nous_ray.driver.scoring import Counters
from nous_ray.metrics import read_metrics
from nous_ray.sim.clock import SimClock, run_virtual
from nous_ray.sim.workers import make_sim_workers
from nous_ray.sim.workload import synthetic_problems

# A small cluster with short responses: 4 engines, 8 prompts of 4 samples per step.
SMALL = [
    "rollout.tensor_parallel_size=1", "rollout.gpus_per_worker=1", "rollout.num_workers=4", "learner.num_ranks=8",
    "trainer.prompts_per_step=8", "rollout.group_size=4", "rollout.max_prompts_per_worker=4",
    "sim.response_len_median=2000", "sim.num_problems=200", "trainer.checkpoint_every=0", "eval.every_steps=0",
    "trainer.save_samples=0", "trainer.resume=auto",
]


def _cfg(tmp_path, *extra):
    return load_config("configs/nouscoder_14b.yaml", SMALL + [f"run.run_dir={tmp_path}", *extra])


def _driver(cfg, tmp_path, workers=None):
    problems, prompt_ids = synthetic_problems(cfg.sim)
    workers = workers or make_sim_workers(cfg, SimClock())
    lines = []
    d = Driver(cfg, problems, prompt_ids, workers, tmp_path, progress=lines.append)
    issued, given_back = [], []
    take, give = d.sampler.next, d.sampler.give_back
    d.sampler.next = lambda: issued.append(take()) or issued[-1]
    d.sampler.give_back = lambda idx: (given_back.extend(idx), give(idx))
    d.issued, d.given_back, d.lines = issued, given_back, lines
    return d


def _run(cfg, tmp_path, during=None, workers=None):
    d = _driver(cfg, tmp_path, workers)

    async def main():
        extra = asyncio.ensure_future(during(d)) if during else None
        try:
            return await d.run()
        finally:
            if extra:
                extra.cancel()

    return d, run_virtual(main())


async def _until_step(d, k):
    while d.step < k:
        await asyncio.sleep(1.0)


def _assert_accounted(summary):
    c = summary["counters"]
    assert summary["pending"] >= 0
    assert c["generated"] == c["trained"] + c["filtered"] + c["dropped_stale"] + c["dropped_infra"] \
        + c["dropped_resume"] + c["dropped_truncated"] + summary["pending"]


def test_prompts_are_spread_fairly_over_the_workers(tmp_path):
    d = _driver(_cfg(tmp_path), tmp_path)  # window: 2 batches of 8 = 16 groups; at most 4 per worker
    taken = d._take_prompts()
    assert [w for w, _, _ in taken] == [0, 1, 2, 3] * 4
    assert [g for _, g, _ in taken] == list(range(16)) and d.issued == [i for _, _, i in taken]
    # a worker being replaced gets nothing; the others are capped at max_prompts_per_worker
    d2 = _driver(_cfg(tmp_path, "rollout.max_prompts_per_worker=3"), tmp_path)
    d2._replacing.add(2)
    assert sorted(w for w, _, _ in d2._take_prompts()) == [0, 0, 0, 1, 1, 1, 3, 3, 3]
    # when a slot frees on one worker, the next prompt goes there
    d2._in_flight[1] -= 1
    d2._outstanding.pop(1)
    assert [w for w, _, _ in d2._take_prompts()] == [1]


def test_groups_stream_back_as_their_own_samples_finish(tmp_path):
    cfg = _cfg(tmp_path, "rollout.num_workers=1", "trainer.prompts_per_step=2", "trainer.steps=1",
               "algo.dynamic_sampling=false")
    workers = make_sim_workers(cfg, SimClock())
    lengths = iter([100] * 4 + [20_000] * 4 + [3000] * 10_000)  # the first group short, the second long
    workers.rollout.workload.response_length = lambda rng, max_tokens: (next(lengths), False)
    d = _driver(cfg, tmp_path, workers)
    verified = {}
    verify = d._verify

    async def timed(gid, idx, samples):
        verified[gid] = asyncio.get_running_loop().time()
        await verify(gid, idx, samples)

    d._verify = timed
    run_virtual(d.run())
    # Both were issued at once to the one engine, after the first weight load (3.0 s). 20,000 decode
    # steps take > 100 s (at least 5 ms each on a B200); the short group went to the verifiers after its
    # own 100 steps, 0.6 s later.
    cost = workers.rollout.cost
    load = cost.sync_learner_s() + cost.sync_engine_s()
    assert cost.decode_step_s(1, 0) * 20_000 > 100
    assert verified[0] < load + 1.0 and verified.get(1, float("inf")) > 100


def test_staleness_bound_drops_old_groups_and_counts_add_up(tmp_path):
    cfg = _cfg(tmp_path, "trainer.steps=8", "trainer.max_off_policy_steps=0", "trainer.max_outstanding_batches=2",
               "algo.dynamic_sampling=false")
    d, summary = _run(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    assert summary["step"] == 8 and [r["step"] for r in rows] == list(range(1, 9))
    assert all(r["staleness_max"] == 0 for r in rows)  # nothing older than the bound trains
    assert summary["counters"]["stale_groups"] > 0  # generation ran a batch ahead: some went stale
    assert summary["counters"]["dropped_stale"] == 4 * summary["counters"]["stale_groups"]
    c = summary["counters"]  # every trained group: its samples trained, or cut by the limit and left out
    assert c["trained"] + c["dropped_truncated"] == 8 * 8 * 4 == sum(r["batch_samples"] for r in rows) \
        + c["dropped_truncated"]
    _assert_accounted(summary)


def test_a_crashed_worker_is_replaced_and_its_prompts_reissued(tmp_path):
    cfg = _cfg(tmp_path, "trainer.steps=6")

    async def crash_after_step_2(d):
        await _until_step(d, 2)
        d.w.rollout.crash(1)

    d, summary = _run(cfg, tmp_path, crash_after_step_2)
    assert summary["step"] == 6 and summary["worker_restarts"] == 1
    assert d.given_back  # the groups it held went back to the sampler ...
    for idx in d.given_back:  # ... and were issued again, after the crash
        assert d.issued.count(idx) >= 2
    pool = d.w.rollout
    assert len(pool.retired) == 1 and pool.engines[1].records.sequences > 0  # the new engine served
    _assert_accounted(summary)


def test_stop_then_resume_accounts_for_what_was_in_flight(tmp_path):
    cfg = _cfg(tmp_path, "trainer.steps=50")

    async def stop_after_step_3(d):
        await _until_step(d, 3)
        while not len(d.buffer):  # until a verified group waits for the learners (pending at the checkpoint)
            await asyncio.sleep(1.0)
        d.request_stop()

    first, summary = _run(cfg, tmp_path, stop_after_step_3)
    k = summary["step"]
    ckpt = latest_checkpoint(tmp_path)
    assert 3 <= k < 50 and ckpt.name == f"step_{k:06d}" and (ckpt / CHECKPOINT_DONE).exists()
    saved = json.loads((ckpt / "driver_state.json").read_text())
    # What the checkpoint holds unaccounted (a verification may still finish after it, in this run only).
    at_stop = Counters(**saved["counters"])
    pending = at_stop.generated - at_stop.accounted
    assert pending > 0  # the stop caught groups in flight

    second, summary2 = _run(_cfg(tmp_path, f"trainer.steps={k + 2}"), tmp_path)
    assert summary2["resumed_from"] == str(ckpt) and summary2["step"] == k + 2
    assert summary2["counters"]["dropped_resume"] == pending
    _assert_accounted(summary2)
    reissue = saved["sampler"]["reissue"]
    assert second.issued[:len(reissue)] == reissue  # what was in flight comes first, then the saved order
    expect = ProblemSampler(cfg.sim.num_problems, seed=cfg.data.seed)
    expect.load_state_dict({**saved["sampler"], "reissue": []})
    assert second.issued[len(reissue):len(reissue) + 5] == [expect.next() for _ in range(5)]


def test_dynamic_sampling_gives_up_when_no_group_has_signal(tmp_path):
    # Every problem's pass rate ~ Beta(0.001, 1) ~ 0: every group fails entirely and is filtered.
    cfg = _cfg(tmp_path, "trainer.steps=3", "sim.pass_alpha=0.001", "sim.pass_beta=1.0",
               "trainer.max_filtered_batches=2")
    d = _driver(cfg, tmp_path)
    with pytest.raises(RuntimeError, match="dynamic sampling filtered"):
        run_virtual(d.run())
    assert d.step == 0 and d.counters.filtered_groups >= 2 * 8 and d.counters.trained == 0


def test_infra_errors_drop_samples_and_never_reward_them(tmp_path):
    cfg = _cfg(tmp_path, "trainer.steps=4", "sim.infra_error_rate=0.25", "algo.dynamic_sampling=false")
    workers = make_sim_workers(cfg, SimClock())
    trained = []
    train = workers.learner.train_step

    async def recording(samples, temperature=1.0, policy_version=None):
        trained.extend(samples)
        return await train(samples, temperature, policy_version)

    workers.learner.train_step = recording
    d, summary = _run(cfg, tmp_path, workers=workers)
    assert summary["counters"]["dropped_infra"] > 0
    assert trained and all(s.reward in (1.0, -1.0) and s.verdict != "infra_error" for s in trained)
    assert summary["counters"]["trained"] == len(trained)
    _assert_accounted(summary)


def test_a_lost_learner_stops_the_run_naming_the_checkpoint_to_resume(tmp_path):
    cfg = _cfg(tmp_path, "trainer.steps=10", "trainer.checkpoint_every=2")

    async def lose_learner_after_step_3(d):
        await _until_step(d, 3)
        d.w.learner.crash("learner rank 5 died with its node")

    with pytest.raises(LearnerFailed) as e:
        _run(cfg, tmp_path, lose_learner_after_step_3)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step_000002" and (ckpt / CHECKPOINT_DONE).exists()
    assert f"resumes from {ckpt} (step 2)" in str(e.value) and "rank 5 died" in str(e.value)
