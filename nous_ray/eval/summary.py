"""The evaluation summary: pass@k, breakdowns, truncation, verdict counts, from per-sample records.

A record is one line of ``results.jsonl`` (see :mod:`nous_ray.eval.records`). Conventions:

- A sample passes when its verdict is ``accepted`` (every hidden test passed).
- ``infra_error`` samples (the sandbox or transport failed, not the program) are left out of every
  denominator and counted; a problem whose samples all failed that way is left out of the means.
- pass@1 is the mean over problems of the fraction of a problem's samples that pass, which is the
  unbiased estimator at k=1. pass@k (k > 1) is the mean over problems of the unbiased estimator
  ``1 - C(n-c, k) / C(n, k)``, reported only for k <= the configured samples per problem, over the
  problems that kept at least k valid samples.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

from nous_ray.algo.pass_at_k import pass_at_k
from nous_ray.verdicts import Verdict

DEFAULT_KS = (1, 4, 8, 16)
ACCEPTED = Verdict.ACCEPTED.value
INFRA_ERROR = Verdict.INFRA_ERROR.value
UNKNOWN = "unknown"
# Breakdown rows in this order (LiveCodeBench's difficulties), then any others alphabetically.
GROUP_ORDER = {"easy": 0, "medium": 1, "hard": 2}


def reported_ks(n_samples: int, ks: Iterable[int] = DEFAULT_KS) -> list[int]:
    """The ks that can be estimated from ``n_samples`` samples per problem, ascending."""
    return sorted(k for k in set(ks) if 1 <= k <= n_samples)


def problem_counts(records: Iterable[dict]) -> dict[str, tuple[int, int]]:
    """``problem_id -> (valid samples, passing samples)``, infra_error samples left out."""
    out: dict[str, list[int]] = {}
    for r in records:
        nc = out.setdefault(r["problem_id"], [0, 0])
        if r["verdict"] == INFRA_ERROR:
            continue
        nc[0] += 1
        nc[1] += r["verdict"] == ACCEPTED
    return {pid: (n, c) for pid, (n, c) in out.items()}


def pass_at_ks(counts: Iterable[tuple[int, int]], ks: Iterable[int]) -> dict:
    """Mean unbiased pass@k over problems given their ``(valid n, passing c)``.

    Returns ``{"problems": P, "pass@k": {"k": mean or None}, "problems_at_k": {"k": problems with
    n >= k}}`` (string keys, as JSON keeps them); P counts problems with at least one valid sample; a
    k no problem reaches gives None.
    """
    counts = [(n, c) for n, c in counts if n > 0]
    out = {"problems": len(counts), "pass@k": {}, "problems_at_k": {}}
    for k in ks:
        vals = [pass_at_k(n, c, k) for n, c in counts if n >= k]
        out["pass@k"][str(k)] = sum(vals) / len(vals) if vals else None
        out["problems_at_k"][str(k)] = len(vals)
    return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarize(records: list[dict], n_samples: int, ks: Iterable[int] = DEFAULT_KS) -> dict:
    """The summary of an evaluation from its sample records.

    Args:
        records: dicts with ``problem_id``, ``verdict``, ``finish_reason``, ``response_tokens`` and
            optionally ``difficulty`` and ``platform`` (None or missing -> ``"unknown"``).
        n_samples: samples generated per problem (bounds the reported ks).
        ks: candidate ks for pass@k.

    Returns a JSON-ready dict; it reads the same after a round trip through ``summary.json``.
    """
    ks = reported_ks(n_samples, ks)
    counts = problem_counts(records)
    overall = pass_at_ks(counts.values(), ks)

    meta: dict[str, dict] = {}
    for r in records:
        meta.setdefault(r["problem_id"], r)
    breakdowns = {}
    for key in ("difficulty", "platform"):
        groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for pid, nc in counts.items():
            groups[meta[pid].get(key) or UNKNOWN].append(nc)
        breakdowns[key] = {}
        for g in sorted(groups, key=lambda g: (GROUP_ORDER.get(g, len(GROUP_ORDER)), g)):
            pk = pass_at_ks(groups[g], ks)
            breakdowns[key][g] = {"problems": pk["problems"], "pass@1": pk["pass@k"].get("1"),
                                  "pass@k": pk["pass@k"]}

    valid = [r for r in records if r["verdict"] != INFRA_ERROR]
    verdicts = Counter(r["verdict"] for r in records)
    return {
        "pass@1": overall["pass@k"].get("1"),
        "pass@k": overall["pass@k"],
        "problems_at_k": overall["problems_at_k"],
        "problems": overall["problems"],
        "problems_seen": len(counts),
        "problems_all_infra_error": sum(1 for n, _ in counts.values() if n == 0),
        "samples": len(records),
        "samples_valid": len(valid),
        "infra_error": verdicts.get(INFRA_ERROR, 0),
        "sample_accuracy": _mean([float(r["verdict"] == ACCEPTED) for r in valid]),
        "truncation_rate": _mean([float(r["finish_reason"] == "length") for r in valid]),
        "mean_response_tokens": _mean([float(r["response_tokens"]) for r in valid]),
        "verdicts": dict(sorted(verdicts.items())),
        "by_difficulty": breakdowns["difficulty"],
        "by_platform": breakdowns["platform"],
    }


def metrics_for_log(summary: dict, prefix: str = "eval/") -> dict[str, float]:
    """Flat numeric metrics for the training sinks: ``eval/pass@1``, ``eval/pass@4``, ...,
    ``eval/pass@1/easy``, ``eval/truncation_rate``, ``eval/infra_error``; None values left out."""
    out: dict[str, float] = {}
    for k, v in summary["pass@k"].items():
        out[f"{prefix}pass@{k}"] = v
    for key in ("by_difficulty", "by_platform"):
        for g, s in summary[key].items():
            out[f"{prefix}pass@1/{g}"] = s["pass@1"]
    for key in ("truncation_rate", "mean_response_tokens", "sample_accuracy", "infra_error", "problems"):
        out[f"{prefix}{key}"] = summary[key]
    return {k: float(v) for k, v in out.items() if v is not None}
