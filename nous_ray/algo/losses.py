"""Clipped policy-gradient objectives of the GRPO family: DAPO, GSPO and GSPO+.

Notation (B sequences, T padded positions, mask m[i, t] = 1 on response tokens):

- ``d[i, t] = clamp(logprobs - old_logprobs, -L, L)`` (0 where m = 0), L = ``log_ratio_clamp``
  (20, as verl); ``n_i = sum_t m[i, t]``. The clamp keeps ``exp`` finite (a ratio of e^30 would
  overflow float32's gradient to inf * 0 = NaN); a clamped token gets no gradient, which a ratio
  that far from 1 gets from the clip anyway.
- token ratio ``r[i, t] = exp(d[i, t])``; sequence ratio ``s_i = exp(sum_t d[i, t] / n_i)``.
- clipped surrogate for a ratio x and advantage A:
  ``l(x, A) = -min(x * A, clip(x, 1 - clip_low, 1 + clip_high) * A)``, and with dual-clip
  (``clip_ratio_c`` = c > 1, as verl) for A < 0 only: ``l(x, A) = min(l(x, A), -c * A)``, so a unit
  whose ratio ran away (x > c) on a negative advantage costs at most c |A| and gets no gradient
  (without it, ratio e^5 and A = -1 gives a gradient 148x an ordinary unit's).
  The PPO clip wins (strictly, no gradient) where A > 0 and x > 1 + clip_high, or A < 0 and
  x < 1 - clip_low: counted in ``clip_fraction``; the dual clip wins where A < 0 and x > c: counted
  in ``dual_clip_fraction``. The two sets are disjoint.

Objectives (w = the behaviour weight below, 1 in the coupled form):

- ``dapo``:      ``loss = sum_{i,t} m w[i,t] l(r[i,t], A_i) / N_tok``      (token-level)
- ``gspo``:      ``loss = sum_i  v_i w_i l(s_i, A_i) / N_seq``              (sequence mean)
- ``gspo_plus``: ``loss = sum_i  v_i w_i n_i l(s_i, A_i) / N_tok``          (token-weighted)

where v_i = 1 if n_i > 0. In GSPO, d s_i / d logprobs[i, t] = s_i / n_i, so a token of a long
sequence weighs less than one of a short sequence; GSPO+ multiplies by n_i so every unclipped
token gets gradient ``-A_i w_i s_i / N_tok``, whatever its sequence length.

Which old policy (two forms; the caller chooses by passing ``behaviour_logprobs`` or not):

- coupled (``behaviour_logprobs=None``): ``old_logprobs`` are the behaviour policy's (the rollout
  engine's log-probs of the sampled tokens) and w = 1. The clip then acts on the whole gap between
  the current policy and the engine: the update, the policy's staleness and the engine/learner
  numeric mismatch.
- decoupled (AReaL's decoupled PPO): ``old_logprobs`` are a *proximal* policy's (the learner's own
  log-probs under the weights it holds at the start of the training step) and each unit is weighted
  by the truncated importance weight of the proximal policy over the behaviour policy:
  ``w[i, t] = min(exp(clamp(old - behaviour, -L, L)), tis_cap)`` per token (dapo), or
  ``w_i = min(exp(sum_t clamp(old - behaviour, -L, L)[i, t] / n_i), tis_cap)`` per sequence
  (gspo, gspo_plus: the geometric mean, so that the sequence ratio against the engine factors
  exactly as s_i(pi / behaviour) = s_i(pi / prox) * s_i(prox / behaviour) before the cap).
  The clip acts on the update only; staleness and engine mismatch go into w, once. The behaviour
  log-probs are the only behaviour input: tokens sampled by different policy versions need no
  other correction. (AReaL drops tokens whose weight exceeds the cap and averages token weights
  arithmetically in its sequence-level mode; here weights are truncated, as TIS, and geometric.)

Normalizers: ``N_tok`` (``num_tokens``) defaults to this batch's response tokens and ``N_seq``
(``num_sequences``) to this batch's sequences with at least one response token. When a minibatch
is split into micro-batches whose gradients are accumulated, pass the *whole minibatch's* counts
(see :func:`loss_normalizers`): the sum of the micro-batch losses then equals the minibatch loss
exactly, values and gradients. A normalizer of 0 is treated as 1 (the numerator is 0 then).
With data parallelism, whose gradient all-reduce *averages* over R ranks, pass the counts summed
over all ranks' minibatches and multiply the loss by R (or sum the gradients instead), so that a
rank holding longer responses is not down-weighted.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

__all__ = ["DEFAULT_CLIP", "DEFAULT_CLIP_RATIO_C", "DEFAULT_LOG_RATIO_CLAMP", "LOSSES", "policy_loss",
           "loss_normalizers"]

# (clip_low, clip_high) per objective. DAPO's clip-higher; GSPO's paper values (sequence ratios
# are geometric means, so they stray from 1 far less than token ratios).
DEFAULT_CLIP: dict[str, tuple[float, float]] = {
    "dapo": (0.2, 0.28),
    "gspo": (3e-4, 4e-4),
    "gspo_plus": (3e-4, 4e-4),
}
LOSSES = tuple(DEFAULT_CLIP)
# verl's defaults for the dual clip and the per-token log-ratio clamp (AlgoConfig holds the same).
DEFAULT_CLIP_RATIO_C = 3.0
DEFAULT_LOG_RATIO_CLAMP = 20.0


def loss_normalizers(mask: Tensor) -> dict[str, int]:
    """Counts to pass to :func:`policy_loss` for micro-batch accumulation.

    Args:
        mask: [B, T] response mask (bool or 0/1) of the whole minibatch (or a list of micro-batch
            masks concatenated; sum the dicts of several micro-batches to the same effect).

    Returns:
        ``{"num_tokens": response tokens, "num_sequences": sequences with >= 1 response token}``.
    """
    m = mask.detach() != 0
    return {"num_tokens": int(m.sum().item()), "num_sequences": int(m.any(dim=-1).sum().item())}


def _clipped_surrogate(x: Tensor, adv: Tensor, clip_low: float, clip_high: float,
                       clip_ratio_c: Optional[float]) -> tuple[Tensor, Tensor, Tensor]:
    """Per-unit ``l(x, A)`` (module docstring), whether the PPO clip wins, whether the dual clip wins."""
    unclipped = -x * adv
    clipped = -torch.clamp(x, 1.0 - clip_low, 1.0 + clip_high) * adv
    ppo = torch.maximum(unclipped, clipped)
    ppo_wins = clipped > unclipped
    if clip_ratio_c is None:
        return ppo, ppo_wins, torch.zeros_like(ppo_wins)
    # A constant (no gradient) once the ratio passes c on a negative advantage.
    dual = -clip_ratio_c * adv
    dual_wins = (adv < 0) & (dual < ppo)
    return torch.where(dual_wins, dual, ppo), ppo_wins, dual_wins


def _check_args(name, logprobs, old_logprobs, advantages, mask, behaviour_logprobs, tis_cap, clip_ratio_c,
                log_ratio_clamp, fresh) -> None:
    if name not in DEFAULT_CLIP:
        raise ValueError(f"policy_loss: unknown objective {name!r}; expected one of {LOSSES}")
    if logprobs.dim() != 2:
        raise ValueError(f"policy_loss: logprobs must be [B, T], got shape {tuple(logprobs.shape)}")
    B, T = logprobs.shape
    for arg, t in (("old_logprobs", old_logprobs), ("mask", mask), ("behaviour_logprobs", behaviour_logprobs)):
        if t is not None and t.shape != (B, T):
            raise ValueError(f"policy_loss: {arg} has shape {tuple(t.shape)}, logprobs {(B, T)}")
    for arg, t in (("advantages", advantages), ("fresh", fresh)):
        if t is not None and t.shape != (B,):
            raise ValueError(f"policy_loss: {arg} must be [B]={B}, got shape {tuple(t.shape)}")
    if not logprobs.is_floating_point():
        raise ValueError(f"policy_loss: logprobs must be floating point, got {logprobs.dtype}")
    if (behaviour_logprobs is None) != (tis_cap is None):
        raise ValueError("policy_loss: the decoupled form needs both behaviour_logprobs and tis_cap, "
                         f"got behaviour_logprobs {'set' if behaviour_logprobs is not None else 'None'} "
                         f"and tis_cap {tis_cap!r}")
    if tis_cap is not None and not tis_cap > 0:
        raise ValueError(f"policy_loss: tis_cap must be > 0, got {tis_cap}")
    if clip_ratio_c is not None and not clip_ratio_c > 1:
        raise ValueError(f"policy_loss: clip_ratio_c must be > 1 (or None: no dual clip), got {clip_ratio_c}")
    if log_ratio_clamp is not None and not log_ratio_clamp > 0:
        raise ValueError(f"policy_loss: log_ratio_clamp must be > 0 (or None), got {log_ratio_clamp}")


def policy_loss(
    name: str,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: Optional[float] = None,
    clip_high: Optional[float] = None,
    *,
    behaviour_logprobs: Optional[Tensor] = None,
    tis_cap: Optional[float] = None,
    clip_ratio_c: Optional[float] = DEFAULT_CLIP_RATIO_C,
    log_ratio_clamp: Optional[float] = DEFAULT_LOG_RATIO_CLAMP,
    fresh: Optional[Tensor] = None,
    num_tokens: Optional[Union[int, float, Tensor]] = None,
    num_sequences: Optional[Union[int, float, Tensor]] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped policy loss ``name`` (``dapo`` | ``gspo`` | ``gspo_plus``); see module docstring.

    Args:
        name: the objective.
        logprobs: [B, T] current policy's log-probs of the sampled tokens (carries the grad).
        old_logprobs: [B, T] the old policy of the ratio (no grad taken): the behaviour policy's
            log-probs (coupled form) or the proximal policy's (decoupled form).
        advantages: [B] one advantage per sequence (no grad taken).
        mask: [B, T] bool or 0/1, 1 on response tokens. Padding may hold any value, even inf.
        clip_low, clip_high: clip range ``[1 - clip_low, 1 + clip_high]``; None takes
            ``DEFAULT_CLIP[name]``.
        behaviour_logprobs: [B, T] the rollout engine's log-probs (decoupled form; None: coupled).
        tis_cap: C > 0, the truncation of the behaviour weight; given exactly when
            ``behaviour_logprobs`` is.
        clip_ratio_c: the dual clip's c > 1 (None: off).
        log_ratio_clamp: L > 0, per-token log-ratios are clamped to [-L, L] (None: off).
        fresh: optional [B] bool, the sequences of staleness 0 (sampled by the weights the learner
            held when this training step began); their units get their own clip fraction.
        num_tokens: ``N_tok`` (dapo, gspo_plus); default this batch's response tokens.
        num_sequences: ``N_seq`` (gspo); default this batch's non-empty sequences.

    Returns:
        ``(loss, metrics)``: loss a 0-d tensor (0 with a defined, zero gradient when the mask is
        empty). metrics are 0-d detached float32 tensors (call ``.item()`` when logging, so
        this function never forces a device sync), each a mean over this micro-batch:

        - ``clip_fraction``: fraction of units (tokens for dapo, non-empty sequences for gspo and
          gspo_plus) where the PPO clip wins, i.e. that get no gradient from it;
        - ``dual_clip_fraction``: fraction of units where the dual clip wins (A < 0, ratio > c);
        - ``clip_fraction_fresh``, ``num_fresh_units``: the clip fraction over the units of the
          ``fresh`` sequences, and how many there are (0 and 0 without ``fresh``);
        - ``ratio_mean``, ``ratio_max``, ``ratio_min``: of r over response tokens (dapo) or of
          s over non-empty sequences (gspo, gspo_plus);
        - ``tis_weight_mean``, ``tis_capped_fraction``: mean behaviour weight w over units and the
          fraction of units whose weight the cap truncated (1 and 0 in the coupled form);
        - ``approx_kl``: k3 estimator of KL(pi_old || pi) per token, mean over response tokens
          of ``(r - 1) - log r`` (unbiased for samples from pi_old, always >= 0);
        - ``num_tokens``, ``num_sequences``: this batch's counts, to weight means across
          micro-batches.
    """
    _check_args(name, logprobs, old_logprobs, advantages, mask, behaviour_logprobs, tis_cap, clip_ratio_c,
                log_ratio_clamp, fresh)
    default_low, default_high = DEFAULT_CLIP[name]
    clip_low = default_low if clip_low is None else float(clip_low)
    clip_high = default_high if clip_high is None else float(clip_high)
    if not (0 <= clip_low < 1) or clip_high < 0:
        raise ValueError(f"policy_loss: need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")

    dtype = logprobs.dtype if logprobs.dtype == torch.float64 else torch.float32
    m = mask != 0
    mf = m.to(dtype)
    adv = advantages.detach().to(dtype)
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)

    def log_ratio(num: Tensor, den: Tensor) -> Tensor:
        # where(), not multiplication by the mask: padding may hold inf and inf * 0 is NaN.
        x = torch.where(m, num.to(dtype) - den.detach().to(dtype), zero)
        return x if log_ratio_clamp is None else x.clamp(-log_ratio_clamp, log_ratio_clamp)

    d = log_ratio(logprobs, old_logprobs)
    n = mf.sum(-1)  # [B]
    valid = n > 0
    tok_count = mf.sum()
    seq_count = valid.to(dtype).sum()
    fresh_rows = torch.zeros_like(valid) if fresh is None else fresh.to(device=valid.device, dtype=torch.bool)

    def normalizer(given, default: Tensor) -> Tensor:
        value = default if given is None else torch.as_tensor(given, dtype=dtype, device=logprobs.device)
        return value.detach().clamp(min=1)

    token_ratio = torch.exp(d)  # 1 on padding
    with torch.no_grad():
        approx_kl = torch.where(m, (token_ratio - 1) - d, zero).sum() / tok_count.clamp(min=1)
        # Decoupled form: log of the behaviour weight before the cap, per token or per sequence.
        behaviour_lw = None if behaviour_logprobs is None else log_ratio(old_logprobs, behaviour_logprobs)
        if behaviour_lw is not None and name != "dapo":
            behaviour_lw = behaviour_lw.sum(-1) / n.clamp(min=1)

    if name == "dapo":
        units, unit_mask = token_ratio, m
        fresh_units = m & fresh_rows[:, None]
        per_unit, ppo_wins, dual_wins = _clipped_surrogate(token_ratio, adv[:, None], clip_low, clip_high,
                                                           clip_ratio_c)
    else:
        units, unit_mask = torch.exp(d.sum(-1) / n.clamp(min=1)), valid  # s_i, 1 for empty sequences
        fresh_units = valid & fresh_rows
        per_unit, ppo_wins, dual_wins = _clipped_surrogate(units, adv, clip_low, clip_high, clip_ratio_c)
    if behaviour_lw is not None:
        log_cap = math.log(tis_cap)
        w = torch.exp(behaviour_lw.clamp(max=log_cap))
        capped = behaviour_lw > log_cap
        per_unit = per_unit * w
    else:
        w, capped = torch.ones_like(per_unit), torch.zeros_like(ppo_wins)
    if name == "dapo":
        loss = torch.where(m, per_unit, zero).sum() / normalizer(num_tokens, tok_count)
    elif name == "gspo":
        loss = torch.where(valid, per_unit, zero).sum() / normalizer(num_sequences, seq_count)
    else:
        loss = torch.where(valid, per_unit * n, zero).sum() / normalizer(num_tokens, tok_count)

    with torch.no_grad():
        unit_count = unit_mask.to(dtype).sum()
        denom = unit_count.clamp(min=1)
        fresh_count = fresh_units.to(dtype).sum()
        big = torch.finfo(dtype).max
        has_units = unit_count > 0

        def frac(flags: Tensor, where: Tensor = unit_mask, count: Tensor = denom) -> Tensor:
            return (flags & where).to(dtype).sum() / count

        metrics = {
            "clip_fraction": frac(ppo_wins),
            "dual_clip_fraction": frac(dual_wins),
            "clip_fraction_fresh": frac(ppo_wins, fresh_units, fresh_count.clamp(min=1)),
            "num_fresh_units": fresh_count,
            "ratio_mean": torch.where(unit_mask, units, zero).sum() / denom,
            "tis_weight_mean": torch.where(unit_mask, w.to(dtype), zero).sum() / denom,
            "tis_capped_fraction": frac(capped),
            "approx_kl": approx_kl,
            "num_tokens": tok_count,
            "num_sequences": seq_count,
        }
        if units.numel() == 0:  # B == 0: max()/min() of an empty tensor would raise
            metrics["ratio_max"] = metrics["ratio_min"] = zero
        else:
            metrics["ratio_max"] = torch.where(has_units, torch.where(unit_mask, units, -big).max(), zero)
            metrics["ratio_min"] = torch.where(has_units, torch.where(unit_mask, units, big).min(), zero)
        metrics = {k: v.detach().float() for k, v in metrics.items()}
    return loss, metrics
