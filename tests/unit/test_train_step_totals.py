"""StepTotals: a training step's sums over micro-batches, reduced, and the means train_step reports."""

import pytest
import torch

from nous_ray.train.step_totals import StepTotals


def _m(**kw):
    base = dict(clip_fraction=0.0, dual_clip_fraction=0.0, clip_fraction_fresh=0.0, num_fresh_units=0.0,
                tis_weight_mean=1.0, tis_capped_fraction=0.0, approx_kl=0.0, ratio_max=1.0, num_tokens=0.0,
                num_sequences=0.0)
    base.update(kw)
    return {k: torch.tensor(float(v)) for k, v in base.items()}


def test_token_units_weight_each_micro_batch_by_its_tokens():
    t = StepTotals()
    # Micro-batch 1: 3 tokens in 1 sequence, a third of them clipped; 2: 1 token, clipped.
    t.add_micro(_m(clip_fraction=1 / 3, approx_kl=0.3, ratio_max=1.5, num_tokens=3, num_sequences=1,
                   clip_fraction_fresh=0.5, num_fresh_units=2, tis_weight_mean=0.9, tis_capped_fraction=1 / 3),
                True, torch.tensor([1.0, 2.0, 3.0]), packed_tokens=10)
    t.add_micro(_m(clip_fraction=1.0, dual_clip_fraction=1.0, approx_kl=0.1, ratio_max=1.2, num_tokens=1,
                   num_sequences=1, tis_weight_mean=0.5),
                True, torch.tensor([4.0]), packed_tokens=6)
    t.add_logprob_diff(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0]))  # |d| = 0.5, 1.0
    out = t.metrics(decoupled=True)
    assert out["clip_fraction"] == pytest.approx((1 + 1) / 4)  # 2 of 4 tokens
    assert out["dual_clip_fraction"] == pytest.approx(1 / 4)
    assert out["clip_fraction_fresh"] == pytest.approx(0.5)  # 1 of the 2 fresh tokens
    assert out["fresh_units"] == 2
    assert out["approx_kl"] == pytest.approx((0.3 * 3 + 0.1) / 4)
    assert out["entropy"] == pytest.approx(10 / 4)
    assert out["ratio_max"] == pytest.approx(1.5)
    assert (out["tokens"], out["packed_tokens"], out["micro_batches"]) == (4, 16, 2)
    assert out["tis_weight_mean"] == pytest.approx((0.9 * 3 + 0.5) / 4)
    assert out["tis_capped_fraction"] == pytest.approx(1 / 4)
    assert out["logprob_diff_mean"] == pytest.approx(0.75)
    assert out["logprob_diff_max"] == pytest.approx(1.0)


def test_sequence_units_and_what_is_left_out():
    t = StepTotals()
    # gspo: 2 sequences (5 tokens), one clipped; nothing fresh, coupled.
    t.add_micro(_m(clip_fraction=0.5, approx_kl=0.2, num_tokens=5, num_sequences=2), False,
                torch.zeros(5), packed_tokens=9)
    out = t.metrics(decoupled=False)
    assert out["clip_fraction"] == pytest.approx(0.5)
    assert out["approx_kl"] == pytest.approx(0.2)  # token mean whatever the units
    assert "clip_fraction_fresh" not in out and "tis_weight_mean" not in out and "tis_capped_fraction" not in out
    assert out["logprob_diff_mean"] == 0.0 and out["logprob_diff_max"] == 0.0  # no pre-update log-probs seen


def test_empty_step_divides_by_at_least_one():
    out = StepTotals().metrics(decoupled=True)
    assert out["clip_fraction"] == 0.0 and out["entropy"] == 0.0 and out["tis_weight_mean"] == 0.0


def test_all_reduce_without_a_group_keeps_every_field():
    t = StepTotals(clip=1.0, units=2.0, kl=3.0, micro_batches=4.0, ratio_max=5.0, logprob_diff_max=6.0)
    assert t.all_reduce(torch.device("cpu")) == t
