"""``python -m nous_ray.verify INPUT.jsonl [--backend local|modal] [--workers N] [--isolation bwrap|none] [-o OUT.jsonl]``.

Each input line: ``{"problem": <Problem record>, "completion": "<model text>"}``. Each output line,
same order: ``{"id", "verdict", "reward", "tests_run", "cpu_s"}``. A broken line is reported with its
line number (and given verdict infra_error, reward null, in the output); the rest are verified.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from nous_ray.config import VerifierConfig
from nous_ray.data.problem import Problem, ProblemFormatError
from nous_ray.verify.backend import make_backend
from nous_ray.verify.isolation import ISOLATIONS, SandboxUnavailable
from nous_ray.verify.result import Verdict, VerifyResult


def _parse_line(path: str, lineno: int, line: str) -> tuple[Problem, str]:
    try:
        rec = json.loads(line)
    except ValueError as e:
        raise ValueError(f"{path}:{lineno}: not JSON: {e}") from None
    if not isinstance(rec, dict) or "problem" not in rec or "completion" not in rec:
        raise ValueError(f"{path}:{lineno}: expected an object with 'problem' and 'completion'")
    if not isinstance(rec["completion"], str):
        raise ValueError(f"{path}:{lineno}: 'completion' must be a string")
    try:
        problem = Problem.from_dict(rec["problem"], dataset=path, row=f"line {lineno}")
    except (ProblemFormatError, TypeError) as e:
        raise ValueError(f"{path}:{lineno}: {e}") from None
    return problem, rec["completion"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nous_ray.verify", description=__doc__.split("\n")[0])
    ap.add_argument("input", help="JSONL of {problem, completion}")
    ap.add_argument("--backend", choices=["local", "modal"], default="local")
    ap.add_argument("--workers", type=int, default=0, help="local sandbox processes (0 = cores)")
    ap.add_argument("--isolation", choices=ISOLATIONS, default=VerifierConfig().isolation,
                    help="local sandbox: bwrap (namespaces) or none (explicitly unsandboxed)")
    ap.add_argument("-o", "--output", help="JSONL of verdicts (default: stdout)")
    ap.add_argument("--chunk", type=int, default=64, help="items per batch handed to the backend")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    items: list[tuple[int, tuple[Problem, str] | None, str]] = []
    bad = 0
    with open(args.input, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                items.append((lineno, _parse_line(args.input, lineno, line), ""))
            except ValueError as e:
                bad += 1
                print(f"error: {e}", file=sys.stderr)
                items.append((lineno, None, str(e)))
    cfg = VerifierConfig(backend=args.backend, workers=args.workers, isolation=args.isolation)
    try:
        backend = make_backend(cfg)
    except SandboxUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    counts: Counter = Counter()
    try:
        with backend, tqdm(total=len(items), file=sys.stderr, unit="item") as bar:
            for start in range(0, len(items), args.chunk):
                chunk = items[start:start + args.chunk]
                good = [it for _, it, _ in chunk if it is not None]
                results = iter(backend.verify(good))
                for lineno, it, err in chunk:
                    if it is None:
                        r = VerifyResult(f"<line {lineno}>", Verdict.INFRA_ERROR, detail=err)
                    else:
                        r = next(results)
                    counts[r.verdict.value] += 1
                    d = r.to_dict()
                    out.write(json.dumps({k: d[k] for k in ("id", "verdict", "reward", "tests_run", "cpu_s")}) + "\n")
                    bar.update(1)
                out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    total = sum(counts.values())
    print(f"\n{'verdict':<15}{'count':>8}{'share':>9}", file=sys.stderr)
    for v in Verdict:
        if counts[v.value]:
            print(f"{v.value:<15}{counts[v.value]:>8}{counts[v.value] / total:>9.1%}", file=sys.stderr)
    print(f"{'total':<15}{total:>8}", file=sys.stderr)
    if bad:
        print(f"{bad} broken input line(s) reported above", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
