"""Verifier backends behind one interface: ``local`` (fork-server pool here) and ``modal``.

``verify(items)`` and ``await averify(items)`` take ``[(Problem, completion), ...]`` and return one
:class:`VerifyResult` per item, in order. Identical programs for the same problem (same problem id,
same extracted program text) are judged once per call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import os
import queue
import threading
import time
from typing import Sequence

from nous_ray.config import VerifierConfig
from nous_ray.data.problem import Problem
from nous_ray.verify.extract import extract_code
from nous_ray.verify.judge import JudgeSettings, judge_program
from nous_ray.verify.result import Verdict, VerifyResult
from nous_ray.verify.sandbox import InfraError, SandboxWorker, check_sandbox

Item = tuple[Problem, str]


def dedupe(items: Sequence[Item]) -> tuple[list[tuple[Problem, str | None]], list[int]]:
    """Unique (problem, extracted program) jobs and, for each item, the index of its job."""
    jobs: list[tuple[Problem, str | None]] = []
    index: dict[tuple[str, str | None], int] = {}
    where = []
    for problem, completion in items:
        code = extract_code(completion)
        key = (problem.id, code)
        if key not in index:
            index[key] = len(jobs)
            jobs.append((problem, code))
        where.append(index[key])
    return jobs, where


def fan_out(results: Sequence[VerifyResult], where: Sequence[int]) -> list[VerifyResult]:
    return [dataclasses.replace(results[j]) for j in where]


class VerifierBackend:
    """The interface every backend implements."""

    def verify(self, items: Sequence[Item]) -> list[VerifyResult]:
        raise NotImplementedError

    async def averify(self, items: Sequence[Item]) -> list[VerifyResult]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalBackend(VerifierBackend):
    """A pool of fork-servers, one thread each, sized to the cores (``cfg.workers``, 0 = all).

    Refuses to start (SandboxUnavailable, naming the cause and the fix) where programs cannot be
    isolated as ``cfg.isolation`` says.
    """

    def __init__(self, cfg=None, workers: int | None = None):
        self.settings = JudgeSettings.from_config(cfg) if cfg is not None else JudgeSettings()
        defaults = VerifierConfig()
        self.isolation = getattr(cfg, "isolation", defaults.isolation)
        self.sandbox_uid = getattr(cfg, "sandbox_uid", defaults.sandbox_uid)
        check_sandbox(self.isolation, self.sandbox_uid)
        n = workers if workers else (getattr(cfg, "workers", 0) or os.cpu_count() or 1)
        self.n_workers = max(1, int(n))
        self.delay_s = float(getattr(cfg, "debug_delay_s", 0.0) or 0.0)
        self._jobs: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def _ensure_started(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("LocalBackend is closed")
            while len(self._threads) < self.n_workers:
                t = threading.Thread(target=self._serve, name=f"verifier-{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)

    def _serve(self) -> None:
        worker = SandboxWorker(self.isolation, self.sandbox_uid)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                (problem, code), fut = job
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    res = judge_program(worker, problem, code, self.settings)
                except InfraError as e:
                    res = VerifyResult(problem.id, Verdict.INFRA_ERROR, detail=str(e))
                except Exception as e:  # a bug of ours is not the program's fault
                    res = VerifyResult(problem.id, Verdict.INFRA_ERROR, detail=f"{type(e).__name__}: {e}")
                fut.set_result(res)
        finally:
            worker.close()

    def submit_job(self, problem: Problem, code: str | None) -> cf.Future:
        self._ensure_started()
        fut: cf.Future = cf.Future()
        self._jobs.put(((problem, code), fut))
        return fut

    def _submit(self, items: Sequence[Item]) -> tuple[list[cf.Future], list[int]]:
        jobs, where = dedupe(items)
        return [self.submit_job(p, c) for p, c in jobs], where

    def verify(self, items: Sequence[Item]) -> list[VerifyResult]:
        futs, where = self._submit(items)
        return fan_out([f.result() for f in futs], where)

    async def averify(self, items: Sequence[Item]) -> list[VerifyResult]:
        futs, where = self._submit(items)
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futs))
        return fan_out(results, where)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)
        for t in self._threads:
            t.join()


def make_backend(cfg, **kwargs) -> VerifierBackend:
    """The backend ``cfg.backend`` names (a VerifierConfig)."""
    if cfg.backend == "local":
        return LocalBackend(cfg, **kwargs)
    if cfg.backend == "modal":
        from nous_ray.verify.modal_client import ModalBackend

        return ModalBackend(cfg, **kwargs)
    raise ValueError(f"verifier.backend: unknown backend {cfg.backend!r} (local | modal)")
