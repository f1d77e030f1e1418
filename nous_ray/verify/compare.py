"""Compare a program's answer with the expected one, as LiveCodeBench does.

Standard output: strip the whole text, split lines, strip each line; line counts must match; each
line is equal exactly, or token by token (split on whitespace) as exact decimals (``Decimal``, never
a float tolerance: ``50000000000000000`` is not ``50000000000000001``). Call-based: the JSON value the
program returned equals the expected JSON value (tuples arrive as lists).

The judge's cost stays proportional to the expected output: an answer far longer than it is rejected
unread (:func:`read_cap`), line counts are compared before any line is split, and lines are compared
token by token without building token lists.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from itertools import zip_longest

from nous_ray.data.problem import parse_json_value

_CTX = decimal.Context(traps=[])  # NaN comparisons answer False instead of raising
_TOKEN = re.compile(r"\S+")  # what str.split() splits on, one match at a time

# An answer longer than this many times the expected one, plus the slack, is wrong without being read.
LENGTH_FACTOR = 8
LENGTH_SLACK = 1 << 16


def read_cap(expected: str) -> int:
    """The most bytes of a program's answer the judge reads for this expected output; longer is far
    beyond anything whitespace and number formatting can account for (LiveCodeBench would tokenize it)."""
    return LENGTH_FACTOR * len(expected.encode("utf-8", "surrogatepass")) + LENGTH_SLACK


def _decimal(tok: str) -> Decimal | None:
    if "_" in tok:  # Decimal("1_0") == 10: digit separators are not how judges print numbers
        return None
    try:
        d = Decimal(tok)
    except decimal.InvalidOperation:
        return None
    return None if d.is_nan() else d


def _same_decimals(a: str, b: str) -> bool:
    for ma, mb in zip_longest(_TOKEN.finditer(a), _TOKEN.finditer(b)):
        if ma is None or mb is None:
            return False
        x, y = _decimal(ma.group()), _decimal(mb.group())
        if x is None or y is None or _CTX.compare(x, y) != 0:
            return False
    return True


def stdout_matches(got: str, expected: str) -> bool:
    """True when ``got`` (a program's stdout) is an accepted answer for ``expected``."""
    g, e = got.strip(), expected.strip()
    if g.count("\n") != e.count("\n"):
        return False
    for a, b in zip(g.split("\n"), e.split("\n")):
        a, b = a.strip(), b.strip()
        if a != b and not _same_decimals(a, b):
            return False
    return True


def parse_expected_value(expected: str):
    """The expected value of a call-based test (one JSON value). Raises ValueError if malformed."""
    return parse_json_value(expected)


def values_match(got, expected) -> bool:
    """Plain JSON values (the result decoded in the judge, never an object of the program's)."""
    try:
        return got == expected
    except RecursionError:  # nested deeper than the judge compares: not the expected value
        return False
