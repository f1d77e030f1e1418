"""Client of the deployed Modal verifier (``python launch/deploy_modal.py --config FILE``).

One remote call per unique program: at most ``max_in_flight`` calls at once, call creation paced by a
token bucket (``modal_max_creates_per_s``), a timeout per call and ``modal_retries`` retries. Every
transport failure (unreachable, timeout, a malformed answer) ends as ``infra_error``: no reward, never
-1. The transport is injectable: ``async transport(problem_dict, code_or_none) -> result dict``.

Because a failing transport only drops samples, a job without credentials would wait forever for its
first batch: :meth:`ModalBackend.acheck` calls the deployed function once at start-up on a known
program and raises :class:`ModalUnavailable` saying how to provide the token or deploy the app.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Sequence

from nous_ray.data.problem import Problem, TestCase
from nous_ray.verify.backend import Item, VerifierBackend, dedupe, fan_out
from nous_ray.verify.result import Verdict, VerifyResult

Transport = Callable[[dict, "str | None"], Awaitable[dict]]

# A program the deployed judge must accept: the start-up check.
CANARY_PROBLEM = Problem(id="nous-ray/modal-check", source="nous-ray", prompt="Print twice the number read.",
                         tests=[TestCase("21\n", "42\n")])
CANARY_CODE = "print(2 * int(input()))\n"
TOKEN_HELP = (
    "every verifier actor needs a Modal token: pass it in the job's runtime env, "
    "ray job submit --runtime-env-json '{\"env_vars\": {\"MODAL_TOKEN_ID\": \"ak-...\", "
    "\"MODAL_TOKEN_SECRET\": \"as-...\"}}' ... (from `modal token new` or the Modal dashboard; "
    "or a ~/.modal.toml on every node)")
DEPLOY_HELP = "deploy the judge first: python launch/deploy_modal.py --config <the run's config>"


class ModalUnavailable(RuntimeError):
    """The deployed verifier cannot be called from here; the message says how to fix it."""


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float = 1.0, clock=time.monotonic, sleep=asyncio.sleep):
        self.rate, self.burst, self.clock, self.sleep = float(rate), max(1.0, float(burst)), clock, sleep
        self.tokens = self.burst
        self.t = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            while True:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
                self.t = now
                if self.tokens >= 1.0 - 1e-9:  # float rounding must not spin
                    self.tokens = max(0.0, self.tokens - 1.0)
                    return
                await self.sleep((1.0 - self.tokens) / self.rate)


def modal_transport(app_name: str, function_name: str) -> Transport:
    """The real transport: the deployed function, called asynchronously."""
    import modal

    fn = modal.Function.from_name(app_name, function_name)

    async def call(problem: dict, code: str | None) -> dict:
        return await fn.remote.aio(problem, code)

    return call


def result_from_dict(d: dict, problem_id: str) -> VerifyResult:
    """Validate what came back over the wire; anything malformed is the transport's fault."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a dict, got {type(d).__name__}")
    verdict = Verdict(d["verdict"])
    return VerifyResult(problem_id, verdict, int(d.get("tests_run", 0)), float(d.get("cpu_s", 0.0)),
                        str(d.get("detail", "")))


class ModalBackend(VerifierBackend):
    def __init__(self, cfg, transport: Transport | None = None):
        self.cfg = cfg
        self._transport = transport
        self._sem: asyncio.Semaphore | None = None
        self._bucket: TokenBucket | None = None
        self._loop = None
        self.calls = 0  # remote calls made, retries included (for tests and metrics)

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # asyncio primitives belong to one loop
            self._loop = loop
            self._sem = asyncio.Semaphore(max(1, int(self.cfg.max_in_flight)))
            burst = max(1.0, float(self.cfg.modal_max_creates_per_s))
            self._bucket = TokenBucket(self.cfg.modal_max_creates_per_s, burst)
        if self._transport is None:
            self._transport = modal_transport(self.cfg.modal_app, self.cfg.modal_function)

    async def _one(self, problem: Problem, code: str | None) -> VerifyResult:
        if code is None:
            return VerifyResult(problem.id, Verdict.NO_CODE)
        payload = problem.to_dict()
        last = ""
        attempts = 1 + max(0, int(self.cfg.modal_retries))
        for attempt in range(attempts):
            async with self._sem:
                await self._bucket.acquire()
                self.calls += 1
                try:
                    d = await asyncio.wait_for(self._transport(payload, code), self.cfg.modal_call_timeout_s)
                    return result_from_dict(d, problem.id)
                except asyncio.TimeoutError:
                    last = f"timeout after {self.cfg.modal_call_timeout_s}s"
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    last = f"{type(e).__name__}: {e}"
            if attempt + 1 < attempts:
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        return VerifyResult(problem.id, Verdict.INFRA_ERROR, detail=f"modal: {last} ({attempts} attempts)")

    async def averify(self, items: Sequence[Item]) -> list[VerifyResult]:
        self._bind_loop()
        jobs, where = dedupe(items)
        results = await asyncio.gather(*(self._one(p, c) for p, c in jobs))
        return fan_out(results, where)

    def verify(self, items: Sequence[Item]) -> list[VerifyResult]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.averify(items))
        raise RuntimeError("ModalBackend.verify called inside an event loop: use await averify()")

    async def acheck(self) -> None:
        """Call the deployed function once on :data:`CANARY_CODE`; raise :class:`ModalUnavailable`
        unless it comes back ``accepted`` (no retries: a start-up check must answer fast)."""
        where = f"Modal function {self.cfg.modal_app}/{self.cfg.modal_function}"
        try:
            self._bind_loop()
            d = await asyncio.wait_for(self._transport(CANARY_PROBLEM.to_dict(), CANARY_CODE),
                                       self.cfg.modal_call_timeout_s)
            got = result_from_dict(d, CANARY_PROBLEM.id)
        except asyncio.TimeoutError:
            raise ModalUnavailable(f"{where}: no answer to the start-up check within verifier.modal_call_timeout_s="
                                   f"{self.cfg.modal_call_timeout_s}s") from None
        except Exception as e:
            kind = type(e).__name__
            fix = TOKEN_HELP if kind in ("AuthError", "PermissionDeniedError") else \
                DEPLOY_HELP if kind == "NotFoundError" else f"{TOKEN_HELP}; {DEPLOY_HELP}"
            raise ModalUnavailable(f"{where} cannot be called ({kind}: {str(e).splitlines()[0] if str(e) else ''}): "
                                   f"{fix}") from None
        if got.verdict is not Verdict.ACCEPTED:
            raise ModalUnavailable(f"{where} judged a correct program {got.verdict.value} ({got.detail}): the "
                                   f"deployed judge is broken or out of date; {DEPLOY_HELP}")

    def check(self) -> None:
        asyncio.run(self.acheck())
