"""One packed micro-batch as tensors: several whole sequences concatenated into a single row.

Packing and attention: the row's ``position_ids`` restart at 0 at each sequence start and the model
is called with ``attention_mask=None`` and no KV cache. transformers (5.x) then detects the packed
format from the position resets (``masking_utils.find_packed_sequence_indices``) and, for sdpa and
eager attention on CPU as well as GPU, builds a block-diagonal causal mask, so no token attends
across a sequence boundary; flash-attention kernels use the same resets as varlen boundaries. Each
sequence therefore gets exactly the log-probs it gets alone (tests/integration/test_learner_packing.py
checks this against unpacked forwards).

Only response tokens are scored: the hidden state at row position ``p`` predicts the token at
``p + 1``, so response token k of a sequence starting at offset o with prompt length P is predicted
at ``o + P - 1 + k``. The log-prob head runs on those positions only (``pred_pos``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from nous_ray.train.attention import cu_seqlens

__all__ = ["MicroBatch", "build_micro_batch", "dummy_micro_batch"]


@dataclass
class MicroBatch:
    """B sequences packed into one row of T tokens, N response tokens in all, L the longest response.

    input_ids, position_ids: [1, T]. pred_pos: [N] row positions whose hidden state predicts a
    response token; targets: [N] those tokens. seq_idx, tok_idx: [N] each scored token's sequence
    (0..B-1) and place in its response, to scatter per-token values into [B, L].
    behaviour: [B, L] the rollout engine's log-probs (0 on padding); advantages: [B]; mask: [B, L].
    cu_seqlens: [B+1] int32 starts of the sequences in the row (and its end), max_seqlen the longest:
    the boundaries a variable-length attention kernel needs (nous_ray/train/attention.py).
    indices: the sequences' positions in the caller's list.
    """

    input_ids: Tensor
    position_ids: Tensor
    pred_pos: Tensor
    targets: Tensor
    seq_idx: Tensor
    tok_idx: Tensor
    behaviour: Tensor
    advantages: Tensor
    mask: Tensor
    cu_seqlens: Tensor
    max_seqlen: int
    indices: list[int]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device) -> "MicroBatch":
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return MicroBatch(**moved)

    def to_padded(self, values: Tensor) -> Tensor:
        """Scatter per-scored-token values [N] into [B, L] (0 elsewhere); differentiable."""
        out = values.new_zeros(self.mask.shape)
        return out.index_put((self.seq_idx, self.tok_idx), values)

    def from_padded(self, padded: Tensor) -> Tensor:
        """Inverse of :meth:`to_padded`: [B, L] -> [N]."""
        return padded[self.seq_idx, self.tok_idx]


def build_micro_batch(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    behaviour: Sequence[Sequence[float]] | None = None,
    advantages: Sequence[float] | None = None,
    indices: Sequence[int] | None = None,
) -> MicroBatch:
    """Pack sequences (prompt + response token ids) into one :class:`MicroBatch`.

    ``behaviour`` (per response token) and ``advantages`` (per sequence) default to zeros (SFT,
    log-prob computation). Every prompt needs >= 1 token (the first response token must be
    predicted from something); responses may be empty (no tokens scored).
    """
    B = len(prompts)
    if len(responses) != B:
        raise ValueError(f"build_micro_batch: {B} prompts but {len(responses)} responses")
    if B == 0:
        raise ValueError("build_micro_batch: no sequences")
    idx = list(range(B)) if indices is None else list(indices)
    L = max(1, max(len(r) for r in responses))
    ids: list[int] = []
    pos: list[int] = []
    pred, tgt, sidx, tidx, lengths = [], [], [], [], []
    beh = torch.zeros(B, L, dtype=torch.float32)
    mask = torch.zeros(B, L, dtype=torch.bool)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        if len(p) == 0:
            raise ValueError(f"build_micro_batch: sequence {idx[b]} has an empty prompt; need >= 1 prompt token")
        off = len(ids)
        ids.extend(p)
        ids.extend(r)
        n = len(p) + len(r)
        lengths.append(n)
        pos.extend(range(n))
        k = len(r)
        pred.extend(range(off + len(p) - 1, off + len(p) - 1 + k))
        tgt.extend(r)
        sidx.extend([b] * k)
        tidx.extend(range(k))
        mask[b, :k] = True
        if behaviour is not None:
            lp = behaviour[b]
            if len(lp) != k:
                raise ValueError(
                    f"build_micro_batch: sequence {idx[b]} has {k} response tokens but {len(lp)} behaviour log-probs"
                )
            if k:
                beh[b, :k] = torch.tensor(list(lp), dtype=torch.float32)
    adv = torch.zeros(B, dtype=torch.float32) if advantages is None else torch.tensor(list(advantages), dtype=torch.float32)
    if adv.shape != (B,):
        raise ValueError(f"build_micro_batch: {len(adv)} advantages for {B} sequences")
    long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    cu, max_len = cu_seqlens(lengths)
    return MicroBatch(
        input_ids=long(ids)[None],
        position_ids=long(pos)[None],
        pred_pos=long(pred),
        targets=long(tgt),
        seq_idx=long(sidx),
        tok_idx=long(tidx),
        behaviour=beh,
        advantages=adv,
        mask=mask,
        cu_seqlens=cu,
        max_seqlen=max_len,
        indices=idx,
    )


def dummy_micro_batch(token_id: int = 0) -> MicroBatch:
    """A 2-token micro-batch for a rank with fewer micro-batches than its peers.

    FSDP's collectives run once per forward and backward on every rank, so all ranks must run the
    same number of micro-batches; a rank with less work runs this with its loss multiplied by 0.
    """
    return build_micro_batch([[token_id]], [[token_id]], indices=[-1])
