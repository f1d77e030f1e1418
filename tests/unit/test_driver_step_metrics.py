"""step_metrics: a training step's row from what the driver counted, against numbers worked out by hand."""

import pytest

from nous_ray.driver.scoring import Counters
from nous_ray.driver.step_metrics import StepStats, StepTimes, Waits, progress_line, step_metrics
from nous_ray.samples import Sample


def _sample(reward, n_tokens, version):
    return Sample(problem_id="p", group_id=0, prompt_ids=[1], response_ids=[7] * n_tokens,
                  logprobs=[0.0] * n_tokens, finish_reason="stop", version=version, reward=reward)


def _row(stats, **kw):
    samples = [_sample(1.0, 4, 5), _sample(-1.0, 2, 4), _sample(-1.0, 6, 5)]
    args = dict(filtered_groups=3, waits=Waits(generation_s=1.5, verification_s=0.5), waits_total_s=6.0,
                allowed_s=4.0, times=StepTimes(run_start=0.0, start=10.0, ready=12.0, trained=17.0, end=18.0),
                max_response_tokens=256, worker_restarts=1,
                learner={"loss": 0.25, "tokens": 12, "losses": [0.25], "note": "not a number"})
    args.update(kw)
    counters = Counters(generated=40, trained=3, filtered=12, stale_groups=2)
    return step_metrics(samples, 5, stats, counters, **args)


def test_a_step_row_by_hand():
    stats = StepStats(verified=10, accepted=4, reward_sum=-2.0, verdicts={"accepted": 4, "wrong_answer": 6, "infra_error": 2},
                      response_tokens=80, truncated=3, generate_s=6.0, generate_calls=4, verify_s=1.0, verify_calls=5)
    row = _row(stats)
    # Over the step's verified samples: 4 of 10 accepted, rewards summing to -2.
    assert row["reward_mean"] == pytest.approx(-0.2) and row["pass_rate"] == pytest.approx(0.4)
    # Over the batch: rewards +1, -1, -1; responses of 4, 2 and 6 tokens; versions 5, 4, 5 trained at
    # version 5: staleness 0, 1, 0, and 2 of the 12 tokens one version old.
    assert row["batch_reward_mean"] == pytest.approx(-1 / 3) and row["batch_samples"] == 3
    assert row["response_len_mean"] == pytest.approx(4.0)
    assert row["staleness_mean"] == pytest.approx(1 / 3) and row["staleness_max"] == 1
    assert row["token_staleness_mean"] == pytest.approx(2 / 12) and row["token_staleness_max"] == 1
    assert row["spanning_frac"] == 0.0
    # 3 truncated of the 12 judged (infra errors included).
    assert row["truncated_frac"] == pytest.approx(0.25)
    # The step ran 8 s (10 -> 18), 2 of them waiting for its batch, 5 training, 1 publishing.
    assert row["tokens_per_s"] == pytest.approx(10.0)
    assert row["learner_idle_frac"] == pytest.approx(0.25)
    assert (row["time_step_s"], row["time_train_s"], row["time_sync_s"]) == (8.0, 5.0, 1.0)
    assert row["learner_idle_frac_total"] == pytest.approx(6.0 / 18.0)
    assert row["rollout_allowed_frac"] == pytest.approx(0.5)
    assert (row["learner_wait_generation_s"], row["learner_wait_verification_s"]) == (1.5, 0.5)
    assert row["time_generate_call_s"] == pytest.approx(1.5) and row["time_verify_group_s"] == pytest.approx(0.2)
    assert (row["filtered_groups"], row["stale_groups"], row["worker_restarts"], row["max_response_tokens"]) == \
        (3, 2, 1, 256)
    assert row["verdict/accepted"] == 4 and row["verdict/infra_error"] == 2
    assert row["count/generated"] == 40 and row["count/filtered"] == 12 and row["count/dropped_resume"] == 0
    # The learner's numbers only: lists and strings stay out.
    assert row["train/loss"] == 0.25 and row["train/tokens"] == 12
    assert "train/losses" not in row and "train/note" not in row
    assert progress_line(7, 20, row) == ("step    7/20 | reward -0.200 | pass 0.400 | filtered 3 | len 4.0 | 10 tok/s"
                                         " | idle 25% | stale 0.33/1")


def test_nothing_verified_gives_nulls_not_zeros():
    row = _row(StepStats(), times=StepTimes(run_start=0.0, start=0.0, ready=0.0, trained=0.0, end=0.0))
    assert row["reward_mean"] is None and row["pass_rate"] is None and row["truncated_frac"] is None
    assert row["time_generate_call_s"] is None and row["time_verify_group_s"] is None
    # A step of no duration (a virtual clock): no division by zero.
    assert row["tokens_per_s"] == 0.0 and row["learner_idle_frac"] == 0.0
    assert "n/a" in progress_line(1, 2, row)
