"""Varlen attention over a packed row equals each sequence's own causal attention (float64 loop)."""

import math

import pytest
import torch

from nous_ray.train.attention import cu_seqlens, varlen_attention


def _reference(q, k, v, lengths, scale):
    """Per sequence, per head, per query: softmax over that sequence's earlier keys, in float64."""
    _, H, T, D = q.shape
    group = H // k.shape[1]
    out = torch.zeros(T, H, D, dtype=torch.float64)
    start = 0
    for n in lengths:
        for h in range(H):
            for i in range(start, start + n):
                keys = range(start, i + 1)
                s = torch.tensor([float(q[0, h, i].double() @ k[0, h // group, j].double()) * scale for j in keys])
                w = torch.softmax(s, 0)
                out[i, h] = sum(w[m] * v[0, h // group, j].double() for m, j in enumerate(keys))
        start += n
    return out[None]


@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (4, 2)])
@pytest.mark.parametrize("boundaries", ["cu_seqlens", "position_ids"])
def test_matches_per_sequence_reference(heads, kv_heads, boundaries):
    torch.manual_seed(0)
    lengths = [3, 1, 5, 2]
    T, D = sum(lengths), 8
    q = torch.randn(1, heads, T, D)
    k = torch.randn(1, kv_heads, T, D)
    v = torch.randn(1, kv_heads, T, D)
    scale = 1 / math.sqrt(D)
    if boundaries == "cu_seqlens":
        cu, max_len = cu_seqlens(lengths)
        kw = {"cu_seq_lens_q": cu, "max_length_q": max_len}
    else:
        kw = {"position_ids": torch.tensor([p for n in lengths for p in range(n)])[None]}
    out, weights = varlen_attention(None, q, k, v, None, scaling=scale, **kw)
    assert weights is None
    assert out.shape == (1, T, heads, D)
    ref = _reference(q, k, v, lengths, scale)
    assert torch.allclose(out.double(), ref, atol=1e-5), (out.double() - ref).abs().max()


def test_gradients_stay_inside_each_sequence():
    torch.manual_seed(1)
    lengths = [4, 3]
    q, k, v = (torch.randn(1, 2, 7, 8, requires_grad=True) for _ in range(3))
    cu, m = cu_seqlens(lengths)
    out, _ = varlen_attention(None, q, k, v, None, scaling=0.3, cu_seq_lens_q=cu, max_length_q=m)
    out[0, 4:].sum().backward()  # only the second sequence's outputs
    for t in (q, k, v):
        assert float(t.grad[0, :, :4].abs().max()) == 0.0
        assert float(t.grad[0, :, 4:].abs().max()) > 0.0


def test_cu_seqlens_and_bad_lengths():
    cu, m = cu_seqlens([2, 5, 1])
    assert cu.tolist() == [0, 2, 7, 8] and cu.dtype == torch.int32 and m == 5
    with pytest.raises(ValueError, match="needs >= 1 token"):
        cu_seqlens([3, 0])
