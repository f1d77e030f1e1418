"""NousResearch/RLVR_Coding_Problems -> Problems.

What is known of this dataset (its card says only that it is DeepCoder-Preview-Dataset "slightly
reformatted"): one file, ``rl_train.jsonl`` (~9 GB, split ``train``, ~24k rows), with a
``data_process.py`` beside it. Its columns, as NousResearch's own consumer reads them (atropos
``environments/code_execution_server/coding_server.py`` and its Modal grader
``lcb_modal_endpoint.py``):

- ``problem``: the statement;
- ``problem_type``: ``"func"`` (call-based) or ``"stdin_stdout"`` (anything not ``func`` is graded
  as standard input there; here only those two values are accepted);
- ``tests``: JSON text (or an already-decoded object) ``{"input": [...], "output": [...]}``;
  call-based inputs are an argument list or LiveCodeBench JSON lines, outputs a JSON string or a
  one-element list wrapping the return value;
- ``fn_name``: the function for ``func`` rows (``"none"``/null otherwise);
- ``starter_code`` (optional), ``difficulty`` (optional).

ASSUMPTION: the row has no id column; the record id is ``rlvr/{row}``. Columns beyond these are
ignored.
"""

from __future__ import annotations

import os
from typing import Sequence

from nous_ray.data.case_formats import (
    CaseError,
    functional_input,
    functional_output,
    loads_json_field,
    stdin_text,
)
from nous_ray.data.collect import collect
from nous_ray.data.problem import Problem, TestCase
from nous_ray.data.sources import is_local, iter_rows, load_hub, load_local, local_files

HUB_NAME = "NousResearch/RLVR_Coding_Problems"
PROBLEM_TYPES = ("func", "stdin_stdout")


def _opt_text(row: dict, name: str) -> str | None:
    v = row.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise CaseError(name, f"expected a string, got {type(v).__name__}")
    return v


def normalize_row(row: dict, *, index: int) -> Problem:
    prompt = _opt_text(row, "problem")
    if prompt is None:
        raise CaseError("problem", "missing")
    ptype = row.get("problem_type")
    if ptype not in PROBLEM_TYPES:
        raise CaseError("problem_type", f"{ptype!r} is not one of {PROBLEM_TYPES}")
    tests = loads_json_field(row.get("tests"), "tests")
    if not isinstance(tests, dict):
        raise CaseError("tests", f"expected an object with input/output lists, got {type(tests).__name__}")
    for key in ("input", "output"):
        if not isinstance(tests.get(key), list):
            raise CaseError(f"tests.{key}", "missing or not a list")
    xs, ys = tests["input"], tests["output"]
    if len(xs) != len(ys):
        raise CaseError("tests", f"{len(xs)} inputs but {len(ys)} outputs")
    if not xs:
        raise CaseError("tests", "no tests")
    fn_name = _opt_text(row, "fn_name")
    if ptype == "func":
        if not fn_name or fn_name == "none":
            raise CaseError("fn_name", "a func problem needs its function name")
        cases = [TestCase(functional_input(x, f"tests.input[{i}]"),
                          functional_output(y, f"tests.output[{i}]"), "functional")
                 for i, (x, y) in enumerate(zip(xs, ys))]
    else:
        if fn_name not in (None, "", "none"):
            raise CaseError("fn_name", f"stdin_stdout problem names a function {fn_name!r}")
        fn_name = None
        cases = [TestCase(stdin_text(x, f"tests.input[{i}]"), stdin_text(y, f"tests.output[{i}]"), "stdin")
                 for i, (x, y) in enumerate(zip(xs, ys))]
    difficulty = row.get("difficulty")
    return Problem(
        id=f"rlvr/{index}",
        source="rlvr",
        prompt=prompt,
        tests=cases,
        starter_code=_opt_text(row, "starter_code") or "",
        fn_name=fn_name,
        difficulty=None if difficulty is None else str(difficulty),
    )


def load_rlvr(
    path: str | None = None,
    subsets: Sequence[str] = (),
    max_problems: int | None = None,
    *,
    errors: str = "raise",
    streaming: bool = False,
) -> list[Problem]:
    """``path``: None (the hub dataset), another hub name, or local jsonl/parquet file(s) or folder."""
    if subsets:
        raise ValueError(f"rlvr: the dataset has no subsets, got {list(subsets)}")
    if path is None or not is_local(path):
        ds = load_hub(path or HUB_NAME, split="train", streaming=streaming)
    else:
        pattern = None if not os.path.isdir(path) else "*"
        ds = load_local(local_files(path, dataset="rlvr", pattern=pattern), dataset="rlvr", streaming=streaming)
    return collect(iter_rows(ds), lambda i, row: normalize_row(row, index=i),
                   dataset="rlvr", max_problems=max_problems, errors=errors)
