"""Chunked token log-probs and entropies: values and gradients vs naive float64 references."""

import math

import pytest
import torch

from nous_ray.algo import token_entropy, token_logprobs


def naive(hidden, weight, targets, temperature=1.0):
    z = (hidden.double() @ weight.double().t()) / temperature
    return torch.log_softmax(z, dim=-1).gather(-1, targets[..., None].long()).squeeze(-1)


def make(T=37, H=8, V=53, B=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (T, H) if B is None else (B, T, H)
    hidden = torch.randn(shape, generator=g, dtype=dtype)
    weight = torch.randn(V, H, generator=g, dtype=dtype) * 0.5
    targets = torch.randint(0, V, shape[:-1], generator=g)
    return hidden, weight, targets


def test_tiny_example_against_python_loop():
    hidden = torch.tensor([[1.0, 0.0], [0.5, -2.0], [0.0, 0.0]], dtype=torch.float64)
    weight = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, 0.3]], dtype=torch.float64)
    targets = torch.tensor([0, 2, 1])
    want = []
    for t in range(3):
        z = [sum(hidden[t, k].item() * weight[v, k].item() for k in range(2)) / 0.7 for v in range(3)]
        lse = math.log(sum(math.exp(x) for x in z))
        want.append(z[targets[t]] - lse)
    got = token_logprobs(hidden, weight, targets, chunk_size=2, temperature=0.7)
    assert got.tolist() == pytest.approx(want, abs=1e-14)
    assert got.tolist()[2] == pytest.approx(-math.log(3), abs=1e-14)  # zero hidden -> uniform


@pytest.mark.parametrize("chunk_size", [1, 5, 37, 100])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("batched", [False, True])
def test_values_and_grads_match_naive_float64(chunk_size, temperature, batched):
    hidden, weight, targets = make(B=3 if batched else None, T=13 if batched else 37)
    upstream = torch.randn(targets.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    out = token_logprobs(h1, w1, targets, chunk_size=chunk_size, temperature=temperature)
    (out * upstream).sum().backward()

    h2, w2 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    ref = naive(h2, w2, targets, temperature)
    (ref * upstream).sum().backward()

    assert out.shape == targets.shape and out.dtype == torch.float64
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    assert torch.allclose(h1.grad, h2.grad, atol=1e-12, rtol=0)
    assert torch.allclose(w1.grad, w2.grad, atol=1e-12, rtol=0)


def test_gradcheck_numerical():
    hidden, weight, targets = make(T=6, H=3, V=7)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda h, w: token_logprobs(h, w, targets, chunk_size=4, temperature=0.8), (hidden, weight)
    )


def test_float32_close_to_float64_reference():
    hidden, weight, targets = make(T=64, H=16, V=300, dtype=torch.float32)
    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    out = token_logprobs(h1, w1, targets, chunk_size=16)
    out.sum().backward()
    h2, w2 = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
    ref = naive(h2, w2, targets)
    ref.sum().backward()
    assert out.dtype == torch.float32 and h1.grad.dtype == torch.float32 and w1.grad.dtype == torch.float32
    assert torch.allclose(out.double(), ref, atol=2e-5, rtol=0)
    assert torch.allclose(h1.grad.double(), h2.grad, atol=2e-5, rtol=0)
    assert torch.allclose(w1.grad.double(), w2.grad, atol=2e-5, rtol=0)


def test_bfloat16_inputs_give_float32_logprobs():
    hidden, weight, targets = make(T=32, H=16, V=100, dtype=torch.float32)
    hb, wb = hidden.bfloat16().requires_grad_(True), weight.bfloat16().requires_grad_(True)
    out = token_logprobs(hb, wb, targets, chunk_size=8)
    out.sum().backward()
    assert out.dtype == torch.float32
    assert hb.grad.dtype == torch.bfloat16 and wb.grad.dtype == torch.bfloat16
    ref = naive(hb.detach(), wb.detach(), targets)  # same bf16-rounded inputs, float64 math
    assert torch.allclose(out.double(), ref, atol=0.1, rtol=0)  # bf16 matmul output rounding


def test_ignore_index_positions_give_zero_and_no_grad():
    hidden, weight, targets = make(T=10)
    targets[[2, 7]] = -100
    h = hidden.clone().requires_grad_(True)
    out = token_logprobs(h, weight, targets, chunk_size=3)
    out.sum().backward()
    assert out[2].item() == 0.0 and out[7].item() == 0.0
    assert torch.equal(h.grad[[2, 7]], torch.zeros(2, hidden.shape[1], dtype=hidden.dtype))
    keep = [i for i in range(10) if i not in (2, 7)]
    assert torch.allclose(out[keep], naive(hidden[keep], weight, targets[keep]), atol=1e-12)


def test_frozen_head_and_frozen_hidden():
    hidden, weight, targets = make(T=9)
    h = hidden.clone().requires_grad_(True)
    token_logprobs(h, weight, targets, chunk_size=4).sum().backward()
    assert h.grad is not None and weight.grad is None
    w = weight.clone().requires_grad_(True)
    token_logprobs(hidden, w, targets, chunk_size=4).sum().backward()
    assert w.grad is not None
    w2 = weight.clone().requires_grad_(True)
    naive(hidden, w2, targets).sum().backward()
    assert torch.allclose(w.grad, w2.grad, atol=1e-12)


def test_tied_weight_receives_both_gradients():
    # Tied embeddings: the same parameter feeds the hidden states and the head.
    hidden, weight, targets = make(T=8)
    w1 = weight.clone().requires_grad_(True)
    token_logprobs(w1[targets] * 0.7, w1, targets, chunk_size=3).sum().backward()
    w2 = weight.clone().requires_grad_(True)
    naive(w2[targets] * 0.7, w2, targets).sum().backward()
    assert torch.allclose(w1.grad, w2.grad, atol=1e-12)


def test_backward_keeps_no_full_logits():
    # Autograd must hold only hidden, weight, targets and the [T] log-sum-exp, never [T, V].
    T, V = 64, 97
    hidden, weight, targets = make(T=T, V=V)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    h = hidden.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = token_logprobs(h, weight, targets, chunk_size=8)
    assert max(sizes) < T * V and max(sizes) <= max(hidden.numel(), weight.numel())
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        naive(h, weight, targets)
    assert max(sizes) >= T * V  # the check can fail: the naive path does save [T, V]
    out.sum().backward()


@pytest.mark.parametrize("batched", [False, True])
def test_entropy_matches_naive(batched):
    hidden, weight, _ = make(B=2 if batched else None, T=11)
    h = hidden.clone().requires_grad_(True)
    got = token_entropy(h, weight, chunk_size=4, temperature=0.9)
    z = (hidden @ weight.t()) / 0.9
    p = torch.softmax(z, -1)
    ref = -(p * torch.log_softmax(z, -1)).sum(-1)
    assert got.shape == hidden.shape[:-1] and not got.requires_grad
    assert torch.allclose(got, ref, atol=1e-12)
    uniform = token_entropy(torch.zeros(1, hidden.shape[-1], dtype=torch.float64), weight)
    assert uniform.item() == pytest.approx(math.log(weight.shape[0]), abs=1e-12)


def test_entropy_from_the_logprob_pass_matches_and_leaves_the_gradient_alone():
    """``with_entropy`` reads the entropy off the forward's own logits: the same numbers as
    token_entropy, ignored positions included, and log-probs and gradients as without it."""
    hidden, weight, targets = make(B=2, T=9)
    targets[0, 3] = -100
    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    h2, w2 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    lp, ent = token_logprobs(h1, w1, targets, chunk_size=4, temperature=0.8, with_entropy=True)
    ref_lp = token_logprobs(h2, w2, targets, chunk_size=4, temperature=0.8)
    assert torch.equal(lp, ref_lp) and not ent.requires_grad and ent.shape == targets.shape
    assert torch.allclose(ent, token_entropy(hidden, weight, chunk_size=4, temperature=0.8), atol=1e-12)
    (lp * torch.arange(lp.numel(), dtype=lp.dtype).reshape(lp.shape)).sum().backward()
    (ref_lp * torch.arange(lp.numel(), dtype=lp.dtype).reshape(lp.shape)).sum().backward()
    assert torch.equal(h1.grad, h2.grad) and torch.equal(w1.grad, w2.grad)


@pytest.mark.parametrize(
    "hidden,weight,targets,chunk,match",
    [
        (torch.zeros(4), torch.zeros(5, 4), torch.zeros(1, dtype=torch.long), 2, "hidden must be"),
        (torch.zeros(3, 4), torch.zeros(5, 3), torch.zeros(3, dtype=torch.long), 2, "lm_head_weight"),
        (torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long), 2, "targets shape"),
        (torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(3), 2, "integer"),
        (torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(3, dtype=torch.long), 0, "chunk_size"),
        (torch.zeros(3, 4), torch.zeros(5, 4), torch.tensor([0, 5, 1]), 2, "target id 5 outside"),
        (torch.zeros(3, 4), torch.zeros(5, 4), torch.tensor([0, -1, 1]), 2, "target id -1 outside"),
    ],
)
def test_bad_input_errors(hidden, weight, targets, chunk, match):
    with pytest.raises(ValueError, match=match):
        token_logprobs(hidden, weight, targets, chunk_size=chunk)


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(3, dtype=torch.long), temperature=0.0)
