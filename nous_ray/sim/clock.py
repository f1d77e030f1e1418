"""Simulated time: a virtual-clock event loop (one process) and a compressed clock (Ray actors).

In one process the whole simulation is asyncio code, so time can be virtual: :class:`VirtualClockLoop`
is an ordinary selector event loop whose ``time()`` jumps to the next timer whenever nothing is ready,
so a run of hours takes as long as its bookkeeping. Everything that awaits ``asyncio.sleep`` or a
timeout, the real :class:`~nous_ray.driver.loop.Driver` included (it reads ``loop.time()``), sees the
virtual time. Real I/O still works: with no timer pending the loop blocks on its selector as usual.

Across processes (stand-in actors on a Ray cluster) time is real but compressed: :class:`SimClock`
with ``speedup`` S sleeps ``d / S`` real seconds for ``d`` simulated ones and reports
``S x loop.time()``; the driver's own timings are then real seconds, ``1 / S`` of simulated ones.
"""

from __future__ import annotations

import asyncio
import selectors


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without blocking; when nothing is ready and the loop waits for a timer, moves the
    loop's clock to that timer instead of sleeping."""

    def __init__(self, clock: list[float]):
        super().__init__()
        self._clock = clock

    def select(self, timeout=None):
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only I/O (a signal, another thread) can wake the loop
            return super().select(None)
        self._clock[0] += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, starting at 0. Use with ``asyncio.Runner(loop_factory=...)``
    or :func:`run_virtual`."""

    def __init__(self):
        self._virtual_now = [0.0]
        super().__init__(_JumpingSelector(self._virtual_now))

    def time(self) -> float:
        return self._virtual_now[0]


def run_virtual(coro):
    """Run ``coro`` to completion on a fresh :class:`VirtualClockLoop`; returns its result."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(coro)


class SimClock:
    """Simulated seconds on the running event loop: ``speedup`` simulated seconds per loop second
    (1 on a :class:`VirtualClockLoop`)."""

    def __init__(self, speedup: float = 1.0):
        if speedup <= 0:
            raise ValueError(f"SimClock: speedup must be > 0, got {speedup}")
        self.speedup = float(speedup)

    def now(self) -> float:
        return asyncio.get_running_loop().time() * self.speedup

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speedup)

    async def wait(self, wake: asyncio.Future, seconds: float | None) -> None:
        """Wait until ``wake`` is done or ``seconds`` simulated seconds passed (None: no limit).
        A bare timer on the future (no task per wait, unlike ``asyncio.wait_for``): a simulated
        engine waits once per event."""
        if wake.done():
            return
        timer = None
        if seconds is not None:
            timer = asyncio.get_running_loop().call_later(max(0.0, seconds) / self.speedup, _wake, wake)
        try:
            await wake
        finally:
            if timer is not None:
                timer.cancel()


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
