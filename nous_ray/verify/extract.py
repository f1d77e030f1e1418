"""Find the program in a model's answer: the last fenced python block."""

from __future__ import annotations

import re

# A fence starts a line after at most 3 spaces (CommonMark); an opening fence is ``` alone or tagged
# python / py / python3 (any case).
_OPEN = re.compile(r"( {0,3})```[ \t]*((?:python3?|py)\b[^\n`]*)?[ \t]*", re.IGNORECASE)
_CLOSE = re.compile(r" {0,3}```[ \t]*")
_FENCE = re.compile(r" {0,3}```")


def _dedent(line: str, n: int) -> str:
    """CommonMark: the opening fence's indentation is removed from each content line (as far as it has it)."""
    k = 0
    while k < n and k < len(line) and line[k] == " ":
        k += 1
    return line[k:]


def extract_code(completion: str) -> str | None:
    """The body of the last closed ```python / ```py / ```Python3 / bare ``` block, else None.

    A block tagged with another language is skipped; an unclosed block (a truncated answer) does not
    count; a block of only whitespace is no code. Fences may be indented by up to 3 spaces.
    """
    if not isinstance(completion, str):
        return None
    lines = completion.split("\n")
    last = None
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r")
        if _FENCE.match(line):
            m = _OPEN.fullmatch(line)
            j = i + 1
            while j < len(lines) and _CLOSE.fullmatch(lines[j].rstrip("\r")) is None:
                j += 1
            if j == len(lines):
                break  # unclosed
            if m is not None:
                indent = len(m.group(1))
                last = "\n".join(_dedent(ln, indent) for ln in lines[i + 1:j])
            i = j + 1
            continue
        i += 1
    if last is None or not last.strip():
        return None
    return last + "\n"
