"""The one normalized problem record every loader produces and every consumer reads."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

TEST_KINDS = ("stdin", "functional")
DEFAULT_TIME_LIMIT_S = 15.0
DEFAULT_MEMORY_LIMIT_MB = 4096
JSON_INT_DIGITS = 50_000  # LiveCodeBench's evaluator parses integers of up to 50,000 digits


def _json_int(text: str) -> int:
    if len(text) <= 4000:
        return int(text)
    if len(text.lstrip("-")) > JSON_INT_DIGITS:
        raise ValueError(f"an integer of more than {JSON_INT_DIGITS} digits")
    return int(Decimal(text))  # no digit limit on this conversion, unlike int(str)


def parse_json_value(text: str) -> Any:
    """A JSON value as the verifier reads one (expected outputs of call-based tests and the values
    programs return alike); ValueError when it cannot, nesting too deep included."""
    try:
        return json.loads(text, parse_int=_json_int)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class ProblemFormatError(ValueError):
    """A problem row that cannot be normalized; the message names dataset, row and field."""

    def __init__(self, dataset: str, row: Any, field_name: str, why: str):
        self.dataset, self.row, self.field, self.why = dataset, row, field_name, why
        super().__init__(f"{dataset}: row {row}: field {field_name!r}: {why}")


@dataclass(frozen=True)
class TestCase:
    """One hidden test.

    ``stdin``: ``input`` is fed on standard input, ``output`` is the expected standard output.
    ``functional``: ``input`` holds one JSON value per line (one line per argument) and ``output``
    one JSON value, as LiveCodeBench stores them.
    """

    input: str
    output: str
    kind: str = "stdin"

    __test__ = False  # not a pytest class


@dataclass
class Problem:
    id: str
    source: str
    prompt: str
    tests: list[TestCase]
    starter_code: str = ""
    fn_name: str | None = None
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    contest_date: str | None = None
    difficulty: str | None = None
    platform: str | None = None
    # Reference solutions where the dataset ships them (used by the supervised warm start).
    solutions: list[str] = field(default_factory=list)

    @property
    def call_based(self) -> bool:
        return self.fn_name is not None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tests"] = [dataclasses.asdict(t) for t in self.tests]
        return d

    @classmethod
    def from_dict(cls, d: dict, *, dataset: str = "problem", row: Any = "?") -> "Problem":
        """Build from a dict (e.g. a JSONL line), checking every field; errors name the place."""
        if not isinstance(d, dict):
            raise ProblemFormatError(dataset, row, "<row>", f"expected an object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ProblemFormatError(dataset, row, unknown[0], "unknown field")
        for name in ("id", "source", "prompt", "tests"):
            if name not in d:
                raise ProblemFormatError(dataset, row, name, "missing")
        if not isinstance(d["tests"], list) or not d["tests"]:
            raise ProblemFormatError(dataset, row, "tests", "must be a non-empty list")
        tests = []
        for i, t in enumerate(d["tests"]):
            if isinstance(t, TestCase):
                tests.append(t)
                continue
            if not isinstance(t, dict) or "input" not in t or "output" not in t:
                raise ProblemFormatError(dataset, row, f"tests[{i}]", "needs 'input' and 'output'")
            kind = t.get("kind", "stdin")
            if kind not in TEST_KINDS:
                raise ProblemFormatError(dataset, row, f"tests[{i}].kind", f"{kind!r} not in {TEST_KINDS}")
            if not isinstance(t["input"], str) or not isinstance(t["output"], str):
                raise ProblemFormatError(dataset, row, f"tests[{i}]", "input and output must be strings")
            tests.append(TestCase(t["input"], t["output"], kind))
        fields = {k: v for k, v in d.items() if k != "tests"}
        p = cls(tests=tests, **fields)
        p.validate(dataset=dataset, row=row)
        return p

    def validate(self, *, dataset: str = "problem", row: Any = "?") -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ProblemFormatError(dataset, row, "id", "must be a non-empty string")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ProblemFormatError(dataset, row, "prompt", "must be a non-empty string")
        kinds = {t.kind for t in self.tests}
        if self.fn_name is not None and kinds != {"functional"}:
            raise ProblemFormatError(dataset, row, "tests", "call-based problem (fn_name set) needs functional tests")
        if self.fn_name is None and "functional" in kinds:
            raise ProblemFormatError(dataset, row, "fn_name", "functional tests need fn_name")
        if not (self.time_limit_s > 0):
            raise ProblemFormatError(dataset, row, "time_limit_s", f"must be > 0, got {self.time_limit_s}")
        if not (self.memory_limit_mb > 0):
            raise ProblemFormatError(dataset, row, "memory_limit_mb", f"must be > 0, got {self.memory_limit_mb}")
        for i, t in enumerate(self.tests):
            if t.kind == "functional":
                try:
                    parse_json_value(t.output)
                except ValueError as e:
                    raise ProblemFormatError(dataset, row, f"tests[{i}].output", f"the verifier cannot parse it: {e}")
