"""The 48-GPU recipe rehearsed on a simulated cluster: a CPU head and 6 nodes of 8 fake GPUs
(``ray.cluster_utils.Cluster``), the production placement (``actors/placement.py``), the real Driver,
and stand-in engines, learner ranks and verifiers (``actors/sim.py``) on their bundles, on a
compressed clock. The stand-ins' own records say how busy each engine was; the planner (the same
stand-ins in one process, on a virtual clock) says what to expect.
"""

import asyncio

import pytest

from nous_ray.config import load_config
from nous_ray.driver.checkpoint import CHECKPOINT_DONE, latest_checkpoint
from nous_ray.driver.loop import Driver, LearnerFailed
from nous_ray.env import actor_env
from nous_ray.metrics import read_metrics
from nous_ray.sim.planner import sim_config, simulate
from nous_ray.sim.workload import synthetic_problems

pytestmark = pytest.mark.slow

RECIPE = "configs/nouscoder_14b.yaml"


@pytest.fixture(scope="module")
def cluster(restart_local_ray):
    import ray

    from actors.sim import start_sim_cluster

    had_local = ray.is_initialized()
    ray.shutdown()
    c = start_sim_cluster(6, 8, {**actor_env(), "OMP_NUM_THREADS": "1"})
    yield c
    ray.shutdown()
    c.shutdown()
    if had_local:
        restart_local_ray()


def _start(cfg):
    from actors.placement import Placement
    from actors.sim import make_sim_ray_workers

    placement = Placement(cfg, timeout_s=300)
    return placement, make_sim_ray_workers(cfg, placement)


def _stop(placement, workers):
    for part in (workers.rollout, workers.learner, workers.verifiers):
        part.shutdown()
    placement.remove()


def _run(cfg, workers, run_dir, during=None):
    problems, prompt_ids = synthetic_problems(cfg.sim)
    d = Driver(cfg, problems, prompt_ids, workers, run_dir, progress=lambda m: None)
    d.issued, d.given_back = [], []
    take, give = d.sampler.next, d.sampler.give_back
    d.sampler.next = lambda: d.issued.append(take()) or d.issued[-1]
    d.sampler.give_back = lambda idx: (d.given_back.extend(idx), give(idx))

    async def main():
        loop = asyncio.get_running_loop()
        extra = asyncio.ensure_future(during(d)) if during else None
        t0 = loop.time()
        try:
            return await d.run(), (t0, loop.time())
        finally:
            if extra and extra.done() and not extra.cancelled() and extra.exception():
                raise extra.exception()
            if extra:
                extra.cancel()

    summary, window = asyncio.run(main())
    return d, summary, window


def _assert_accounted(summary):
    c = summary["counters"]
    assert c["generated"] == c["trained"] + c["filtered"] + c["dropped_stale"] + c["dropped_infra"] \
        + c["dropped_resume"] + c["dropped_truncated"] + summary["pending"]


def _nodes(handles) -> list[str]:
    import ray

    return ray.get([h.node.remote() for h in handles], timeout=600)


async def _until_step(d, k):
    while d.step < k:
        await asyncio.sleep(0.05)


def _within(intervals, a, b) -> float:
    return sum(max(0.0, min(e, b) - max(s, a)) for s, e in intervals)


def test_recipe_engines_stay_busy_and_learner_idle_is_as_planned(cluster, tmp_path):
    steps, speedup = 5, 50.0
    cfg = sim_config(load_config(RECIPE, [f"sim.speedup={speedup}", f"run.run_dir={tmp_path}"]), steps)
    placement, workers = _start(cfg)
    try:
        d, summary, (t0, t1) = _run(cfg, workers, tmp_path)
        records = workers.rollout.records()
    finally:
        _stop(placement, workers)
    assert summary["step"] == steps
    _assert_accounted(summary)
    c = summary["counters"]  # every trained group's samples trained, or cut by the limit and left out
    assert c["trained"] + c["dropped_truncated"] == steps * 256 * 8
    # every engine on its own GPU bundle, 8 to a node; learner ranks on whole nodes of their own
    assert len({r["node"] for r in records}) == 4 and len(records) == 32

    # Each engine is busy >= 90% of the time the staleness bound leaves it work (its share of the
    # window's groups, at most all the time), weight loads aside. Simulated seconds throughout.
    a, b = t0 * speedup, t1 * speedup
    allowed = summary["rollout_allowed_s"] * speedup
    ratios = []
    for r in records:
        busy = _within(r["busy_intervals"], a, b)
        load = _within(r["load_intervals"], a, b)
        ratios.append(busy / (allowed - load))
    assert min(ratios) >= 0.9, ratios

    # The learners' idle time is what the planner predicts for the same config and steps.
    rows = [r for r in read_metrics(tmp_path) if "time_step_s" in r][1:]
    idle = sum(r["learner_wait_generation_s"] + r["learner_wait_verification_s"] for r in rows) \
        / sum(r["time_step_s"] for r in rows)
    planned = simulate(cfg, steps)["learner"]["idle_frac"]
    print(f"engines busy {min(ratios):.3f}-{max(ratios):.3f} of what the bound allows ({allowed / (b - a):.3f} "
          f"of the run); learner idle {idle:.3f}, planned {planned:.3f}")
    assert idle == pytest.approx(planned, abs=0.08)


# The node tests: the recipe's placement (32 engines, 16 learner ranks on 6 nodes), short responses
# and few prompts so steps are quick.
QUICK = ["trainer.prompts_per_step=32", "sim.response_len_median=3000", "rollout.max_prompts_per_worker=2",
         "sim.engine_start_s=20", "trainer.checkpoint_every=2"]


@pytest.fixture(scope="module")
def quick_system(cluster, tmp_path_factory):
    cfg = load_config(RECIPE, QUICK)
    placement, workers = _start(sim_config(cfg, 1))
    yield cfg, placement, workers
    _stop(placement, workers)


def test_a_lost_rollout_node_is_replaced_when_capacity_returns(cluster, quick_system, tmp_path):
    import ray

    from actors.sim import NODE_CPUS

    cfg, placement, workers = quick_system
    cfg = sim_config(load_config(RECIPE, QUICK + [f"run.run_dir={tmp_path}"]), 100)
    learner_nodes = set(_nodes(workers.learner.actors))
    engine_nodes = _nodes(workers.rollout.workers)
    victim = next(n for n in engine_nodes if n not in learner_nodes)
    lost = [i for i, n in enumerate(engine_nodes) if n == victim]

    async def lose_a_node(d):
        await _until_step(d, 2)
        node = next(n for n in cluster.worker_nodes if n.node_id == victim)
        cluster.remove_node(node)  # (blocks the driver's loop a moment; the actors go on)
        while not d.worker_restarts:  # the engines there fail; their replacements wait for room
            await asyncio.sleep(0.05)
        cluster.add_node(num_cpus=NODE_CPUS, num_gpus=8)  # capacity returns
        while d._replacing:
            await asyncio.sleep(0.05)
        back = d.step
        await _until_step(d, back + 3)  # the run goes on with the new engines, then stops
        d.request_stop()

    d, summary, _ = _run(cfg, workers, tmp_path, lose_a_node)
    assert 5 <= summary["step"] < 100 and summary["worker_restarts"] == len(lost) == 8
    _assert_accounted(summary)
    assert d.given_back and all(d.issued.count(i) >= 2 for i in d.given_back)  # their prompts re-issued
    new_nodes = _nodes([workers.rollout.workers[i] for i in lost])
    assert victim not in new_nodes and len(set(new_nodes)) == 1  # all 8 on the node that came
    records = ray.get([workers.rollout.workers[i].records.remote() for i in lost])
    assert all(r["sequences"] > 0 for r in records)  # and they served the rest of the run


def test_a_lost_learner_node_stops_the_run_with_a_complete_checkpoint(cluster, quick_system, tmp_path):
    from actors.sim import NODE_CPUS, SimLearnerRanks, checkpoint_shards
    from nous_ray.sim.workers import SimWeightSync

    cfg0, placement, workers = quick_system
    cfg = sim_config(load_config(RECIPE, QUICK + [f"run.run_dir={tmp_path}"]), 10)
    cfg.trainer.checkpoint_every, cfg.trainer.resume = 2, "auto"  # sim_config turns both off
    victim = _nodes(workers.learner.actors)[-1]

    async def lose_a_learner_node(d):
        await _until_step(d, 3)
        node = next(n for n in cluster.worker_nodes if n.node_id == victim)
        cluster.remove_node(node)

    with pytest.raises(LearnerFailed) as e:
        _run(cfg, workers, tmp_path, lose_a_learner_node)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and (ckpt / CHECKPOINT_DONE).exists()
    assert len(checkpoint_shards(ckpt / "learner")) == 16  # every rank's shard
    assert f"resumes from {ckpt}" in str(e.value)

    # Restarting once the node is back resumes from that checkpoint.
    cluster.add_node(num_cpus=NODE_CPUS, num_gpus=8)
    workers.learner.shutdown()
    workers.learner = SimLearnerRanks(cfg, placement)
    workers.sync = SimWeightSync(workers.learner, workers.rollout)
    step = int(ckpt.name.split("_")[1])
    cfg.trainer.steps = step + 2
    d, summary, _ = _run(cfg, workers, tmp_path)
    assert summary["resumed_from"] == str(ckpt) and summary["step"] == step + 2
    _assert_accounted(summary)
