"""The stages in order, the output files, the report: :func:`prepare`.

Writes into the output folder:

- ``problems.jsonl``: the kept problems as the project's Problem records, in input order
  (``data.train=jsonl data.train_path=DIR/problems.jsonl`` trains on it);
- ``report.json``: per stage and per source ``{"in", "out", "dropped": {reason: n}}``, every dropped
  id with its stage, reason and detail, notes (see :mod:`nous_ray.prepare.report`);
- ``verify_results.jsonl`` and ``pass_counts.jsonl``: what stages 4 and 5 computed, per problem,
  reused by the next run (an interrupted run resumes from them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import Callable

from nous_ray.config import Config, ConfigError
from nous_ray.data.jsonl import save_jsonl
from nous_ray.prepare.decontaminate import date_cutoff, decontaminate
from nous_ray.prepare.dedupe import dedupe
from nous_ray.prepare.report import Report
from nous_ray.prepare.sources import label_sources, load_source, load_training, malformed_reason, parse_source

PROBLEMS_FILE = "problems.jsonl"
REPORT_FILE = "report.json"
VERIFY_FILE = "verify_results.jsonl"
PASS_COUNTS_FILE = "pass_counts.jsonl"


def check_prepare_config(cfg: Config) -> None:
    """Ranges the types cannot express; errors name the key."""
    c = cfg.prepare

    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"key 'prepare.{key}': {why}")

    need(c.dedupe_ngram >= 1, "dedupe_ngram", "must be >= 1")
    need(0.0 < c.dedupe_threshold <= 1.0, "dedupe_threshold", "must be in (0, 1]")
    need(c.dedupe_min_words >= 0, "dedupe_min_words", "must be >= 0")
    need(c.minhash_num_perm >= 16, "minhash_num_perm", "must be >= 16")
    need(c.decontam_ngram >= 1, "decontam_ngram", "must be >= 1")
    need(0.0 < c.decontam_threshold <= 1.0, "decontam_threshold", "must be in (0, 1]")
    need(c.max_references >= 1, "max_references", "must be >= 1")
    need(c.min_tests >= 1, "min_tests", "must be >= 1")
    need(c.difficulty_samples >= 2, "difficulty_samples", "needs at least 2 samples to tell easy from hard")
    need(c.difficulty_max_tokens is None or c.difficulty_max_tokens >= 1, "difficulty_max_tokens", "must be >= 1")


def _write_problems(problems, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_jsonl(problems, str(tmp))
    os.replace(tmp, path)


def prepare(cfg: Config, train: list[str], eval_source: str | None, out_dir: str | Path, *,
            open_sampler: Callable | None = None, progress: bool = True,
            say: Callable[[str], None] = print) -> dict:
    """Run the switched-on stages over the ``train`` sources; returns the report (also written).

    ``open_sampler``: starts the rollout workers for the difficulty stage (called only when some
    problem has no saved pass counts); returns a :class:`~nous_ray.prepare.difficulty.Sampler`.
    """
    check_prepare_config(cfg)
    pc = cfg.prepare
    if not train:
        raise ValueError("prepare: at least one --train source is needed")
    specs = label_sources([parse_source(t) for t in train])
    eval_spec = parse_source(eval_source) if eval_source else None
    if pc.decontaminate and eval_spec is None:
        raise ValueError("prepare: decontamination needs --eval SOURCE (or prepare.decontaminate=false)")
    if pc.difficulty and open_sampler is None:
        raise ValueError("prepare: the difficulty stage needs rollout workers (run launch/prepare_data.py)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report([s.display for s in specs], header={
        "train": [s.text for s in specs], "eval": eval_source, "prepare": dataclasses.asdict(pc)})

    # 1. normalize and validate
    loaded, origin, read = load_training(specs, skip_malformed=pc.skip_malformed)
    malformed = [(label, place, reason, msg) for label, r in read.items() for reason, place, msg in r["malformed"]]
    dup_ids = [(d.source, d.problem.id, d.reason, d.detail) for d in loaded.dropped]
    report.add("normalize", ins=Counter({label: r["read"] for label, r in read.items()}),
               outs=Counter(origin[p.id] for p in loaded.kept), drops=malformed + dup_ids)
    problems = loaded.kept
    say(f"prepare: {len(problems)} problems from {len(specs)} source(s) "
        f"({len(malformed)} malformed rows skipped, {len(dup_ids)} repeated ids)")

    # 2. duplicates inside the training set
    if pc.dedupe:
        res = dedupe(problems, ngram=pc.dedupe_ngram, threshold=pc.dedupe_threshold,
                     min_words=pc.dedupe_min_words, num_perm=pc.minhash_num_perm, progress=progress)
        report.add_result("dedupe", problems, res, origin)
        problems = res.kept
    else:
        report.skip("dedupe", problems, origin, "prepare.dedupe=false")

    # 3. overlap with the evaluation set
    if pc.decontaminate:
        eval_problems, eval_skipped = load_source(eval_spec, skip_malformed=pc.skip_malformed, eval_cfg=cfg.eval)
        report.data["eval_set"] = {"source": eval_spec.text, "in": len(eval_problems) + len(eval_skipped),
                                   "out": len(eval_problems),
                                   "dropped": dict(Counter(malformed_reason(e) for e in eval_skipped))}
        if not eval_problems:
            raise ValueError(f"prepare: the evaluation source {eval_spec.text!r} holds no problems")
        cutoff = date_cutoff(eval_problems, pc.date_cutoff, cfg.eval.start_date if eval_spec.name == "lcb" else None)
        res = decontaminate(problems, eval_problems, ngram=pc.decontam_ngram, threshold=pc.decontam_threshold,
                            by_date=pc.decontam_by_date, cutoff=cutoff)
        report.add_result("decontaminate", problems, res, origin)
        problems = res.kept
    else:
        report.skip("decontaminate", problems, origin, "prepare.decontaminate=false")

    if pc.verify_tests or pc.difficulty:
        from nous_ray.prepare.cache import ResultCache
        from nous_ray.verify import JudgeSettings, make_backend

        with make_backend(cfg.verifier) as backend:
            # 4. tests a correct program passes
            if pc.verify_tests:
                from nous_ray.prepare.verify_tests import verify_tests

                settings = {"max_references": pc.max_references,
                            "judge": dataclasses.asdict(JudgeSettings.from_config(cfg.verifier))}
                res = asyncio.run(verify_tests(
                    problems, backend, ResultCache(out / VERIFY_FILE, settings), max_references=pc.max_references,
                    min_tests=pc.min_tests, keep_multi_answer=pc.keep_multi_answer,
                    concurrency=cfg.verifier.max_in_flight, progress=progress))
                report.add_result("verify_tests", problems, res, origin)
                problems = res.kept
            else:
                report.skip("verify_tests", problems, origin, "prepare.verify_tests=false")

            # 5. neither always nor never solved by the starting model
            if pc.difficulty:
                from nous_ray.prepare.difficulty import difficulty_settings, run_difficulty

                cache = ResultCache(out / PASS_COUNTS_FILE, difficulty_settings(cfg))
                res = asyncio.run(run_difficulty(problems, cfg, open_sampler, backend, cache, progress=progress))
                report.add_result("difficulty", problems, res, origin)
                problems = res.kept
            else:
                report.skip("difficulty", problems, origin, "prepare.difficulty=false")
    else:
        report.skip("verify_tests", problems, origin, "prepare.verify_tests=false")
        report.skip("difficulty", problems, origin, "prepare.difficulty=false")

    _write_problems(problems, out / PROBLEMS_FILE)
    report.data["output"] = {"problems": len(problems), "path": str(out / PROBLEMS_FILE)}
    report.write(out / REPORT_FILE)
    say(report.table())
    say(f"prepare: {len(problems)} problems -> {out / PROBLEMS_FILE} | report {out / REPORT_FILE}")
    return report.data
