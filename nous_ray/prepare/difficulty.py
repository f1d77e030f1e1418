"""Stage 5: drop the problems the starting model always or never solves (they give no signal).

N responses per problem from the rollout workers (training's sampling, ``rollout.sampling``; the
training prompt format, ``data.prompt_format``; the response limit of the context schedule's first
stage unless ``prepare.difficulty_max_tokens``), judged by the training judge. Solved N/N ->
``always_solved``, 0/N -> ``never_solved``; GRPO's advantages are all zero for both.

The pass counts are saved per problem (``pass_counts.jsonl``, one line per problem as soon as its
group is judged), keyed by the problem record and the sampling settings; a re-run reuses them and
samples only what is missing, and starts no workers when nothing is.
A problem whose samples the judge could not all judge (infra_error) is kept, noted, and sampled again
next run.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, deque
from typing import Callable, Protocol

from nous_ray.config import Config
from nous_ray.data.problem import Problem
from nous_ray.prepare.cache import ResultCache
from nous_ray.prepare.stage import Dropped, Note, StageResult
from nous_ray.samples import GenerationRequest
from nous_ray.verdicts import Verdict

ACCEPTED, INFRA = Verdict.ACCEPTED.value, Verdict.INFRA_ERROR.value


class Sampler(Protocol):
    """What the stage needs of the rollout workers (``launch/prepare_data.py`` wraps the pool)."""

    size: int  # workers

    def encode(self, problems: list[Problem]) -> list[list[int]]:
        """Prompt token ids, one list per problem."""

    async def generate(self, i: int, requests: list[dict], n: int, sampling: dict, max_tokens: int) -> list:
        """``n`` samples (``.group_id``, ``.text``, ``.finish_reason``) per request
        ``{group_id, problem_id, prompt_ids}``, from worker ``i``."""

    def close(self) -> None: ...


def max_tokens_for(cfg: Config) -> int:
    return cfg.prepare.difficulty_max_tokens or cfg.algo.context_schedule[0].max_tokens


def difficulty_settings(cfg: Config) -> dict:
    """What shapes the samples: pass counts made under other settings are not reused."""
    m = cfg.model
    model = dataclasses.asdict(m) if m.path == "tiny" else {"path": m.path, "dtype": m.dtype, "seed": m.seed}
    return {"model": model, "samples": cfg.prepare.difficulty_samples, "max_tokens": max_tokens_for(cfg),
            "sampling": dataclasses.asdict(cfg.rollout.sampling), "prompt_format": cfg.data.prompt_format}


async def sample_pass_counts(problems: list[Problem], sampler: Sampler, backend, cache: ResultCache, *, n: int,
                             sampling: dict, max_tokens: int, max_model_len: int | None = None, per_call: int = 16,
                             calls_per_worker: int = 2, progress: bool = False) -> dict[str, dict]:
    """Sample and judge ``problems`` (none of them cached); returns id -> pass-count record.

    Each worker runs ``calls_per_worker`` loops that take up to ``per_call`` prompts, generate, then
    judge and save them: while one loop judges, the other keeps the engine generating. A loop whose
    call fails stops; the others finish the queue; the first failure is raised at the end, after
    everything generated has been judged and saved. A prompt that leaves less than ``max_tokens`` of
    ``max_model_len`` is not sampled (its record says so; it is not saved).
    """
    prompt_ids = sampler.encode(problems)
    records: dict[str, dict] = {}
    todo = deque()
    for k, ids in enumerate(prompt_ids):
        if max_model_len is not None and len(ids) + max_tokens > max_model_len:
            records[problems[k].id] = {"n": n, "passed": 0, "valid": 0,
                                       "skipped": f"prompt of {len(ids)} tokens + {max_tokens} > {max_model_len}"}
        else:
            todo.append(k)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="difficulty", unit="problem", dynamic_ncols=True)

    async def loop(i: int) -> None:
        while todo:
            batch = [todo.popleft() for _ in range(min(per_call, len(todo)))]
            reqs = [GenerationRequest(k, problems[k].id, prompt_ids[k]) for k in batch]
            samples = await sampler.generate(i, reqs, n, sampling, max_tokens)
            groups: dict[int, list] = {k: [] for k in batch}
            for s in samples:
                groups[s.group_id].append(s)
            short = [problems[k].id for k, g in groups.items() if len(g) != n]
            if short:
                raise RuntimeError(f"difficulty: rollout worker {i} returned a group of the wrong size "
                                   f"(expected {n}) for {short[:5]}")
            results = await backend.averify([(problems[k], s.text) for k in batch for s in groups[k]])
            for m, k in enumerate(batch):
                verdicts = [r.verdict.value for r in results[m * n:(m + 1) * n]]
                rec = {"n": n, "passed": verdicts.count(ACCEPTED), "valid": n - verdicts.count(INFRA),
                       "truncated": sum(s.finish_reason == "length" for s in groups[k]),
                       "verdicts": dict(sorted(Counter(verdicts).items()))}
                records[problems[k].id] = cache.put(problems[k], rec) if rec["valid"] == n else rec
                if bar is not None:
                    bar.update(1)

    try:
        outcomes = await asyncio.gather(*(loop(i) for i in range(sampler.size) for _ in range(calls_per_worker)),
                                        return_exceptions=True)
    finally:
        cache.close()
        if bar is not None:
            bar.close()
    for o in outcomes:
        if isinstance(o, BaseException):
            raise o
    return records


def difficulty(problems: list[Problem], records: dict[str, dict], *, sampled: int, info: dict) -> StageResult:
    """Decide each problem from its pass counts (``records``: id -> record with passed / valid)."""
    kept, dropped, notes = [], [], []
    histogram: Counter = Counter()
    for p in problems:
        rec = records.get(p.id)
        if rec is None or rec["valid"] == 0:
            notes.append(Note(p, "unmeasured", (rec or {}).get("skipped", "no sample could be judged")))
            kept.append(p)
            continue
        if rec["valid"] < rec["n"]:
            notes.append(Note(p, "infra_error", f"{rec['n'] - rec['valid']} of {rec['n']} samples not judged"))
        histogram[f"{rec['passed']}/{rec['valid']}"] += 1
        if rec["passed"] == rec["valid"]:
            dropped.append(Dropped(p, "always_solved", f"{rec['passed']}/{rec['valid']}"))
        elif rec["passed"] == 0:
            dropped.append(Dropped(p, "never_solved", f"0/{rec['valid']}"))
        else:
            kept.append(p)
    return StageResult(kept, dropped, notes, {**info, "sampled": sampled, "reused": len(problems) - sampled,
                                              "pass_counts": dict(sorted(histogram.items()))})


async def run_difficulty(problems: list[Problem], cfg: Config, open_sampler: Callable[[], Sampler], backend,
                         cache: ResultCache, progress: bool = False) -> StageResult:
    """Reuse saved pass counts, sample the rest (starting the workers only then), decide."""
    records = {p.id: rec for p in problems if (rec := cache.get(p)) is not None}
    need = [p for p in problems if p.id not in records]
    n, max_tokens = cfg.prepare.difficulty_samples, max_tokens_for(cfg)
    sampling = dataclasses.asdict(cfg.rollout.sampling)
    if need:
        sampler = open_sampler()
        try:
            records.update(await sample_pass_counts(
                need, sampler, backend, cache, n=n, sampling=sampling, max_tokens=max_tokens,
                max_model_len=cfg.rollout.max_model_len,
                # two loops per worker: max_prompts_per_worker prompts in flight on each
                per_call=max(1, cfg.rollout.max_prompts_per_worker // 2),
                progress=progress))
        finally:
            sampler.close()
    return difficulty(problems, records, sampled=len(need),
                      info={"samples": n, "max_tokens": max_tokens, "sampling": sampling,
                            "model": cfg.model.path})
