"""DAPO / GSPO / GSPO+ losses: values, gradients and metrics against hand numbers and a float64 loop."""

import math

import pytest
import torch

from nous_ray.algo import DEFAULT_CLIP, DEFAULT_CLIP_RATIO_C, DEFAULT_LOG_RATIO_CLAMP, loss_normalizers, policy_loss
from nous_ray.config import AlgoConfig

NAMES = ("dapo", "gspo", "gspo_plus")


def ref_loss(name, lp, old, adv, mask, cl, ch, beh=None, cap=None, c=3.0, L=20.0, n_tok=None, n_seq=None):
    """Per-element float64 loops. Returns (loss, dloss/dlogprobs as nested lists, clip_fraction,
    ratio_mean, approx_kl, dual_clip_fraction). Gradients are the analytic ones: zero where the PPO
    clip or the dual clip wins, and at a token whose log-ratio lies outside [-L, L].

    ``beh``/``cap``: the decoupled form, ``old`` is the proximal policy and each token (dapo) or
    sequence (geometric mean, gspo*) weighs min(pi_old / pi_beh, cap)."""
    B, T = len(lp), len(lp[0])
    ns = [sum(1 for t in range(T) if mask[i][t]) for i in range(B)]
    tot_tok = sum(ns)
    tot_seq = sum(1 for n in ns if n > 0)
    n_tok = tot_tok if n_tok is None else n_tok
    n_seq = tot_seq if n_seq is None else n_seq
    n_tok, n_seq = max(n_tok, 1), max(n_seq, 1)
    grad = [[0.0] * T for _ in range(B)]
    loss = 0.0
    clipped_units = dual_units = 0
    ratio_sum = 0.0
    kl = 0.0

    def clampL(x):
        return x if L is None else min(max(x, -L), L)

    def outside(x):
        return L is not None and abs(x) > L

    for i in range(B):
        for t in range(T):
            if mask[i][t]:
                r = math.exp(clampL(lp[i][t] - old[i][t]))
                kl += (r - 1) - math.log(r)
    kl /= max(tot_tok, 1)

    def surrogate(x, a):
        """(value, PPO clip won, dual clip won)"""
        cx = min(max(x, 1 - cl), 1 + ch)
        ppo = -min(x * a, cx * a)
        if c is not None and a < 0 and -c * a < ppo:
            return -c * a, False, True
        return ppo, (a > 0 and x > 1 + ch) or (a < 0 and x < 1 - cl), False

    for i in range(B):
        a = adv[i]
        if name == "dapo":
            for t in range(T):
                if not mask[i][t]:
                    continue
                d = lp[i][t] - old[i][t]
                r = math.exp(clampL(d))
                wt = 1.0 if beh is None else min(math.exp(clampL(old[i][t] - beh[i][t])), cap)
                val, clipped, dual = surrogate(r, a)
                loss += wt * val / n_tok
                grad[i][t] = 0.0 if (clipped or dual or outside(d)) else -a * r * wt / n_tok
                clipped_units += clipped
                dual_units += dual
                ratio_sum += r
        else:
            n = ns[i]
            if n == 0:
                continue
            toks = [t for t in range(T) if mask[i][t]]
            s = math.exp(sum(clampL(lp[i][t] - old[i][t]) for t in toks) / n)
            wi = 1.0 if beh is None else min(math.exp(sum(clampL(old[i][t] - beh[i][t]) for t in toks) / n), cap)
            val, clipped, dual = surrogate(s, a)
            scale = 1.0 / n_seq if name == "gspo" else n / n_tok
            loss += wi * val * scale
            for t in toks:
                grad[i][t] = 0.0 if (clipped or dual or outside(lp[i][t] - old[i][t])) else -a * s * wi / n * scale
            clipped_units += clipped
            dual_units += dual
            ratio_sum += s
    units = max(tot_tok if name == "dapo" else tot_seq, 1)
    return loss, grad, clipped_units / units, ratio_sum / units, kl, dual_units / units


def random_batch(seed, B=6, T=7, spread=0.3, empty_rows=(), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    lp = old + (torch.rand(B, T, generator=g, dtype=dtype) - 0.5) * 2 * spread
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    for r in empty_rows:
        mask[r] = False
    adv = torch.randn(B, generator=g, dtype=dtype)
    return lp, old, adv, mask


def close(t, want, atol=1e-12):
    return torch.allclose(t, torch.tensor(want, dtype=t.dtype), atol=atol, rtol=0)


def run(name, lp, old, adv, mask, **kw):
    lp = lp.clone().requires_grad_(True)
    loss, metrics = policy_loss(name, lp, old, adv, mask, **kw)
    loss.backward()
    return loss, lp.grad, metrics


def test_dapo_hand_computed():
    # ratios 1.5 (clipped to 1.28 for A > 0: no gradient) and 0.5 (below 0.8, unclipped for A > 0)
    lp = torch.tensor([[math.log(1.5), math.log(0.5)]], dtype=torch.float64)
    old = torch.zeros(1, 2, dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, grad, m = run("dapo", lp, old, torch.tensor([1.0], dtype=torch.float64), mask)
    assert loss.item() == pytest.approx((-1.28 - 0.5) / 2, abs=1e-12)
    assert close(grad, [[0.0, -0.25]])
    assert m["clip_fraction"].item() == pytest.approx(0.5)
    assert m["ratio_mean"].item() == pytest.approx(1.0)
    assert m["ratio_max"].item() == pytest.approx(1.5) and m["ratio_min"].item() == pytest.approx(0.5)
    kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2
    assert m["approx_kl"].item() == pytest.approx(kl, rel=1e-6)
    # A < 0: ratio 1.5 unclipped (loss 1.5, grad -A r / N = 0.75), ratio 0.5 clipped to 0.8 (loss 0.8)
    loss, grad, m = run("dapo", lp, old, torch.tensor([-1.0], dtype=torch.float64), mask)
    assert loss.item() == pytest.approx((1.5 + 0.8) / 2, abs=1e-12)
    assert close(grad, [[0.75, 0.0]])


def test_gspo_and_gspo_plus_hand_computed():
    # seq 0: two tokens, log-ratios (0.1, -0.1) -> s = 1, A = 2; seq 1: one token, s = 1.5, A = 1
    lp = torch.tensor([[0.1, -0.1], [math.log(1.5), 0.0]], dtype=torch.float64)
    old = torch.zeros(2, 2, dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([2.0, 1.0], dtype=torch.float64)
    loss, grad, m = run("gspo", lp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx((-2.0 - 1.28) / 2, abs=1e-12)
    assert close(grad, [[-0.5, -0.5], [0.0, 0.0]])
    assert m["clip_fraction"].item() == pytest.approx(0.5)
    assert m["ratio_mean"].item() == pytest.approx(1.25)
    loss, grad, _ = run("gspo_plus", lp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx((2 * -2.0 + 1 * -1.28) / 3, abs=1e-12)
    # every unclipped token gets -A s / N_tok = -2/3, whatever its sequence's length
    assert close(grad, [[-2 / 3, -2 / 3], [0.0, 0.0]])


def test_gspo_plus_equal_token_weight_across_lengths():
    # Same A and s in a 1-token and a 4-token sequence: GSPO gives the short one's token 4x the
    # gradient, GSPO+ gives every token the same.
    lp = torch.zeros(2, 4, dtype=torch.float64)
    old = torch.zeros(2, 4, dtype=torch.float64)
    mask = torch.tensor([[True, False, False, False], [True, True, True, True]])
    adv = torch.tensor([1.0, 1.0], dtype=torch.float64)
    _, g, _ = run("gspo", lp, old, adv, mask)
    assert g[0, 0].item() == pytest.approx(4 * g[1, 0].item())
    _, g, _ = run("gspo_plus", lp, old, adv, mask)
    assert g[mask].tolist() == pytest.approx([-1 / 5] * 5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_float64_loop_reference(name, seed):
    cl, ch = 0.05, 0.08
    lp, old, adv, mask = random_batch(seed, spread=0.3 if name == "dapo" else 0.15)
    loss, grad, m = run(name, lp, old, adv, mask, clip_low=cl, clip_high=ch)
    rl, rg, rclip, rratio, rkl, _ = ref_loss(name, lp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), cl, ch)
    assert loss.item() == pytest.approx(rl, abs=1e-12)
    assert close(grad, rg)
    assert m["clip_fraction"].item() == pytest.approx(rclip, abs=1e-6)
    assert m["ratio_mean"].item() == pytest.approx(rratio, rel=1e-6)
    assert m["approx_kl"].item() == pytest.approx(rkl, rel=1e-5)
    assert all(v.dim() == 0 and not v.requires_grad for v in m.values())


@pytest.mark.parametrize("name", NAMES)
def test_reference_exercises_both_branches(name):
    # Guard on the test data itself: the random batches above clip some units, not all.
    fracs = []
    for seed in range(3):
        lp, old, adv, mask = random_batch(seed, spread=0.3 if name == "dapo" else 0.15)
        fracs.append(policy_loss(name, lp, old, adv, mask, clip_low=0.05, clip_high=0.08)[1]["clip_fraction"].item())
    assert 0 < sum(fracs) / 3 < 1


@pytest.mark.parametrize("name", NAMES)
def test_float32_inputs_close_to_reference(name):
    lp, old, adv, mask = random_batch(3, spread=0.1)
    loss, grad, _ = run(name, lp.float(), old.float(), adv.float(), mask, clip_low=0.05, clip_high=0.08)
    rl, rg, *_ = ref_loss(name, lp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), 0.05, 0.08)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(rl, abs=1e-5)
    assert torch.allclose(grad.double(), torch.tensor(rg, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_default_clip_per_objective(name):
    lp, old, adv, mask = random_batch(4, spread=1e-3)
    cl, ch = DEFAULT_CLIP[name]
    loss_default, m = policy_loss(name, lp, old, adv, mask)
    loss_explicit, _ = policy_loss(name, lp, old, adv, mask, clip_low=cl, clip_high=ch)
    assert loss_default.item() == loss_explicit.item()
    rl, *_ = ref_loss(name, lp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), cl, ch)
    assert loss_default.item() == pytest.approx(rl, abs=1e-12)
    assert DEFAULT_CLIP == {"dapo": (0.2, 0.28), "gspo": (3e-4, 4e-4), "gspo_plus": (3e-4, 4e-4)}
    if name != "dapo":  # sequence ratios within 1e-3 of 1 are clipped at GSPO's scale
        assert m["clip_fraction"].item() > 0


@pytest.mark.parametrize("name", NAMES)
def test_empty_sequences_contribute_nothing_and_no_nan(name):
    lp, old, adv, mask = random_batch(5, empty_rows=(1, 4))
    # padding holds garbage, including inf and NaN: it must not leak
    lp = lp.masked_fill(~mask, float("nan"))
    old = old.masked_fill(~mask, float("-inf"))
    loss, grad, m = run(name, lp, old, adv, mask, clip_low=0.05, clip_high=0.08)
    keep = [0, 2, 3, 5]
    loss_k, grad_k, _ = run(name, lp[keep], old[keep], adv[keep], mask[keep], clip_low=0.05, clip_high=0.08)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert loss.item() == pytest.approx(loss_k.item(), abs=1e-12)
    assert torch.equal(grad[[1, 4]], torch.zeros(2, lp.shape[1], dtype=lp.dtype))
    assert torch.allclose(grad[keep], grad_k, atol=1e-14)
    assert m["num_sequences"].item() == 4


@pytest.mark.parametrize("name", NAMES)
def test_all_empty_batch_gives_zero_loss_with_defined_grad(name):
    lp = torch.randn(3, 5, requires_grad=True)
    loss, m = policy_loss(name, lp, torch.randn(3, 5), torch.randn(3), torch.zeros(3, 5, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert lp.grad is not None and torch.equal(lp.grad, torch.zeros(3, 5))
    assert all(math.isfinite(v.item()) for v in m.values())
    assert m["clip_fraction"].item() == 0.0 and m["approx_kl"].item() == 0.0


def test_zero_size_batch():
    lp = torch.zeros(0, 4, requires_grad=True)
    for name in NAMES:
        loss, m = policy_loss(name, lp, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 4, dtype=torch.bool))
        assert loss.item() == 0.0 and m["ratio_max"].item() == 0.0


def decoupled_batch(seed, gap=0.2, **kw):
    """A batch plus behaviour log-probs that differ from the proximal ones by up to +-gap per token,
    on top of a per-sequence offset of up to +-gap (so sequence weights spread too)."""
    lp, prox, adv, mask = random_batch(seed, **kw)
    g = torch.Generator().manual_seed(seed + 100)
    noise = (torch.rand(prox.shape, generator=g, dtype=prox.dtype) - 0.5) * 2 * gap
    offset = (torch.rand(prox.shape[0], 1, generator=g, dtype=prox.dtype) - 0.5) * 2 * gap
    return lp, prox, adv, mask, prox + noise + offset


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("decoupled", [False, True])
def test_micro_batch_accumulation_equals_full_batch(name, decoupled):
    lp, old, adv, mask, beh = decoupled_batch(6, B=7, T=9, empty_rows=(3,), gap=0.1)
    dec = dict(behaviour_logprobs=beh, tis_cap=1.05) if decoupled else {}
    full_lp = lp.clone().requires_grad_(True)
    full, _ = policy_loss(name, full_lp, old, adv, mask, clip_low=0.05, clip_high=0.08, **dec)
    full.backward()

    norms = loss_normalizers(mask)
    assert norms == {"num_tokens": int(mask.sum()), "num_sequences": 6}
    micro_lp = lp.clone().requires_grad_(True)
    total = 0.0
    for sl in (slice(0, 2), slice(2, 3), slice(3, 4), slice(4, 7)):
        part_dec = dict(behaviour_logprobs=beh[sl], tis_cap=1.05) if decoupled else {}
        part, _ = policy_loss(name, micro_lp[sl], old[sl], adv[sl], mask[sl], clip_low=0.05, clip_high=0.08,
                              **part_dec, **norms)
        part.backward()  # accumulates into micro_lp.grad, as a learner's micro-batches do
        total += part.item()
    assert total == pytest.approx(full.item(), abs=1e-12)
    assert torch.allclose(micro_lp.grad, full_lp.grad, atol=1e-14)
    # and without the normalizers the sum would differ: the test can fail
    wrong = sum(policy_loss(name, lp[sl], old[sl], adv[sl], mask[sl], clip_low=0.05, clip_high=0.08)[0].item()
                for sl in (slice(0, 2), slice(2, 7)))
    assert abs(wrong - full.item()) > 1e-6


def test_decoupled_weight_is_applied_once_hand_computed():
    """Issue 13 item 1: a token whose learner (proximal) log-prob exceeds the engine's by 0.1, before
    any update (current = proximal): ratio 1, weight e^0.1, gradient -A e^0.1 / N. The old code, whose
    ratio was taken against the engine and then weighted again, gave e^0.2."""
    prox = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    beh = prox - torch.tensor([[0.1, -0.05]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = torch.tensor([1.0], dtype=torch.float64)
    loss, grad, m = run("dapo", prox, prox, adv, mask, behaviour_logprobs=beh, tis_cap=2.0)
    assert loss.item() == pytest.approx(-(math.exp(0.1) + math.exp(-0.05)) / 2, abs=1e-12)
    assert close(grad, [[-math.exp(0.1) / 2, -math.exp(-0.05) / 2]])
    assert m["ratio_max"].item() == 1.0 and m["clip_fraction"].item() == 0.0
    assert m["tis_weight_mean"].item() == pytest.approx((math.exp(0.1) + math.exp(-0.05)) / 2)
    # The cap truncates: C = 1.05 < e^0.1.
    loss, grad, m = run("dapo", prox, prox, adv, mask, behaviour_logprobs=beh, tis_cap=1.05)
    assert close(grad, [[-1.05 / 2, -math.exp(-0.05) / 2]])
    assert m["tis_capped_fraction"].item() == 0.5
    # GSPO: one sequence weight, the geometric mean exp((0.1 - 0.05) / 2), capped as a whole.
    loss, grad, m = run("gspo", prox, prox, adv, mask, behaviour_logprobs=beh, tis_cap=2.0)
    w = math.exp(0.025)
    assert loss.item() == pytest.approx(-w, abs=1e-12)
    assert close(grad, [[-w / 2, -w / 2]])  # d s / d lp_t = s / n, s = 1
    # Coupled form on the same tokens: the ratio against the engine is e^0.1, weight 1.
    _, grad, m = run("dapo", prox, beh, adv, mask)
    assert close(grad, [[-math.exp(0.1) / 2, -math.exp(-0.05) / 2]])
    assert m["tis_weight_mean"].item() == 1.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_decoupled_matches_float64_loop_reference(name, seed):
    cl, ch = 0.05, 0.08
    lp, prox, adv, mask, beh = decoupled_batch(seed + 10, spread=0.3 if name == "dapo" else 0.15, gap=0.3)
    cap = 1.1
    loss, grad, m = run(name, lp, prox, adv, mask, clip_low=cl, clip_high=ch, behaviour_logprobs=beh, tis_cap=cap)
    rl, rg, rclip, *_ = ref_loss(name, lp.tolist(), prox.tolist(), adv.tolist(), mask.tolist(), cl, ch,
                                 beh=beh.tolist(), cap=cap)
    assert loss.item() == pytest.approx(rl, abs=1e-12)
    assert close(grad, rg)
    assert m["clip_fraction"].item() == pytest.approx(rclip, abs=1e-6)
    assert 0 < m["tis_capped_fraction"].item() < 1  # the cap acts on some units, not all


def test_dual_clip_bounds_a_runaway_ratio_on_a_negative_advantage():
    """Issue 13 item 4: ratio e^5 with A = -1 gets gradient e^5 ~ 148x an ordinary token's without the
    dual clip; with c = 3 its loss is 3 |A| and its gradient 0. Ratio 2.5 < c is untouched."""
    lp = torch.tensor([[5.0, math.log(2.5), 0.0]], dtype=torch.float64)
    old = torch.zeros(1, 3, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    adv = torch.tensor([-1.0], dtype=torch.float64)
    loss, grad, m = run("dapo", lp, old, adv, mask, clip_ratio_c=None)
    assert close(grad, [[math.exp(5) / 3, 2.5 / 3, 1 / 3]])
    assert grad[0, 0].item() / grad[0, 2].item() == pytest.approx(math.exp(5))
    loss, grad, m = run("dapo", lp, old, adv, mask, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx((3.0 + 2.5 + 1.0) / 3, abs=1e-12)
    assert close(grad, [[0.0, 2.5 / 3, 1 / 3]])
    assert m["dual_clip_fraction"].item() == pytest.approx(1 / 3) and m["clip_fraction"].item() == 0.0
    # A > 0: the dual clip never acts (the PPO clip already zeroes a high ratio's gradient).
    _, grad, m = run("dapo", lp, old, -adv, mask, clip_ratio_c=3.0)
    assert close(grad, [[0.0, 0.0, -1 / 3]]) and m["dual_clip_fraction"].item() == 0.0
    # Sequence ratio s = exp(mean(5, 0.9163, 0)) = e^1.97 > 3 on A < 0: dual-clipped too.
    loss, grad, m = run("gspo", lp, old, adv, mask, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(3.0, abs=1e-12) and close(grad, [[0.0, 0.0, 0.0]])
    assert m["dual_clip_fraction"].item() == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_dual_clip_and_log_ratio_clamp_match_float64_reference(name):
    # Wide spread so some ratios pass c = 1.5 and some log-ratios pass L = 0.7.
    lp, old, adv, mask = random_batch(21, B=8, T=6, spread=1.5 if name == "dapo" else 1.0)
    kw = dict(clip_low=0.2, clip_high=0.28, clip_ratio_c=1.5, log_ratio_clamp=0.7)
    loss, grad, m = run(name, lp, old, adv, mask, **kw)
    rl, rg, rclip, rratio, rkl, rdual = ref_loss(name, lp.tolist(), old.tolist(), adv.tolist(), mask.tolist(),
                                                 0.2, 0.28, c=1.5, L=0.7)
    assert loss.item() == pytest.approx(rl, abs=1e-12)
    assert close(grad, rg)
    assert m["clip_fraction"].item() == pytest.approx(rclip, abs=1e-6)
    assert m["dual_clip_fraction"].item() == pytest.approx(rdual, abs=1e-6) and rdual > 0
    assert m["approx_kl"].item() == pytest.approx(rkl, rel=1e-6)
    if name == "dapo":
        assert (lp - old)[mask].abs().max() > 0.7  # the clamp acted


def test_log_ratio_clamp_keeps_gradients_finite():
    # float32: exp(100) overflows; unclamped, the clipped token's zero gradient becomes inf * 0 = NaN.
    lp = torch.tensor([[100.0, 0.1]])
    old = torch.zeros(1, 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = torch.tensor([1.0])
    _, grad, _ = run("dapo", lp, old, adv, mask, log_ratio_clamp=None, clip_ratio_c=None)
    assert torch.isnan(grad).any()
    loss, grad, m = run("dapo", lp, old, adv, mask)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert grad[0].tolist() == pytest.approx([0.0, -math.exp(0.1) / 2], rel=1e-6)
    assert m["ratio_max"].item() == pytest.approx(math.exp(20.0), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_fresh_sequences_get_their_own_clip_fraction(name):
    lp, old, adv, mask = random_batch(2, spread=0.3 if name == "dapo" else 0.15)
    fresh = torch.tensor([True, False, True, False, False, True])
    _, m_all = policy_loss(name, lp, old, adv, mask, clip_low=0.05, clip_high=0.08, fresh=fresh)
    rows = fresh.nonzero().flatten()
    _, m_sub = policy_loss(name, lp[rows], old[rows], adv[rows], mask[rows], clip_low=0.05, clip_high=0.08)
    _, m_none = policy_loss(name, lp, old, adv, mask, clip_low=0.05, clip_high=0.08)
    want_units = mask[rows].sum() if name == "dapo" else mask[rows].any(-1).sum()
    assert m_all["num_fresh_units"].item() == want_units.item()
    assert m_all["clip_fraction_fresh"].item() == pytest.approx(m_sub["clip_fraction"].item(), abs=1e-7)
    assert m_all["clip_fraction"].item() == pytest.approx(m_none["clip_fraction"].item())
    assert m_none["num_fresh_units"].item() == 0 and m_none["clip_fraction_fresh"].item() == 0.0


def test_defaults_agree_with_the_config():
    algo = AlgoConfig()
    assert (algo.clip_ratio_c, algo.log_ratio_clamp) == (DEFAULT_CLIP_RATIO_C, DEFAULT_LOG_RATIO_CLAMP) == (3.0, 20.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="ppo"), "unknown objective"),
        (dict(logprobs=torch.zeros(2, 3, 1)), r"\[B, T\]"),
        (dict(old_logprobs=torch.zeros(2, 4)), "old_logprobs has shape"),
        (dict(mask=torch.ones(3, 3)), "mask has shape"),
        (dict(advantages=torch.zeros(2, 1)), "advantages must be"),
        (dict(behaviour_logprobs=torch.ones(2), tis_cap=2.0), "behaviour_logprobs has shape"),
        (dict(behaviour_logprobs=torch.ones(2, 3)), "needs both behaviour_logprobs and tis_cap"),
        (dict(tis_cap=2.0), "needs both behaviour_logprobs and tis_cap"),
        (dict(behaviour_logprobs=torch.ones(2, 3), tis_cap=0.0), "tis_cap must be > 0"),
        (dict(clip_ratio_c=1.0), "clip_ratio_c must be > 1"),
        (dict(log_ratio_clamp=0.0), "log_ratio_clamp must be > 0"),
        (dict(fresh=torch.ones(3, dtype=torch.bool)), "fresh must be"),
        (dict(clip_low=1.0), "clip_low"),
    ],
)
def test_bad_input_errors(kwargs, match):
    args = dict(name="dapo", logprobs=torch.zeros(2, 3), old_logprobs=torch.zeros(2, 3), advantages=torch.zeros(2),
                mask=torch.ones(2, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        policy_loss(**args)
