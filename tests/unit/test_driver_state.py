"""The driver's checkpoint state through state_dict / load_state_dict: round trips through JSON, and
driver_state.json files as earlier versions wrote them still load."""

import json
import random

from driver_fakes import CannedRollout

from nous_ray.config import load_config
from nous_ray.data import load_problems
from nous_ray.driver.loop import Driver
from nous_ray.driver.scoring import Counters, ScoredGroup
from nous_ray.driver.warm_start import CheckpointedRandom
from nous_ray.driver.workers import Workers
from nous_ray.samples import Sample

PROBLEMS = load_problems("tiny")


def _driver(tmp_path, seed=0):
    cfg = load_config(None, [f"trainer.seed={seed}", "trainer.prompts_per_step=2"])
    workers = Workers(rollout=CannedRollout(PROBLEMS), verifiers=None, learner=None, sync=None)
    return Driver(cfg, PROBLEMS, [[1, 2, 3]] * len(PROBLEMS), workers, tmp_path)


def test_counters_round_trip_and_an_older_file_without_a_counter():
    c = Counters(generated=40, trained=24, filtered=8, dropped_stale=3, dropped_infra=2, dropped_resume=1,
                 dropped_truncated=2, filtered_groups=1, stale_groups=1)
    back = Counters()
    back.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert back == c
    old = {k: v for k, v in c.state_dict().items() if k != "dropped_truncated"}  # before that counter existed
    back = Counters()
    back.load_state_dict(old)
    assert back.dropped_truncated == 0 and back.generated == 40


def test_random_state_is_the_twister_words_and_round_trips():
    a = CheckpointedRandom(7)
    a.random()
    saved = json.loads(json.dumps(a.state_dict()))
    assert len(saved) == 625 and all(isinstance(w, int) for w in saved)  # 624 words and the position
    assert saved == list(a.getstate()[1])  # what driver_state.json held under "rng" before state_dict existed
    b = CheckpointedRandom(0)
    b.load_state_dict(saved)
    assert [b.random() for _ in range(5)] == [a.random() for _ in range(5)]
    assert b.sample(range(100), 5) == a.sample(range(100), 5)


def test_driver_state_round_trips_through_json(tmp_path):
    d = _driver(tmp_path, seed=3)
    d.step = 5
    for _ in range(7):
        d.sampler.next()
    d._outstanding = {11: 4, 12: 1}  # in flight at the checkpoint: re-issued first, sorted
    useful = Sample(problem_id=PROBLEMS[9].id, group_id=10, prompt_ids=[1], response_ids=[2], logprobs=[0.0],
                    finish_reason="stop", version=4)
    d.buffer.add(ScoredGroup([useful], useful=True, problem_index=9))  # buffered: re-issued after those
    d.counters.load_state_dict({"generated": 30, "trained": 16, "filtered": 8, "dropped_infra": 2})
    d.rng.sample(range(50), 3)
    d.worker_restarts = 2
    state = json.loads(json.dumps(d.state_dict()))
    assert set(state) == {"step", "sampler", "counters", "rng", "worker_restarts"}
    assert state["sampler"]["reissue"] == [1, 4, 9] and state["sampler"]["pos"] == 7

    e = _driver(tmp_path / "other", seed=0)
    e.load_state_dict(state)
    assert e.step == 5 and e.worker_restarts == 2
    # The 4 samples in flight at the checkpoint (30 generated, 26 accounted for) are dropped on resume.
    assert e.counters.dropped_resume == 4 and e.counters.generated == 30 and e.counters.trained == 16
    assert [e.sampler.next() for _ in range(5)] == [1, 4, 9] + [d.sampler.next() for _ in range(2)]
    assert e.rng.random() == d.rng.random()


def test_a_driver_state_file_written_before_state_dict_loads(tmp_path):
    """The on-disk format is unchanged: a file as the driver wrote it before (here without
    worker_restarts, as the oldest ones) restores the same state."""
    rng = random.Random(11)
    rng.random()
    old = {"step": 3, "sampler": {"epoch": 1, "pos": 2, "seed": 0, "reissue": [5]},
           "counters": {"generated": 12, "trained": 8, "filtered": 4, "dropped_stale": 0, "dropped_infra": 0,
                        "dropped_resume": 0, "filtered_groups": 1, "stale_groups": 0},
           "rng": rng.getstate()[1]}
    d = _driver(tmp_path)
    d.load_state_dict(json.loads(json.dumps(old)))
    assert d.step == 3 and d.worker_restarts == 0 and d.counters.accounted == 12
    assert (d.sampler.epoch, d.sampler.pos, list(d.sampler.reissue)) == (1, 2, [5])
    assert d.rng.random() == rng.random()
