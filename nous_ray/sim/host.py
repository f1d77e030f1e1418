"""One machine's cores shared by every role: the CPU default, where engine, learners, sandbox and
driver run on the same few cores (``sim.host_cores``; 0 = every role on its own hardware, as on a GPU
cluster).

Processor sharing: with more runnable threads than cores, every thread runs at cores / threads of its
speed. A role doing work registers its threads for as long as it works (``work``), an engine for as
long as it is busy (``add`` / ``remove``); other runnable threads on the machine (the driver, Ray,
other users) are ``sim.host_background``. Durations given to ``work`` are those of an idle machine.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from nous_ray.sim.clock import SimClock


class SharedHost:
    def __init__(self, cores: float = 0.0, background: float = 0.0):
        self.cores, self.demand = float(cores), float(background)
        self._waiters: set[asyncio.Future] = set()
        self._listeners: list[Callable[[], None]] = []

    def slowdown(self) -> float:
        """How much longer work takes now than on an idle machine."""
        return max(1.0, self.demand / self.cores) if self.cores else 1.0

    def listen(self, fn: Callable[[], None]) -> None:
        """``fn`` is called whenever the slowdown may have changed (an engine re-plans its steps)."""
        self._listeners.append(fn)

    def add(self, threads: float) -> None:
        if self.cores:
            self.demand += threads
            self._changed()

    def remove(self, threads: float) -> None:
        self.add(-threads)

    def _changed(self) -> None:
        for w in self._waiters:
            if not w.done():
                w.set_result(None)
        for fn in self._listeners:
            fn()

    async def work(self, clock: SimClock, seconds: float, threads: float = 1.0) -> None:
        """``seconds`` of idle-machine work on ``threads`` threads, slowed by whatever else runs."""
        if not self.cores:
            await clock.sleep(seconds)
            return
        self.add(threads)
        left = seconds
        try:
            while left > 1e-12:
                s, t0 = self.slowdown(), clock.now()
                wake = asyncio.get_running_loop().create_future()
                self._waiters.add(wake)
                try:
                    await clock.wait(wake, left * s)
                finally:
                    self._waiters.discard(wake)
                left -= (clock.now() - t0) / s
        finally:
            self.remove(threads)
