"""Per-problem results that outlive a run: what verification and difficulty already computed.

One JSON line per problem, appended, flushed and fsynced as soon as the problem is done, so an
interrupted run leaves every finished problem plus at most one torn line (skipped on reading). Each
line carries two fingerprints: of the problem record itself (statement, tests, solutions, limits)
and of the settings that shaped the result (judge settings, model, sampling); a line is reused only
when both match, so an edited problem or another model is computed again, never mixed in. A later
line for the same problem wins; the first write of a run compacts the file to those lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nous_ray.data.problem import Problem
from nous_ray.prepare.text import fingerprint


def problem_key(problem: Problem) -> str:
    return fingerprint(problem.to_dict())


class ResultCache:
    def __init__(self, path: str | Path, settings: dict):
        self.path = Path(path)
        self.settings = fingerprint(settings)
        self.torn = 0
        self._lines: dict[str, dict] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        self.torn += 1
                        continue
                    if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                        self._lines[rec["id"]] = rec
        self._f = None

    def get(self, problem: Problem) -> dict | None:
        rec = self._lines.get(problem.id)
        if rec is None or rec.get("key") != problem_key(problem) or rec.get("settings") != self.settings:
            return None
        return rec

    def put(self, problem: Problem, result: dict) -> dict:
        rec = {"id": problem.id, "key": problem_key(problem), "settings": self.settings, **result}
        if self._f is None:
            self._compact()
            self._f = open(self.path, "a", encoding="utf-8")
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._lines[problem.id] = rec
        return rec

    def _compact(self) -> None:
        """Rewrite the file with its latest line per problem (any settings), without torn lines,
        before the first append."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in self._lines.values())
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
