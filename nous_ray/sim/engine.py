"""A stand-in rollout engine: vLLM's continuous batching, simulated between events.

Concurrent ``generate`` calls share one running batch, as :class:`nous_ray.rollout.stream.StreamingEngine`
does with vLLM. Sequences wait in a queue until the KV cache has room for them (a group's samples share
their prompt's blocks and its prefill), decode one token per step, and leave when they reach their drawn
length; when the cache overflows the newest sequence is preempted and later recomputed, as vLLM does.
A step's duration comes from :class:`~nous_ray.sim.cost.CostModel` for the batch and the context it
reads. Between two events (an arrival, a completion, a preemption, a chunk of steps) the batch is fixed,
so time advances event to event, not token by token: a 40k-token response costs a few events.

Weight updates follow ``rollout.weight_update``, as the real engine: ``drain`` (stop admitting, finish every
submitted request, load) or ``inflight`` (load between two steps; running sequences go on).

The engine records its own time (:class:`EngineRecords`): busy (sequences queued or running), loading
weights, idle; the batch it ran at; the tokens it produced.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field

from nous_ray.samples import Sample
from nous_ray.sim.clock import SimClock
from nous_ray.sim.cost import CostModel
from nous_ray.sim.host import SharedHost
from nous_ray.sim.workload import ConstantSeq, Workload

# Decode steps per event at most. The step time is linear in the KV read, which grows by the batch
# every step, so evaluating it at an interval's midpoint is exact; the bound keeps the compute-bound
# branch (and rounding) honest.
CHUNK_STEPS = 4096


class EngineCrashed(RuntimeError):
    pass


@dataclass
class EngineRecords:
    """The engine's own account of its time (simulated seconds) and work."""

    busy_s: float = 0.0  # sequences queued or running
    load_s: float = 0.0  # loading weights
    batch_s: float = 0.0  # integral of the running batch over busy time
    tokens: float = 0.0  # response tokens decoded (recomputed ones not counted)
    preemptions: int = 0
    sequences: int = 0
    busy_intervals: list = field(default_factory=list)  # [start, end] of each busy period
    load_intervals: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"busy_s": self.busy_s, "load_s": self.load_s, "tokens": self.tokens,
                "mean_batch": self.batch_s / self.busy_s if self.busy_s else 0.0,
                "preemptions": self.preemptions, "sequences": self.sequences}


class _Request:
    __slots__ = ("prompt_ids", "problem_id", "group_id", "version", "seqs", "left", "resident", "fut")

    def __init__(self, prompt_ids, problem_id, group_id, version, fut):
        self.prompt_ids, self.problem_id, self.group_id, self.version = prompt_ids, problem_id, group_id, version
        self.seqs: list[_Seq] = []
        self.left = 0  # sequences not finished
        self.resident = 0  # sequences holding the prompt's KV blocks
        self.fut = fut


class _Seq:
    __slots__ = ("req", "target", "truncated", "text", "done", "start", "recompute")

    def __init__(self, req: _Request, target: int, truncated: bool, text: str):
        self.req, self.target, self.truncated, self.text = req, target, truncated, text
        self.done = 0.0  # tokens decoded before its current admission
        self.start = 0.0  # the engine's step count when it was (re)admitted
        self.recompute = False  # preempted: its tokens so far must be prefilled again


class SimEngine:
    def __init__(self, cost: CostModel, workload: Workload, clock: SimClock, seed: int = 0, version: int = 0,
                 host: SharedHost | None = None):
        self.cost, self.workload, self.clock = cost, workload, clock
        self.host = host or SharedHost()
        self.host.listen(self._poke)  # a busier machine: re-plan the current interval
        self.rng = random.Random(seed)
        self.version = version
        self.capacity = cost.kv_capacity_tokens
        self.max_seqs = cost.max_num_seqs
        self.prompt_len = 0
        self.records = EngineRecords()
        self._waiting: deque[_Seq] = deque()  # FIFO; preempted sequences go back in front
        self._running: dict[_Seq, None] = {}  # admission order: the last one is preempted first
        self._ends: list[tuple[float, int, _Seq]] = []  # (step at which it finishes, tie, seq), lazily pruned
        self._tie = itertools.count()
        self._steps = 0.0  # decode steps so far (fractional between events)
        self._usage = 0.0  # KV tokens held: decoded tokens + each resident request's prompt once
        self._context = 0.0  # tokens read per step: every running sequence's prompt + decoded tokens
        self._t = None  # time of the last advance
        self._tau = 0.0  # seconds per decode step in the current interval
        self._k, self._interval = 0.0, 0.0  # its planned steps and duration
        self._slow = 1.0  # the shared host's slowdown when it was planned
        self._stall_until = 0.0  # prefill or an in-flight load: no decoding until then
        self._busy_since = None
        self._wake: asyncio.Future | None = None  # done when something arrives for the event loop
        self._admitting = asyncio.Event()
        self._admitting.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending: set[_Request] = set()
        self._update_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._crashed: Exception | None = None

    # ---- calls ------------------------------------------------------------------------------

    async def generate(self, prompts, n: int, sampling: dict, problem_ids=None, group_ids=None) -> list[list[Sample]]:
        """``n`` samples per prompt, grouped per prompt (what a rollout worker's ``generate`` returns)."""
        self._check_alive()
        await self._admitting.wait()
        self._check_alive()
        loop = asyncio.get_running_loop()
        max_tokens = int(sampling["max_tokens"])
        reqs = []
        for k, ids in enumerate(prompts):
            req = _Request(ids, problem_ids[k] if problem_ids else "", group_ids[k] if group_ids else k,
                           self.version, loop.create_future())
            for _ in range(n):
                length, truncated = self.workload.response_length(self.rng, max_tokens)
                text = self.workload.outcome(self.rng, req.problem_id, truncated)
                req.seqs.append(_Seq(req, length, truncated, text))
            req.left = n
            self._waiting.extend(req.seqs)
            self._pending.add(req)
            reqs.append(req)
        self._idle.clear()
        self._kick()
        return list(await asyncio.gather(*(r.fut for r in reqs)))

    async def update_weights(self, version: int, reset: bool = False) -> int:
        if not isinstance(version, int) or (version < self.version and not reset):
            raise ValueError(f"update_weights: version {version!r} is older than the loaded {self.version}")
        self._check_alive()
        load = self.cost.sync_engine_s()
        async with self._update_lock:
            if self.cost.cfg.rollout.weight_update == "inflight":
                now = self.clock.now()
                self._advance(now)
                start = max(now, self._stall_until)
                self._stall_until = start + load
                self.version = version
                self._note_load(start, start + load)
                self._kick()
                await self.clock.sleep(self._stall_until - now)
                return 1
            self._admitting.clear()
            try:
                await self._idle.wait()
                self._check_alive()
                start = self.clock.now()
                await self.host.work(self.clock, load)
                self._note_load(start, self.clock.now())
                self.version = version
                return 1
            finally:
                self._admitting.set()

    def crash(self, why: str = "engine crashed") -> None:
        """The engine dies: calls in flight fail, later ones too (until the pool replaces it)."""
        self._crashed = EngineCrashed(why)
        for req in list(self._pending):
            if not req.fut.done():
                req.fut.set_exception(self._crashed)
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()
        if self._busy_since is not None:  # its thread stops too
            self.records.busy_intervals.append((self._busy_since, self.clock.now()))
            self._busy_since = None
            self.host.remove(1)
        self._admitting.set()
        self._idle.set()

    @property
    def num_running(self) -> int:
        return len(self._running)

    def busy_intervals(self, now: float | None = None) -> list[tuple[float, float]]:
        """The engine's busy periods, one still open ending ``now`` (default: the clock's now, on the
        engine's event loop)."""
        if now is None:
            now = self.clock.now()
            self._advance(now)
        open_ = [(self._busy_since, max(now, self._busy_since))] if self._busy_since is not None else []
        return list(self.records.busy_intervals) + open_

    # ---- the event loop -----------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._crashed is not None:
            raise self._crashed

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _kick(self) -> None:
        self._poke()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        self._advance(self.clock.now())
        while self._running or self._waiting:
            now = self.clock.now()
            self._advance(now)
            self._admit(now)
            dt = self._plan(now)
            self._wake = asyncio.get_running_loop().create_future()
            await self.clock.wait(self._wake, dt)
        self._advance(self.clock.now())

    def _advance(self, now: float) -> None:
        """Progress every running sequence to ``now``; finish, and preempt what no longer fits."""
        t0, self._t = self._t, now
        if t0 is None:
            return
        b = len(self._running)
        if self._busy_since is not None:
            self.records.busy_s += now - t0
            self.records.batch_s += b * (now - t0)
        elapsed = now - max(t0, min(now, self._stall_until))
        if b and elapsed > 0:
            steps = self._steps_within(b, elapsed)
            self._steps += steps
            self._usage += b * steps
            self._context += b * steps
            self.records.tokens += b * steps
            self._finish_due()
        if len(self._running) > 0 and self._usage > self.capacity:
            self._preempt()
        busy = bool(self._running or self._waiting)
        if busy and self._busy_since is None:
            self._busy_since = now
            self.host.add(1)  # one engine thread (OMP_NUM_THREADS=1 on CPU)
        elif not busy and self._busy_since is not None:
            self.records.busy_intervals.append((self._busy_since, now))
            self._busy_since = None
            self.host.remove(1)

    def _steps_within(self, b: int, elapsed: float) -> float:
        """Decode steps done in ``elapsed`` seconds from the interval's start: the k with
        k * step_time(context + b (k - 1) / 2) = elapsed (the step time grows as the KV does)."""
        k = self._k
        if self._interval <= 0:  # a late wake after a stall: at the current step time
            return elapsed / (self.cost.decode_step_s(b, self._context) * self.host.slowdown())
        if elapsed >= self._interval - 1e-12:  # the whole interval planned (or more, on a late wake)
            return k * elapsed / self._interval
        lo, hi = 0.0, k
        for _ in range(60):  # bisection: the duration of k steps is increasing in k
            mid = (lo + hi) / 2
            if mid * self._slow * self.cost.decode_step_s(b, self._context + b * max(0.0, mid - 1) / 2) < elapsed:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def _finish_due(self) -> None:
        eps = 1e-6
        while self._ends and self._ends[0][0] <= self._steps + eps:
            _, _, s = heapq.heappop(self._ends)
            if s not in self._running:
                continue  # preempted since
            overshoot = self._steps - (s.start + s.target - s.done)
            self._usage -= overshoot
            self._context -= overshoot
            self.records.tokens -= overshoot
            self._release(s, s.target)
            req = s.req
            req.left -= 1
            if req.left == 0:
                self._complete(req)

    def _release(self, s: _Seq, decoded: float) -> None:
        del self._running[s]
        plen = len(s.req.prompt_ids)
        self._usage -= decoded
        self._context -= plen + decoded
        s.req.resident -= 1
        if s.req.resident == 0:
            self._usage -= plen

    def _preempt(self) -> None:
        while len(self._running) > 1 and self._usage > self.capacity:
            s = next(reversed(self._running))
            decoded = s.done + (self._steps - s.start)
            self._release(s, decoded)
            s.done, s.recompute = decoded, True
            self._waiting.appendleft(s)
            self.records.preemptions += 1

    def _complete(self, req: _Request) -> None:
        self._pending.discard(req)
        if not self._pending:
            self._idle.set()
        samples = [Sample(problem_id=req.problem_id, group_id=req.group_id, prompt_ids=req.prompt_ids,
                          response_ids=ConstantSeq(0, s.target), logprobs=ConstantSeq(0.0, s.target),
                          finish_reason="length" if s.truncated else "stop", version=req.version, text=s.text)
                   for s in req.seqs]
        self.records.sequences += len(samples)
        if not req.fut.done():
            req.fut.set_result(samples)

    def _admit(self, now: float) -> None:
        prefill = []
        while self._waiting and len(self._running) < self.max_seqs:
            s = self._waiting[0]
            plen = len(s.req.prompt_ids)
            need = (s.done if s.recompute else 0.0) + (plen if s.req.resident == 0 else 0)
            # Room for the sequence and one step of the batch, unless nothing runs (then it must).
            if self._running and self._usage + need + len(self._running) + 1 > self.capacity:
                break
            self._waiting.popleft()
            if s.req.resident == 0:
                prefill.append(plen)
            if s.recompute:
                prefill.append(s.done)
                s.recompute = False
            s.req.resident += 1
            self._running[s] = None
            self._usage += need
            self._context += plen + s.done
            s.start = self._steps
            heapq.heappush(self._ends, (s.start + s.target - s.done, next(self._tie), s))
        if prefill:
            self._stall_until = max(now, self._stall_until) + \
                sum(self.cost.prefill_s(t) for t in prefill) * self.host.slowdown()

    def _plan(self, now: float) -> float | None:
        """Time to the next event; sets the step time of the interval up to it."""
        if not self._running:
            return None
        if self._stall_until > now:
            self._k = self._interval = 0.0
            return self._stall_until - now
        b = len(self._running)
        while self._ends and self._ends[0][2] not in self._running:
            heapq.heappop(self._ends)
        k = min(self._ends[0][0] - self._steps, CHUNK_STEPS)
        free = self.capacity - self._usage
        if b * k > free:  # the cache fills first: stop there to preempt
            k = max(1.0, free / b)
        # step j of the interval reads the context plus j tokens per sequence: the mean is at (k - 1) / 2
        self._k = max(k, 0.0)
        self._slow = self.host.slowdown()
        self._tau = self._slow * self.cost.decode_step_s(b, self._context + b * max(0.0, k - 1) / 2)
        self._interval = self._k * self._tau
        return self._interval

    def _note_load(self, start: float, end: float) -> None:
        self.records.load_s += end - start
        self.records.load_intervals.append((start, end))
