"""``results.jsonl``: one line per sample, written a whole problem at a time, and resumed from.

A problem's lines are appended, flushed and fsynced together once its group is verified, so a crash
leaves complete problems plus at most one torn tail. On start, :meth:`ResultsFile.resume` keeps the
problems that have all ``n`` samples (indices ``0..n-1``), drops partial ones and torn lines, and
rewrites the file with what it keeps; those problems are not generated again.

The settings that shape the samples (model, sampling, limits) are saved beside it in
``eval_settings.json``; resuming under different settings is an error naming the keys, because
mixing samples of two settings would give a number that belongs to neither.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

RECORD_FIELDS = ("problem_id", "sample", "verdict", "reward", "response_tokens", "finish_reason", "text")
RESULTS_FILE = "results.jsonl"
SETTINGS_FILE = "eval_settings.json"


class EvalResumeError(RuntimeError):
    """The output folder holds results that cannot be resumed under the current settings."""


def make_record(problem, sample_index: int, sample, verdict: dict) -> dict:
    """One ``results.jsonl`` line from a problem, a generated sample and its verifier verdict dict.

    ``sample``: has ``response_ids``, ``finish_reason`` and ``text`` (a :class:`~nous_ray.samples.Sample`).
    ``verdict``: ``VerifyResult.to_dict()`` (``verdict``, ``reward``, ``tests_run``, ``cpu_s``, ...).
    """
    return {
        "problem_id": problem.id,
        "sample": sample_index,
        "verdict": verdict["verdict"],
        "reward": verdict.get("reward"),
        "response_tokens": len(sample.response_ids),
        "finish_reason": sample.finish_reason,
        "difficulty": problem.difficulty,
        "platform": problem.platform,
        "tests_run": verdict.get("tests_run"),
        "cpu_s": verdict.get("cpu_s"),
        "detail": verdict.get("detail", ""),
        # The policy version that generated it: an evaluation during training must see one.
        "version": getattr(sample, "version", None),
        "text": sample.text,
    }


def check_record(rec, where: str) -> None:
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [f for f in RECORD_FIELDS if f not in rec]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    if isinstance(rec["sample"], bool) or not isinstance(rec["sample"], int) or rec["sample"] < 0:
        raise ValueError(f"{where}: field 'sample' must be an int >= 0, got {rec['sample']!r}")


def read_records(path: str | Path) -> tuple[list[dict], int]:
    """The records of a results file, and how many lines were torn (not JSON) and skipped.

    A line that is JSON but not a valid record is an error naming the file and line: that is not a
    crash's leftover but a file written by something else.
    """
    records, torn = [], 0
    p = Path(path)
    if not p.exists():
        return records, torn
    with open(p) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            check_record(rec, f"{p}: line {i}")
            records.append(rec)
    return records, torn


def complete_problems(records: Iterable[dict], n: int) -> dict[str, list[dict]]:
    """``problem_id -> its n records ordered by sample`` for the problems whose sample indices are
    exactly ``0..n-1``; any other problem (fewer, more, or repeated indices) is partial."""
    by_pid: dict[str, list[dict]] = {}
    for r in records:
        by_pid.setdefault(r["problem_id"], []).append(r)
    out = {}
    for pid, recs in by_pid.items():
        if sorted(r["sample"] for r in recs) == list(range(n)):
            out[pid] = sorted(recs, key=lambda r: r["sample"])
    return out


def finished_problems(out_dir: str | Path, n: int) -> set[str]:
    """Ids of the problems ``<out_dir>/results.jsonl`` holds all ``n`` samples of (read only)."""
    return set(complete_problems(read_records(Path(out_dir) / RESULTS_FILE)[0], n))


def settings_conflict(out_dir: str | Path, settings: dict) -> str | None:
    """Why results in ``out_dir`` cannot be resumed under ``settings`` (they were made with others);
    None when there are none or they match. Read only."""
    d = Path(out_dir)
    results, saved = d / RESULTS_FILE, d / SETTINGS_FILE
    if not saved.exists() or not results.exists() or results.stat().st_size == 0:
        return None
    old = json.loads(saved.read_text())
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if not diff:
        return None
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in diff)
    return (f"{results} holds results made with other settings ({shown}); use another output folder "
            f"(--out DIR), or start fresh (launch/eval.py --fresh)")


class ResultsFile:
    def __init__(self, out_dir: str | Path, n_samples: int):
        self.dir = Path(out_dir)
        self.path = self.dir / RESULTS_FILE
        self.settings_path = self.dir / SETTINGS_FILE
        self.n = n_samples
        self._f = None

    def resume(self, settings: dict, fresh: bool = False) -> dict[str, list[dict]]:
        """Prepare the folder for appending; returns the complete problems already there.

        ``fresh``: discard earlier results instead. Raises :class:`EvalResumeError` when earlier
        results were made under different ``settings``.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            for p in (self.path, self.settings_path):
                p.unlink(missing_ok=True)
        conflict = settings_conflict(self.dir, settings)
        if conflict:
            raise EvalResumeError(conflict)
        done = complete_problems(read_records(self.path)[0], self.n)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            for recs in done.values():
                for r in recs:
                    f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)
        self.settings_path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return done

    def append_problem(self, records: list[dict]) -> None:
        """Append one problem's records and make them durable before returning."""
        if self._f is None:
            self._f = open(self.path, "a")
        self._f.write("".join(json.dumps(r) + "\n" for r in records))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
