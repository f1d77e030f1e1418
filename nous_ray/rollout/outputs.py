"""vLLM outputs -> :class:`nous_ray.samples.Sample` records."""

from __future__ import annotations

from nous_ray.samples import Sample


def token_logprobs(token_ids, logprobs, where: str) -> list[float]:
    """The log-prob of each token in ``token_ids`` from vLLM's per-position ``{token: Logprob}``."""
    if logprobs is None:
        raise ValueError(f"{where}: the engine returned no log-probs (request made without logprobs=0?)")
    if len(logprobs) != len(token_ids):
        raise ValueError(f"{where}: {len(logprobs)} log-prob entries for {len(token_ids)} tokens")
    out = []
    for i, (tok, lp) in enumerate(zip(token_ids, logprobs)):
        entry = lp.get(tok) if lp is not None else None
        if entry is None:
            raise ValueError(f"{where}: no log-prob for token {tok} at position {i}")
        out.append(float(entry.logprob))
    return out


def version_starts(spans, n_tokens: int, where: str) -> list[tuple[int, int]]:
    """vLLM's ``CompletionOutput.weight_versions`` (``WeightVersionSpan(version, start, end)``, the labels
    given to ``LLMEngine.set_weight_version``) -> ``[(version, first token index)]``; empty when vLLM
    reported none (no tokens)."""
    if not spans:
        if n_tokens:
            raise ValueError(f"{where}: {n_tokens} tokens but no weight-version spans "
                             f"(set_weight_version never called?)")
        return []
    out = [(int(s.version), int(s.start)) for s in spans]
    if out[0][1] != 0 or spans[-1].end != n_tokens or any(a[0] > b[0] for a, b in zip(out, out[1:])):
        raise ValueError(f"{where}: weight-version spans {spans} do not cover {n_tokens} tokens in version order")
    return out


def to_samples(
    output, *, version: int, problem_id: str = "", group_id: int = 0, issued_step: int = 0
) -> list[Sample]:
    """One finished ``vllm.RequestOutput`` (``n`` completions of one prompt) -> ``n`` samples.

    ``finish_reason`` is ``"stop"`` (end-of-sequence or a stop string) or ``"length"``
    (``max_tokens`` or the context limit). Each sample's versions come from vLLM's per-token
    weight-version spans; ``version`` is the engine's when the request was admitted, used for a
    completion without tokens.
    """
    if not output.finished:
        raise ValueError(f"request {output.request_id}: not finished")
    prompt_ids = list(output.prompt_token_ids)
    samples = []
    for c in sorted(output.outputs, key=lambda c: c.index):
        ids = list(c.token_ids)
        if c.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"request {output.request_id}: completion {c.index} ended with {c.finish_reason!r}")
        starts = version_starts(getattr(c, "weight_versions", None), len(ids), f"request {output.request_id}")
        samples.append(
            Sample(
                problem_id=problem_id,
                group_id=group_id,
                prompt_ids=prompt_ids,
                response_ids=ids,
                logprobs=token_logprobs(ids, c.logprobs, f"request {output.request_id}"),
                finish_reason=c.finish_reason,
                version=starts[0][0] if starts else version,
                text=c.text or "",
                issued_step=issued_step,
                version_starts=starts if len(starts) > 1 else [],
            )
        )
    return samples


def scored_logprobs(output, n_prompt: int) -> list[float]:
    """Log-probs of the tokens after the first ``n_prompt`` of a scoring request's sequence."""
    ids = list(output.prompt_token_ids)
    lps = output.prompt_logprobs  # position 0 has none: nothing precedes it
    if lps is None:
        raise ValueError(f"request {output.request_id}: no prompt log-probs")
    return token_logprobs(ids[n_prompt:], lps[n_prompt:], f"request {output.request_id}")
