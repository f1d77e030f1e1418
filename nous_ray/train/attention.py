"""Attention over packed rows whose cost is per sequence, not per row.

The learner packs several whole sequences into one row (:mod:`nous_ray.train.microbatch`). With
transformers' ``sdpa`` that row gets a dense [T, T] block-diagonal mask, so a row of T tokens costs
T^2 whatever its sequences' lengths: packing ends up slower than padding, and longer rows slower for
the same tokens. The ``varlen`` implementation registered here never builds that mask. It reads the
sequence boundaries the micro-batch already knows (``cu_seq_lens_q`` / ``max_length_q``, the
keyword arguments transformers forwards to every attention call) and runs

- on CUDA: torch's own variable-length flash kernel (``torch.nn.attention.varlen.varlen_attn``,
  causal window (-1, 0)), one launch for the whole row;
- elsewhere: one causal ``scaled_dot_product_attention`` per sequence, so the cost is the sum of
  each sequence's own T_i^2.

Registered under the name :data:`VARLEN` with transformers' ``AttentionInterface`` (and a mask
function that builds nothing), so ``from_pretrained(..., attn_implementation=VARLEN)`` selects it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["VARLEN", "cu_seqlens", "register", "varlen_attention"]

VARLEN = "varlen"


def cu_seqlens(lengths: Sequence[int]) -> tuple[Tensor, int]:
    """Cumulative sequence starts ``[0, l0, l0+l1, ...]`` (int32, [B+1]) and the longest length."""
    if not lengths or any(int(n) < 1 for n in lengths):
        raise ValueError(f"cu_seqlens: every packed sequence needs >= 1 token, got {list(lengths)}")
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor([int(n) for n in lengths], dtype=torch.int32), 0)
    return cu, max(int(n) for n in lengths)


def _bounds_from_positions(position_ids: Tensor) -> list[int]:
    # Fallback when no boundaries were passed: a packed row restarts its position ids at 0.
    starts = (position_ids.reshape(-1) == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return starts + [int(position_ids.numel())]


def varlen_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Optional[Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Causal attention of each packed sequence with itself only.

    Args:
        query: [1, H, T, D]; key, value: [1, H_kv, T, D] (H divisible by H_kv: grouped-query).
        kwargs: ``cu_seq_lens_q`` ([B+1] int) and ``max_length_q`` from the caller, else
            ``position_ids`` [1, T] whose resets to 0 mark the starts.

    Returns:
        ``([1, T, H, D], None)``, the layout transformers' attention functions return.
    """
    if query.shape[0] != 1:
        raise ValueError(f"varlen attention takes one packed row, got a batch of {query.shape[0]}")
    if dropout:
        raise ValueError("varlen attention has no dropout (the learner trains without it)")
    gqa = key.shape[1] != query.shape[1]
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        position_ids = kwargs.get("position_ids")
        bounds = _bounds_from_positions(position_ids) if position_ids is not None else [0, query.shape[2]]
    else:
        bounds = None
    if query.is_cuda:
        from torch.nn.attention.varlen import varlen_attn

        if cu is None:
            cu = torch.tensor(bounds, dtype=torch.int32, device=query.device)
            max_len = max(b - a for a, b in zip(bounds, bounds[1:]))
        else:
            cu = cu.to(device=query.device, dtype=torch.int32)
            max_len = int(kwargs.get("max_length_q") or int((cu[1:] - cu[:-1]).max()))
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [T, H, D]
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scaling, window_size=(-1, 0), enable_gqa=gqa)
        return out.unsqueeze(0), None
    if bounds is None:
        bounds = cu.tolist()
    parts = [
        F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True,
                                       scale=scaling, enable_gqa=gqa)
        for a, b in zip(bounds, bounds[1:])
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs) -> None:
    # The boundaries travel as cu_seq_lens; a [T, T] mask is exactly what this implementation avoids.
    return None


_registered = False


def register() -> str:
    """Make :data:`VARLEN` a transformers attention implementation (idempotent); returns the name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(VARLEN, varlen_attention)
        AttentionMaskInterface.register(VARLEN, _no_mask)
        _registered = True
    return VARLEN
