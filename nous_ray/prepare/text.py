"""Statement text as the duplicate and contamination checks see it: normalized, split into words."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

_WORD = re.compile(r"\w+")


def normalize_statement(text: str) -> str:
    """NFKC, lower case, every run of whitespace one space, no leading or trailing space.

    Two statements with the same normalized text are exact duplicates: re-flowed lines, doubled
    spaces, CRLF line ends and full-width characters do not make a problem new.
    """
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


# LaTeX commands (\le, \times, \ldots): dropped, so "1 \le n", "1 <= n" and "1 ≤ n" read alike.
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
# Word tokens and sentence ends (which decide whether a capitalized word is a name).
_TOKEN = re.compile(r"\w+|[.!?:;\n]")
# One letter, optionally with a short subscript: n, k, A_i, c_1, x2.
_VARIABLE = re.compile(r"[^\W\d_](?:_[^\W_]{1,3}|\d{1,3})?")
NAME, VARIABLE = "<name>", "<var>"


def words(text: str) -> list[str]:
    """The word tokens of a statement with names folded, lower case; punctuation falls away.

    Renaming does not make a problem new, so names become placeholders: a capitalized word inside a
    sentence (a character, ``Alice`` / ``Bob``) becomes ``<name>`` and a variable (one letter with an
    optional short subscript: ``n``, ``A_i``, ``c_1``) ``<var>``. Words that start a sentence stay
    themselves (they are capitalized anyway), numbers too. Symbols and LaTeX commands fall away, so
    the same statement typeset differently reads alike (and ``a+b`` reads as ``a-b``: one-line
    statements are compared exactly only, see :mod:`nous_ray.prepare.dedupe`).
    """
    out: list[str] = []
    start = True
    for tok in _TOKEN.findall(_LATEX_COMMAND.sub(" ", unicodedata.normalize("NFKC", text))):
        if tok in ".!?:;\n":
            start = True
            continue
        if _VARIABLE.fullmatch(tok):
            out.append(VARIABLE)
        elif not start and tok[0].isupper() and not tok.isupper():
            out.append(NAME)
        else:
            out.append(tok.lower())
        start = False
    return out


def ngrams(tokens: list[str], n: int) -> set[str]:
    """The set of word ``n``-grams; a text shorter than ``n`` words is one gram of all its words
    (so identical short statements still match), an empty text none."""
    if not tokens:
        return set()
    if len(tokens) < n:
        return {" ".join(tokens)}
    return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; 0 for two empty sets (nothing to compare is no evidence of a copy)."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def fingerprint(obj: Any) -> str:
    """A stable hash of a JSON-able value (dict keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]
