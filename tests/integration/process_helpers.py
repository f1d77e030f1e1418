"""Acting on a running entry point at an exact moment: read its output until a line, then signal it."""

from __future__ import annotations

import subprocess
import time


def signal_at_line(proc: subprocess.Popen, stream, prefix: str, send, timeout_s: float = 600.0) -> list[str]:
    """Read ``stream`` (one of ``proc``'s pipes) until a line starting with ``prefix``, call ``send()``
    (deliver the signal), then wait for ``proc`` to exit; returns every line of ``stream``. ``proc`` is
    killed if it outlives ``timeout_s``."""
    lines: list[str] = []
    t0 = time.monotonic()
    try:
        for line in stream:
            lines.append(line.rstrip())
            if line.startswith(prefix):
                send()
                break
            assert time.monotonic() - t0 < timeout_s, "\n".join(lines[-20:])
        rest = stream.read()
        proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return lines + rest.splitlines()
