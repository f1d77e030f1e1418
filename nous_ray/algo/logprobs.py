"""Log-probabilities and entropies of target tokens, computed chunk by chunk over positions.

The naive ``log_softmax(hidden @ W.T).gather(targets)`` materializes [T, V] float32 logits, plus
as much again for autograd: at T = 40,960 and Qwen3's V = 151,936 that is ~25 GB per copy.
Here the logits exist for one chunk of ``chunk_size`` positions at a time, in forward and again
(recomputed) in backward, so the extra memory is O(chunk_size * V) whatever T is. Only the
[T] log-sum-exp is kept between the passes.

Math, per position t with logits z = h_t W^T / tau (tau = temperature), target y:

    logp_t = z_y - logsumexp(z),     d logp_t / d z = onehot(y) - softmax(z)
    dL/dh_t = (g_t / tau) (onehot(y) - p) W,   dL/dW = sum_t (g_t / tau) (onehot(y) - p)^T h_t

with g_t = dL/d logp_t. The matmul runs in the inputs' dtype (as the Hugging Face model's lm_head
and vLLM do, so the log-probs match theirs); log-sum-exp and softmax run in float32 at least
(float64 inputs stay float64); the weight gradient is accumulated over chunks in that precision
and cast to the weight's dtype at the end (for a bf16 [V, H] head that is one extra float32 copy
of the head: 3.1 GB for Qwen3-14B).

Under FSDP2 pass the *unsharded* head weight (call inside the module's forward, e.g. from a
forward hook on the final norm or with the root module unsharded), not the sharded DTensor.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

__all__ = ["token_logprobs", "token_entropy"]


def _check(fn: str, hidden: Tensor, weight: Tensor, targets: Optional[Tensor], chunk_size: int, temperature: float):
    if hidden.dim() not in (2, 3):
        raise ValueError(f"{fn}: hidden must be [T, H] or [B, T, H], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"{fn}: lm_head_weight must be [V, H] with H = {hidden.shape[-1]}, got shape {tuple(weight.shape)}"
        )
    if targets is not None and targets.shape != hidden.shape[:-1]:
        raise ValueError(
            f"{fn}: targets shape {tuple(targets.shape)} must be hidden's leading {tuple(hidden.shape[:-1])}"
        )
    if targets is not None and (targets.is_floating_point() or targets.is_complex()):
        raise ValueError(f"{fn}: targets must be an integer tensor, got {targets.dtype}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be a positive int, got {chunk_size!r}")
    if not temperature > 0:
        raise ValueError(f"{fn}: temperature must be > 0, got {temperature}")


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    # float32 at least; float64 stays float64 (the tests' references run in float64).
    if torch.float64 in (hidden.dtype, weight.dtype):
        return torch.float64
    return torch.float32


def _chunk_logits(h: Tensor, weight: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    z = (h @ weight.t()).to(dtype) if h.dtype == weight.dtype else h.to(dtype) @ weight.to(dtype).t()
    if temperature != 1.0:
        z.div_(temperature)
    return z


def _entropy(z: Tensor, lse: Tensor) -> Tensor:
    """Entropy of softmax(z) per row: ``lse - sum_v p_v z_v`` (z [n, V], lse [n] its logsumexp)."""
    return lse - (torch.exp(z - lse[:, None]) * z).sum(-1)


class _ChunkedTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk_size: int, temperature: float,
                with_entropy: bool):
        # hidden [N, H], weight [V, H], targets [N] (valid ids; ignored positions already hold 0).
        # The entropy (a metric, no gradient) comes from the same chunk of logits: a second pass would
        # cost another [N, H] x [H, V] product, as much as the forward's own.
        dtype = _compute_dtype(hidden, weight)
        N = hidden.shape[0]
        out = torch.empty(N, dtype=dtype, device=hidden.device)
        lse = torch.empty(N, dtype=dtype, device=hidden.device)
        ent = torch.empty(N if with_entropy else 0, dtype=dtype, device=hidden.device)
        for s in range(0, N, chunk_size):
            e = min(s + chunk_size, N)
            z = _chunk_logits(hidden[s:e], weight, temperature, dtype)
            lse[s:e] = torch.logsumexp(z, dim=-1)
            out[s:e] = z.gather(1, targets[s:e, None]).squeeze(1) - lse[s:e]
            if with_entropy:
                ent[s:e] = _entropy(z, lse[s:e])
            del z
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size, ctx.temperature = chunk_size, temperature
        ctx.mark_non_differentiable(ent)
        return out, ent

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, _grad_entropy: Tensor):
        hidden, weight, targets, lse = ctx.saved_tensors
        chunk_size, tau = ctx.chunk_size, ctx.temperature
        dtype = lse.dtype
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
        g = grad_out.to(dtype) / tau
        N = hidden.shape[0]
        for s in range(0, N, chunk_size):
            e = min(s + chunk_size, N)
            h = hidden[s:e]
            z = _chunk_logits(h, weight, tau, dtype)
            # In place, so one [chunk, V] buffer serves: z -> -g * softmax(z) -> g * (onehot - p).
            z.sub_(lse[s:e, None]).exp_().mul_(-g[s:e, None])
            z.scatter_add_(1, targets[s:e, None], g[s:e, None])
            if need_h:
                grad_h[s:e] = (z.to(weight.dtype) @ weight).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(z.t(), h.to(dtype))
            del z
        if need_w:
            grad_w = grad_w.to(weight.dtype)
        return grad_h, grad_w, None, None, None, None


def _flatten(hidden: Tensor, targets: Optional[Tensor], ignore_index: int):
    h = hidden.reshape(-1, hidden.shape[-1])
    if targets is None:
        return h, None, None
    t = targets.reshape(-1).long()
    ignored = t == ignore_index
    return h, torch.where(ignored, torch.zeros_like(t), t), ignored


def token_logprobs(
    hidden: Tensor,
    lm_head_weight: Tensor,
    targets: Tensor,
    chunk_size: int = 1024,
    temperature: float = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """``log softmax(hidden @ lm_head_weight.T / temperature)[targets]``, chunked over positions.

    Args:
        hidden: [T, H] or [B, T, H] final hidden states (after the last norm), any float dtype.
        lm_head_weight: [V, H] output projection (the embedding matrix when tied).
        targets: [T] or [B, T] integer token ids (the token *following* each position);
            positions equal to ``ignore_index`` get log-prob 0 and no gradient.
        chunk_size: positions per chunk; memory is O(chunk_size * V) in float32.
        temperature: divides the logits (use the sampling temperature, so the log-probs are
            those of the distribution the tokens were drawn from).
        with_entropy: also return each position's entropy (as :func:`token_entropy`, no grad),
            from the same logits, at no extra matrix product.

    Returns:
        [T] or [B, T] log-probs in float32 (float64 if an input is float64), differentiable w.r.t.
        ``hidden`` and ``lm_head_weight`` (same values and gradients as the naive computation;
        backward recomputes each chunk's logits). Not twice differentiable. With ``with_entropy``:
        ``(logprobs, entropy)``, entropy of the same shape (ignored positions included).
    """
    _check("token_logprobs", hidden, lm_head_weight, targets, chunk_size, temperature)
    h, t, ignored = _flatten(hidden, targets, ignore_index)
    V = lm_head_weight.shape[0]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= V):
        bad = t[(t < 0) | (t >= V)][0].item()
        raise ValueError(f"token_logprobs: target id {bad} outside the vocabulary [0, {V}) "
                         f"(ignore_index={ignore_index})")
    out, ent = _ChunkedTokenLogprobs.apply(h, lm_head_weight, t, chunk_size, float(temperature), with_entropy)
    out = torch.where(ignored, torch.zeros_like(out), out).reshape(targets.shape)
    return (out, ent.reshape(targets.shape)) if with_entropy else out


@torch.no_grad()
def token_entropy(
    hidden: Tensor, lm_head_weight: Tensor, chunk_size: int = 1024, temperature: float = 1.0
) -> Tensor:
    """Entropy of the next-token distribution at each position, chunked, for metrics (no grad).

    ``H_t = logsumexp(z) - sum_v softmax(z)_v z_v`` with z = h_t W^T / temperature.

    Args:
        hidden: [T, H] or [B, T, H].
        lm_head_weight: [V, H].
        chunk_size, temperature: as in :func:`token_logprobs`.

    Returns:
        [T] or [B, T] entropies in nats, float32 (float64 for float64 input) (mask padding yourself).
    """
    _check("token_entropy", hidden, lm_head_weight, None, chunk_size, temperature)
    h, _, _ = _flatten(hidden, None, 0)
    N = h.shape[0]
    dtype = _compute_dtype(h, lm_head_weight)
    out = torch.empty(N, dtype=dtype, device=h.device)
    for s in range(0, N, chunk_size):
        e = min(s + chunk_size, N)
        z = _chunk_logits(h[s:e], lm_head_weight, temperature, dtype)
        out[s:e] = _entropy(z, torch.logsumexp(z, dim=-1))
        del z
    return out.reshape(hidden.shape[:-1])
