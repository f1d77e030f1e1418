"""Turn raw rows into Problems with one error policy for every loader."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Callable, Iterable, Iterator

from nous_ray.data.case_formats import CaseError
from nous_ray.data.problem import Problem, ProblemFormatError

log = logging.getLogger(__name__)

ERROR_POLICIES = ("raise", "skip")

# Where skipped rows go besides the log, while :func:`record_skips` is active (one sink per context, so
# concurrent loads in other threads or tasks never see each other's rows).
_SKIP_SINK: contextvars.ContextVar[list | None] = contextvars.ContextVar("nous_ray_skip_sink", default=None)


@contextlib.contextmanager
def record_skips() -> Iterator[list[ProblemFormatError]]:
    """Collect the :class:`ProblemFormatError` of every row an ``errors="skip"`` load leaves out.

    ``with record_skips() as skipped: load_problems(..., errors="skip")`` -- the loaders' own
    counting, for callers that must report what was skipped and why (the data preparation).
    """
    sink: list[ProblemFormatError] = []
    token = _SKIP_SINK.set(sink)
    try:
        yield sink
    finally:
        _SKIP_SINK.reset(token)


def _skip(err: ProblemFormatError) -> None:
    log.warning("skipped malformed row: %s", err)
    sink = _SKIP_SINK.get()
    if sink is not None:
        sink.append(err)


def collect(
    rows: Iterable[tuple[Any, dict]],
    normalize: Callable[[Any, dict], Problem],
    *,
    dataset: str,
    max_problems: int | None = None,
    errors: str = "raise",
    keep: Callable[[Any, dict], bool] | None = None,
) -> list[Problem]:
    """Normalize rows in order until ``max_problems`` are kept.

    ``keep`` filters raw rows before they are normalized (a date window must not pay for decoding
    tests it drops). ``errors="raise"`` stops at the first malformed row with a
    :class:`ProblemFormatError`; ``"skip"`` leaves malformed rows out whole (never some of their
    tests) and logs each one and the count.
    """
    if errors not in ERROR_POLICIES:
        raise ValueError(f"errors must be one of {ERROR_POLICIES}, got {errors!r}")
    if max_problems is not None and max_problems < 0:
        raise ValueError(f"max_problems must be >= 0, got {max_problems}")
    out: list[Problem] = []
    skipped = 0
    for index, row in rows:
        if max_problems is not None and len(out) >= max_problems:
            break
        try:
            if keep is not None and not keep(index, row):
                continue
            problem = normalize(index, row)
            problem.validate(dataset=dataset, row=index)
        except CaseError as e:
            err = ProblemFormatError(dataset, index, e.field, e.why)
            if errors == "raise":
                raise err from None
            skipped += 1
            _skip(err)
            continue
        except ProblemFormatError as e:
            if errors == "raise":
                raise
            skipped += 1
            _skip(e)
            continue
        out.append(problem)
    if skipped:
        log.warning("%s: skipped %d malformed rows, kept %d problems", dataset, skipped, len(out))
    return out
