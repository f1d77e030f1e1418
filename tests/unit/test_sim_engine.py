"""The stand-in engine's continuous batching on the virtual clock, against brute-force references."""

import asyncio
import time

import pytest

from nous_ray.config import load_config
from nous_ray.sim.clock import SimClock, run_virtual
from nous_ray.sim.cost import CostModel
from nous_ray.sim.engine import EngineCrashed, SimEngine
from nous_ray.sim.workload import ConstantSeq, Workload

PROMPT = 700


def _engine(lengths, *overrides):
    """An engine whose responses have the given lengths, in order of drawing."""
    cfg = load_config("configs/nouscoder_14b.yaml", ["rollout.tensor_parallel_size=1", *overrides])
    cost = CostModel.from_config(cfg)
    wl = Workload(cfg.sim)
    todo = list(lengths)
    wl.response_length = lambda rng, max_tokens: (todo.pop(0), False)
    return SimEngine(cost, wl, SimClock(), seed=0), cost


async def _gen(e, n=1, pid="p"):
    return await e.generate([ConstantSeq(0, PROMPT)], n, {"max_tokens": 40960}, [pid], [0])


def test_virtual_clock_jumps_to_timers_and_still_does_real_io():
    async def main():
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        ends = await asyncio.gather(*(asyncio.sleep(d, result=d) for d in (3600.0, 10.0)))
        await asyncio.sleep(0.5)
        virtual = loop.time()
        await loop.run_in_executor(None, time.sleep, 0.05)  # a real thread: no timer pending, real wait
        return ends, virtual, loop.time(), time.monotonic() - t0

    ends, virtual, after, real = run_virtual(main())
    assert ends == [3600.0, 10.0] and virtual == 3600.5 and after == 3600.5 and real < 5


def test_one_sequence_takes_prefill_plus_every_decode_step():
    e, cost = _engine([3000])

    async def main():
        (g,) = await _gen(e)
        return asyncio.get_running_loop().time(), g

    t, (s,) = run_virtual(main())
    ref = cost.prefill_s(PROMPT) + sum(cost.decode_step_s(1, PROMPT + k) for k in range(3000))
    assert t == pytest.approx(ref, rel=1e-9)
    assert len(s.response_ids) == 3000 and s.finish_reason == "stop" and s.version == 0
    assert e.records.tokens == pytest.approx(3000) and e.records.busy_s == pytest.approx(t)


def test_a_group_comes_back_when_its_own_samples_are_done():
    e, _ = _engine([100] * 8 + [5000] * 8)

    async def main():
        loop = asyncio.get_running_loop()
        done = {}

        async def one(pid):
            await _gen(e, 8, pid)
            done[pid] = loop.time()

        await asyncio.gather(one("short"), one("long"))
        return done

    done = run_virtual(main())
    assert done["short"] < done["long"] / 10


def test_kv_overflow_preempts_and_every_token_is_still_generated_once():
    # ~20k tokens of KV cache: 10 groups of 8 sequences of 1-3k tokens cannot all run at once
    lengths = [1000 + 250 * (k % 9) for k in range(80)]
    e, cost = _engine(lengths, "rollout.gpu_memory_utilization=0.216")
    assert 15_000 < cost.kv_capacity_tokens < 25_000

    async def main():
        groups = await asyncio.gather(*(_gen(e, 8, f"p{k}") for k in range(10)))
        return [len(s.response_ids) for g in groups for s in g[0]]

    got = run_virtual(main())
    assert sorted(got) == sorted(lengths)
    assert e.records.preemptions > 0
    assert e.records.tokens == pytest.approx(sum(lengths))
    assert e._usage == pytest.approx(0, abs=1e-6) and e._context == pytest.approx(0, abs=1e-6)


def test_drain_update_waits_for_running_requests_then_loads():
    e, cost = _engine([4000, 10], "rollout.weight_update=drain")

    async def main():
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(_gen(e))
        await asyncio.sleep(1.0)
        update = asyncio.ensure_future(e.update_weights(1))
        await asyncio.sleep(1.0)
        (late,) = await _gen(e)  # arrives during the drain: waits for the load, runs on version 1
        t_late = loop.time()
        (early,) = await first
        await update
        return early, late, t_late

    alone, _ = _engine([4000])
    t_alone = run_virtual(_timed(alone))
    early, late, t_late = run_virtual(main())
    assert early[0].version == 0 and late[0].version == 1
    assert t_late == pytest.approx(t_alone + cost.sync_engine_s() + cost.prefill_s(PROMPT)
                                   + cost.decode_step_s(1, PROMPT) * 10, rel=1e-6)


def test_inflight_update_pauses_running_requests_for_the_load_only():
    e, cost = _engine([4000], "rollout.weight_update=inflight")

    async def main():
        first = asyncio.ensure_future(_gen(e))
        await asyncio.sleep(1.0)
        await e.update_weights(1)
        (g,) = await first
        return asyncio.get_running_loop().time(), g

    alone, _ = _engine([4000])
    t_alone = run_virtual(_timed(alone))
    t, (s,) = run_virtual(main())
    assert t == pytest.approx(t_alone + cost.sync_engine_s(), rel=1e-6)
    assert s.version == 0 and e.version == 1  # the sample records the version it started under


def test_a_crashed_engine_fails_its_calls():
    e, _ = _engine([4000, 10])

    async def main():
        first = asyncio.ensure_future(_gen(e))
        await asyncio.sleep(1.0)
        e.crash()
        with pytest.raises(EngineCrashed):
            await first
        with pytest.raises(EngineCrashed):
            await _gen(e)

    run_virtual(main())


async def _timed(e):
    await _gen(e)
    return asyncio.get_running_loop().time()


def test_a_shared_host_slows_work_by_runnable_threads_over_cores():
    from nous_ray.sim.host import SharedHost

    async def main(host, works):
        clock = SimClock()
        loop = asyncio.get_running_loop()
        ends = []

        async def one(seconds, threads):
            await host.work(clock, seconds, threads)
            ends.append(round(loop.time(), 9))

        await asyncio.gather(*(one(s, t) for s, t in works))
        return sorted(ends)

    # two 1-thread jobs of 1 s on 1 core share it: both end at 2 s
    assert run_virtual(main(SharedHost(1), [(1.0, 1), (1.0, 1)])) == [2.0, 2.0]
    # 2 cores: no slowdown; a background thread on 1 core halves the speed
    assert run_virtual(main(SharedHost(2), [(1.0, 1), (1.0, 1)])) == [1.0, 1.0]
    assert run_virtual(main(SharedHost(1, background=1), [(1.0, 1)])) == [2.0]
    # 1 s and 3 s on 1 core: shared until 2 s (1 s of work each), then the second alone for 2 s more
    assert run_virtual(main(SharedHost(1), [(1.0, 1), (3.0, 1)])) == [2.0, 4.0]
    # no host (a GPU cluster): work takes its own time
    assert run_virtual(main(SharedHost(0), [(1.0, 1), (1.0, 4)])) == [1.0, 1.0]
