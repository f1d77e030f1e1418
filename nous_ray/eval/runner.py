"""Run an evaluation on already-running worker pools: generate, verify, record, summarize.

Used by ``launch/eval.py`` (pools started for the evaluation, YaRN on) and by the training driver
every ``eval.every_steps`` (the training pools, no engine restart). Problems are spread over the
rollout workers, ``rollout.max_prompts_per_worker`` in flight per worker so each engine batches them;
each problem's group goes to the verifiers as soon as it is generated, while generation goes on.
Each verified problem is written to ``results.jsonl`` at once, so an interrupted evaluation resumes
where it stopped (see :mod:`nous_ray.eval.records`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

from nous_ray.config import Config
from nous_ray.data.problem import Problem
from nous_ray.eval.records import EvalResumeError, ResultsFile, make_record, settings_conflict
from nous_ray.eval.summary import summarize
from nous_ray.samples import GenerationRequest
from nous_ray.verdicts import Verdict, infra_error_record

log = logging.getLogger("nous_ray.eval")
SUMMARY_FILE = "summary.json"


def eval_sampling(cfg: Config) -> dict:
    """The sampling of an evaluation (the recipe: temperature 0.6, top_p 0.95, no top-k)."""
    return {"temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p, "top_k": 0}


def eval_settings(cfg: Config, max_tokens: int, model: Optional[str], engine: Optional[dict],
                  step: Optional[int]) -> dict:
    """What shapes the samples; resuming under other settings is refused."""
    return {"model": model, "n_samples": cfg.eval.n_samples, "max_tokens": max_tokens, "step": step,
            "sampling": eval_sampling(cfg), "engine": engine,
            "prompt_format": cfg.eval.prompt_format or cfg.data.prompt_format,
            "enable_thinking": cfg.eval.enable_thinking}


def check_resumable(cfg: Config, out_dir: str | Path, *, max_tokens: Optional[int] = None,
                    model: Optional[str] = None, engine: Optional[dict] = None, step: Optional[int] = None) -> None:
    """Raise :class:`EvalResumeError` now if :func:`evaluate` with these arguments would refuse the
    results already in ``out_dir`` (made with other settings): before any engine starts."""
    settings = eval_settings(cfg, cfg.eval.max_tokens if max_tokens is None else max_tokens, model, engine, step)
    conflict = settings_conflict(out_dir, settings)
    if conflict:
        raise EvalResumeError(conflict)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    os.replace(tmp, path)


async def evaluate(
    cfg: Config,
    problems: list[Problem],
    prompt_ids: list[list[int]],
    rollout_pool,
    verifier_pool,
    out_dir: str | Path,
    step: Optional[int] = None,
    *,
    max_tokens: Optional[int] = None,
    max_model_len: Optional[int] = None,
    model: Optional[str] = None,
    engine: Optional[dict] = None,
    info: Optional[dict] = None,
    fresh: bool = False,
    progress: bool = True,
    plot: bool = True,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict:
    """Evaluate ``problems`` and return the summary (also written to ``<out_dir>/summary.json``).

    Args:
        cfg: the config; ``cfg.eval`` gives samples per problem, sampling and ``max_tokens``, and
            ``cfg.rollout.max_prompts_per_worker`` the problems in flight per worker.
        problems, prompt_ids: the problems and their prompts as token ids (same order).
        rollout_pool: ``.size`` and ``await .generate(i, requests, n, sampling, max_tokens) ->
            list[Sample]`` (the pool of ``actors/pools.py``); None is allowed when every problem
            is already in ``results.jsonl``.
        verifier_pool: ``await .verify_group(problem, completions) -> list[VerdictRecord]``.
        out_dir: where ``results.jsonl``, ``summary.json`` and ``pass_at_1.png`` go.
        step: the training step evaluated (recorded; part of the resume settings).
        max_tokens: overrides ``cfg.eval.max_tokens`` (e.g. capped to a training engine's context).
        max_model_len: the engines' context; when given, each response gets what its prompt leaves of
            it, at most ``max_tokens`` (YaRN: 81,920 positions minus the prompt, see
            :meth:`nous_ray.eval.engine.EngineSettings.response_limit`).
        model, engine: recorded in the settings and the summary (model path, engine settings).
        info: more to record in the summary's ``run`` (not part of the resume settings).
        fresh: discard earlier results in ``out_dir`` instead of resuming from them.
    """
    if len(problems) != len(prompt_ids):
        raise ValueError(f"evaluate: {len(problems)} problems but {len(prompt_ids)} prompts")
    n = cfg.eval.n_samples
    if n < 1:
        raise ValueError(f"eval.n_samples must be >= 1, got {n}")
    max_tokens = cfg.eval.max_tokens if max_tokens is None else max_tokens
    limits = response_limits(problems, prompt_ids, max_tokens, max_model_len)
    out = Path(out_dir)
    results = ResultsFile(out, n)
    settings = eval_settings(cfg, max_tokens, model, engine, step)  # ResultsFile.resume refuses other ones
    done = results.resume(settings, fresh=fresh)
    selected = {p.id for p in problems}
    resumed = [pid for pid in done if pid in selected]
    todo = [i for i, p in enumerate(problems) if p.id not in done]
    say(f"eval: {len(problems)} problems x {n} samples; {len(resumed)} resumed from {results.path}, "
        f"{len(todo)} to generate")
    if todo and (rollout_pool is None or verifier_pool is None):
        raise ValueError(f"evaluate: {len(todo)} problems to generate but no rollout or verifier pool given")

    sampling = eval_sampling(cfg)
    t0 = time.monotonic()
    generation = _Generation(problems, prompt_ids, limits, n, sampling, rollout_pool, verifier_pool, results)
    new_records = await generation.run(todo, max(1, cfg.rollout.max_prompts_per_worker), progress)

    records = [r for p in problems for r in (done.get(p.id) or new_records[p.id])]
    summary = summarize(records, n)
    summary["run"] = {
        "step": step, "model": model, "engine": engine, "n_samples": n, "max_tokens": max_tokens,
        "max_model_len": max_model_len,
        "sampling": sampling, "problems_selected": len(problems), "problems_resumed": len(resumed),
        "problems_generated": len(new_records), "wall_s": time.monotonic() - t0,
        "policy_versions": sorted({r.get("version") for rs in new_records.values() for r in rs} - {None}),
        **(info or {}),
    }
    write_json_atomic(out / SUMMARY_FILE, summary)
    if plot:
        _plot(summary, out / "pass_at_1.png")
    return summary


def response_limits(problems: list[Problem], prompt_ids: list[list[int]], max_tokens: int,
                    max_model_len: Optional[int]) -> list[int]:
    """Each problem's response budget: ``max_tokens``, within what its prompt leaves of ``max_model_len``."""
    limits = [max_tokens if max_model_len is None else min(max_tokens, max_model_len - len(p)) for p in prompt_ids]
    short = [i for i, n in enumerate(limits) if n < 1]
    if short:
        raise ValueError(f"evaluate: problem {problems[short[0]].id} has a {len(prompt_ids[short[0]])}-token prompt, "
                         f"no room for a response in max_model_len {max_model_len}")
    return limits


def _plot(summary: dict, path: Path) -> None:
    from nous_ray.eval.report import plot_pass_at_1

    try:
        plot_pass_at_1(summary, path)
    except Exception as e:  # a plot is a view: never lose an evaluation over it
        log.warning("eval: plot not written: %s", e)


class _Generation:
    """The problems not yet in ``results.jsonl``: generated, verified and recorded.

    Each rollout worker runs ``per_worker`` slots; a slot takes the next problem, generates its group
    and hands it to :meth:`_verify` without waiting, so verification overlaps generation. Every
    verified problem is appended to ``results.jsonl`` at once.
    """

    def __init__(self, problems: list[Problem], prompt_ids: list[list[int]], limits: list[int], n: int,
                 sampling: dict, rollout_pool, verifier_pool, results: ResultsFile):
        self.problems, self.prompt_ids, self.limits, self.n = problems, prompt_ids, limits, n
        self.sampling, self.rollout, self.verifiers, self.results = sampling, rollout_pool, verifier_pool, results
        self.records: dict[str, list[dict]] = {}  # problem id -> its records, this run's
        self._todo: deque[int] = deque()
        self._verifying: list[asyncio.Future] = []  # all of them, kept to re-raise any failure
        self._accepted = self._verified = 0  # samples, this run: the progress bar's pass rate
        self._bar = None

    async def run(self, todo: list[int], per_worker: int, progress: bool) -> dict[str, list[dict]]:
        """Generate and verify the problems ``todo`` (indices); returns the records by problem id."""
        self._todo = deque(todo)
        if progress and todo:
            from tqdm import tqdm

            self._bar = tqdm(total=len(todo), desc="eval", unit="problem", file=sys.stderr, dynamic_ncols=True)
        workers = range(self.rollout.size) if todo else range(0)
        slots = [asyncio.ensure_future(self._slot(i)) for i in workers for _ in range(per_worker)]
        try:
            await asyncio.gather(*slots)
        finally:
            for t in slots:
                t.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            # Even when generation failed, finish verifying (and recording) what was generated: a
            # resumed evaluation would otherwise have to generate it again.
            outcomes = await asyncio.gather(*self._verifying, return_exceptions=True)
            self.results.close()
            if self._bar is not None:
                self._bar.close()
        for o in outcomes:
            if isinstance(o, BaseException):
                raise o
        return self.records

    async def _slot(self, i: int) -> None:
        """Worker ``i``'s share: one problem at a time, until none is left."""
        while self._todo:
            idx = self._todo.popleft()
            req = GenerationRequest(idx, self.problems[idx].id, self.prompt_ids[idx])
            samples = await self.rollout.generate(i, [req], self.n, self.sampling, self.limits[idx])
            if len(samples) != self.n:
                raise RuntimeError(f"eval: rollout worker {i} returned {len(samples)} samples for problem "
                                   f"{self.problems[idx].id}, expected {self.n}")
            self._verifying.append(asyncio.ensure_future(self._verify(idx, samples)))

    async def _verify(self, idx: int, samples: list) -> None:
        problem = self.problems[idx]
        try:
            verdicts = await self.verifiers.verify_group(problem, [s.text for s in samples])
            if len(verdicts) != len(samples):
                raise RuntimeError(f"{len(verdicts)} verdicts for {len(samples)} completions")
        except Exception as e:  # the verifier's failure, not the program's: no verdict for anyone
            log.warning("eval: verifying problem %s failed (%s: %s); its samples count as infra_error",
                        problem.id, type(e).__name__, e)
            verdicts = [infra_error_record(f"{type(e).__name__}: {e}")] * len(samples)
        recs = [make_record(problem, j, s, v) for j, (s, v) in enumerate(zip(samples, verdicts))]
        self.results.append_problem(recs)
        self.records[problem.id] = recs
        self._accepted += sum(r["verdict"] == Verdict.ACCEPTED for r in recs)
        self._verified += len(recs)
        if self._bar is not None:
            self._bar.set_postfix(sample_pass=f"{self._accepted / max(1, self._verified):.3f}", refresh=False)
            self._bar.update(1)
