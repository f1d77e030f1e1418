import math

import pytest

from nous_ray.config import AlgoConfig
from nous_ray.driver.sampler import ProblemSampler
from nous_ray.driver.scoring import BatchBuffer, Counters, score_group
from nous_ray.samples import Sample


def _group(rewards, version=0, truncated=()):
    return [Sample(problem_id="p", group_id=0, prompt_ids=[1], response_ids=[2, 3], logprobs=[-1.0, -1.0],
                   finish_reason="length" if i in truncated else "stop", version=version, reward=r,
                   verdict="accepted" if r == 1 else ("infra_error" if r is None else "wrong_answer"))
            for i, r in enumerate(rewards)]


def test_advantages_are_group_normalized_with_sample_std():
    c = Counters()
    g = score_group(_group([1, -1, -1, -1]), AlgoConfig(), c)
    mean, std = -0.5, math.sqrt((1.5**2 + 3 * 0.5**2) / 3)
    assert g.useful
    assert [s.advantage for s in g.samples] == pytest.approx([(1 - mean) / std] + [(-1 - mean) / std] * 3,
                                                             rel=1e-5)


def test_all_equal_groups_are_filtered_and_counted():
    c = Counters()
    assert not score_group(_group([1, 1, 1, 1]), AlgoConfig(), c).useful
    assert not score_group(_group([-1, -1]), AlgoConfig(), c).useful
    assert (c.filtered, c.filtered_groups) == (6, 2)
    kept = score_group(_group([1, 1]), AlgoConfig(dynamic_sampling=False), c)
    assert kept.useful and [s.advantage for s in kept.samples] == [0.0, 0.0]


def test_infra_errors_leave_the_group_without_reward():
    c = Counters()
    g = score_group(_group([1, None, -1, None]), AlgoConfig(), c)
    assert c.dropped_infra == 2 and len(g.samples) == 2 and g.useful
    assert g.samples[0].advantage > 0 > g.samples[1].advantage
    # one valid sample left: no baseline, the whole group goes (all counted as infra drops)
    g = score_group(_group([1, None, None]), AlgoConfig(), c)
    assert not g.useful and c.dropped_infra == 5


def test_truncated_responses_get_zero_advantage():
    c = Counters()
    g = score_group(_group([1, -1, -1, -1], truncated=(1,)), AlgoConfig(), c)
    assert g.truncated[0].advantage == 0.0 and g.samples[0].advantage > 0


def test_batch_buffer_enforces_staleness_and_accounts_everything():
    c = Counters()
    buf = BatchBuffer(groups_per_batch=2, max_off_policy_steps=1, counters=c)
    for version in (0, 1, 2):
        grp = score_group(_group([1, -1], version=version), AlgoConfig(), c)
        c.generated += 2
        buf.add(grp)
    assert buf.pop_batch(learner_version=3) is None  # versions 0 and 1 are too old at 3
    assert (c.dropped_stale, c.stale_groups, len(buf)) == (4, 2, 1)
    buf.add(score_group(_group([1, -1], version=3), AlgoConfig(), c))
    c.generated += 2
    batch = buf.pop_batch(learner_version=3)
    assert [g.version for g in batch] == [2, 3]
    assert c.generated == c.accounted == 8


def test_sampler_covers_every_problem_per_epoch_and_reissues_first():
    s = ProblemSampler(5, seed=3)
    first = [s.next() for _ in range(5)]
    assert sorted(first) == list(range(5))
    s.give_back([first[0], first[1]])
    assert [s.next(), s.next()] == first[:2]
    state = s.state_dict(outstanding=[4])
    t = ProblemSampler(5, seed=3)
    t.load_state_dict(state)
    assert t.next() == 4
    assert [t.next() for _ in range(5)] == [s.next() for _ in range(5)]


def test_truncated_samples_leave_the_batch_and_are_counted():
    c = Counters()
    buf = BatchBuffer(groups_per_batch=2, max_off_policy_steps=0, counters=c)
    for version, rewards, cut in ((0, [1, -1, -1, -1], (3,)), (0, [1, 1, -1, -1], (0, 2)), (0, [1, -1], ())):
        c.generated += len(rewards)
        g = score_group(_group(rewards, version=version, truncated=cut), AlgoConfig(), c)
        assert g.useful and [s.truncated for s in g.samples] == [False] * (len(rewards) - len(cut))
        assert len(g.truncated) == len(cut) and all(s.advantage == 0.0 for s in g.truncated)
        buf.add(g)
    assert c.dropped_truncated == 0  # counted with their group's fate
    batch = buf.pop_batch(learner_version=0)
    assert sum(len(g.samples) for g in batch) == 5 and all(not s.truncated for g in batch for s in g.samples)
    assert (c.trained, c.dropped_truncated) == (5, 3)
    # A group that goes stale takes its truncated samples with it.
    c.generated += 4
    buf.add(score_group(_group([1, -1, -1, -1], version=0, truncated=(1,)), AlgoConfig(), c))
    assert buf.pop_batch(learner_version=1) is None
    assert c.dropped_stale == 2 + 4  # the [1, -1] group left over, and this one with its truncated sample
    # Every response truncated, dynamic sampling off: nothing to train on, dropped and counted.
    c.generated += 2
    g = score_group(_group([-1, -1], truncated=(0, 1)), AlgoConfig(dynamic_sampling=False), c)
    assert not g.useful and c.dropped_truncated == 3 + 2
    assert c.generated == c.accounted == 16
    # Without overlong filtering a truncated response trains on its own reward.
    g = score_group(_group([1, -1], truncated=(1,)), AlgoConfig(overlong_filter=False), Counters())
    assert len(g.samples) == 2 and g.samples[1].advantage < 0 and not g.truncated


def test_gradient_with_truncated_samples_equals_the_batch_without_them():
    """Issue 13 item 3: truncated samples must not dilute the token normalizer. The batch formed from
    groups with truncated responses must give the gradient of the same batch without them: a float64
    per-token loop over the non-truncated samples with hand-computed advantages (truncated rewards still
    in the group statistics: algo.overlong_in_group_stats)."""
    import random

    import torch

    from nous_ray.algo import policy_loss

    rng = random.Random(0)

    def group(rewards, cut):
        ss = _group(rewards, truncated=cut)
        for s in ss:
            n = rng.randint(1, 6)
            s.response_ids = [rng.randrange(100) for _ in range(n)]
            s.logprobs = [-rng.uniform(0.5, 3.0) for _ in range(n)]
            s.extra["x"] = [rng.uniform(-1, 1) for _ in range(n)]  # d logprob / d theta of each token
        return ss

    c = Counters()
    buf = BatchBuffer(groups_per_batch=2, max_off_policy_steps=2, counters=c)
    g1, g2 = group([1, -1, -1, -1], (3,)), group([1, 1, -1, -1], (0,))
    every = g1 + g2
    for g in (g1, g2):
        buf.add(score_group(g, AlgoConfig(), c))
    samples = [s for g in buf.pop_batch(0) for s in g.samples]
    theta0 = 0.05

    def grad_of(batch):
        """d loss / d theta, logprobs = behaviour + theta * x (DAPO, ratios e^(0.05 x): no clip acts)."""
        L = max(len(s.response_ids) for s in batch)
        pad = lambda rows: torch.tensor([r + [0.0] * (L - len(r)) for r in rows], dtype=torch.float64)  # noqa: E731
        beh, x = pad([s.logprobs for s in batch]), pad([s.extra["x"] for s in batch])
        mask = torch.tensor([[t < len(s.response_ids) for t in range(L)] for s in batch])
        theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
        loss, _ = policy_loss("dapo", beh + theta * x, beh, torch.tensor([s.advantage for s in batch],
                              dtype=torch.float64), mask)
        loss.backward()
        return theta.grad.item()

    # Hand-computed advantages (sample std): group 1 mean -0.5, std 1 -> 1.5, -0.5, -0.5, [0];
    # group 2 mean 0, std sqrt(4/3) -> [0], 0.866, -0.866, -0.866.
    s2 = math.sqrt(4 / 3)
    want_adv = [1.5, -0.5, -0.5, 1 / s2, -1 / s2, -1 / s2]
    assert [s.advantage for s in samples] == pytest.approx(want_adv, rel=1e-5)
    kept = [s for s in every if not s.truncated]
    assert samples == kept
    n_tok = sum(len(s.response_ids) for s in kept)
    ref = sum(-a * math.exp(theta0 * xt) * xt / n_tok for s, a in zip(kept, want_adv) for xt in s.extra["x"])
    assert grad_of(samples) == pytest.approx(ref, rel=1e-5)
    # Keeping them (advantage 0) would have shrunk it by the truncated share of tokens: the test can fail.
    diluted = grad_of(every)
    share = n_tok / sum(len(s.response_ids) for s in every)
    assert diluted == pytest.approx(ref * share, rel=1e-5) and abs(diluted - ref) > 1e-3 * abs(ref)


def _spanning(starts, n, reward):
    """A sample of ``n`` response tokens whose versions start at ``starts`` [(version, first token)]."""
    return Sample(problem_id="p", group_id=0, prompt_ids=[1], response_ids=list(range(n)), logprobs=[-1.0] * n,
                  finish_reason="stop", version=starts[0][0], reward=reward,
                  verdict="accepted" if reward == 1 else "wrong_answer",
                  version_starts=starts if len(starts) > 1 else [])


def test_a_sample_spanning_versions_is_as_stale_as_its_oldest_token():
    s = _spanning([(3, 0), (4, 5), (6, 7)], 10, 1)
    assert s.version_spans() == [(3, 0, 5), (4, 5, 7), (6, 7, 10)]
    assert s.token_versions() == [3] * 5 + [4] * 2 + [6] * 3
    assert (s.version, s.newest_version, s.spans_versions) == (3, 6, True)
    plain = _spanning([(5, 0)], 4, -1)
    assert plain.version_spans() == [(5, 0, 4)] and plain.token_versions() == [5] * 4 and not plain.spans_versions

    # The bound applies to the oldest token: a group with a sample begun at version 3 is 3 behind at 6.
    c = Counters()
    buf = BatchBuffer(groups_per_batch=1, max_off_policy_steps=2, counters=c)
    c.generated += 2
    buf.add(score_group([s, plain], AlgoConfig(), c))
    assert buf.pop_batch(learner_version=6) is None and (c.dropped_stale, c.stale_groups) == (2, 1)
    assert c.generated == c.accounted


def test_staleness_stats_count_tokens_by_the_version_that_sampled_them():
    from nous_ray.driver.scoring import staleness_stats

    batch = [_spanning([(3, 0), (4, 5), (6, 7)], 10, 1), _spanning([(5, 0)], 4, -1), _spanning([(6, 0)], 6, 1)]
    got = staleness_stats(batch, learner_version=6)
    # tokens: 5 at 3 behind, 2 at 2, 3 at 0; 4 at 1; 6 at 0 -> (15 + 4 + 0 + 4 + 0) / 20
    assert got == {"staleness_mean": pytest.approx((3 + 1 + 0) / 3), "staleness_max": 3,
                   "token_staleness_mean": pytest.approx(23 / 20), "token_staleness_max": 3,
                   "spanning_frac": pytest.approx(1 / 3)}
