"""An in-process vLLM engine driven from an asyncio loop: concurrent ``generate`` calls share one
running batch (continuous batching), and weight updates happen between engine steps.

The engine steps on the event loop's own thread (a step is milliseconds to tens of milliseconds), so
nothing else touches the engine concurrently and no lock is needed; the loop yields between steps to
take new calls. A weight load runs in a worker thread (a transfer may block: fetching the next bucket,
a NCCL receive) while the engine neither steps nor admits, so the loop stays free.

Two ways to take new weights (``rollout.weight_update``):

- ``inflight`` (PipelineRL's way): at the next step boundary stepping stops (vLLM's scheduler paused,
  batches already queued on the device finished), the weights load in place, the prefix cache forgets
  every block of the old weights, and stepping resumes: running requests keep their KV cache and go
  on under the new weights. vLLM labels each output token with the weight version set when it was
  sampled (``LLMEngine.set_weight_version``; ``CompletionOutput.weight_versions``), so every sample
  records which version sampled each of its tokens, and its behaviour log-probs are those of the
  distribution each token was actually drawn from (the new weights reading the KV the old ones wrote,
  for tokens after the update).
- ``drain``: an update stops admitting requests, waits for the running ones to finish, loads, then
  admits again: every sample comes from exactly one version, and the engine idles while its longest
  response finishes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Callable, Sequence

from nous_ray.rollout.outputs import scored_logprobs, to_samples
from nous_ray.rollout.sampling import make_sampling_params, make_scoring_params
from nous_ray.rollout.weights import pause_scheduling, reset_prefix_cache, resume_scheduling
from nous_ray.samples import Sample


def check_prompts(prompts, max_model_len: int, where: str = "generate") -> list[list[int]]:
    """Token-id prompts as lists of ints; a clear error names the bad prompt."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(f"{where}: prompts must be a list of token-id lists, got {type(prompts).__name__}")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) == 0:
            raise ValueError(f"{where}: prompt {i} must be a non-empty list of token ids")
        ids = [int(t) for t in p]
        if len(ids) >= max_model_len:
            raise ValueError(f"{where}: prompt {i} has {len(ids)} tokens; max_model_len is {max_model_len}")
        out.append(ids)
    return out


_SUPERSEDED = object()


def _run_and_sync(fn: Callable[[Any], Any], engine) -> Any:
    out = fn(engine)
    import torch

    # fn ran on this thread's CUDA stream; the engine steps on the event loop's.
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out


class StreamingEngine:
    """Wraps an in-process ``LLMEngine``; all methods must run on one asyncio event loop."""

    def __init__(self, engine, version: int = 0, *, weight_update: str):
        if weight_update not in ("inflight", "drain"):
            raise ValueError(f"rollout.weight_update: unknown {weight_update!r} (inflight | drain)")
        self.engine = engine
        self.version = version
        self.weight_update = weight_update
        engine.set_weight_version(str(version))  # vLLM labels every output token with it
        self.steps = 0  # engine steps run
        self.step_s = 0.0  # time spent in them (the engine busy)
        self.load_s = 0.0  # time spent loading weights
        self.max_model_len = engine.model_config.max_model_len
        self._ids = itertools.count()
        self._pending: dict[str, asyncio.Future] = {}
        self._stepper: asyncio.Task | None = None
        self._admitting = asyncio.Event()
        self._admitting.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stepping = asyncio.Event()  # cleared while an in-flight update loads
        self._stepping.set()
        self._update_lock = asyncio.Lock()
        self._tickets = itertools.count()
        self._newest = -1
        self._queued = 0

    # ---- requests -------------------------------------------------------------------------
    async def _submit(self, prompts: list[list[int]], params) -> tuple[int, list]:
        """Admit and run the requests; returns the policy version they ran under and their outputs."""
        from vllm.inputs import TokensPrompt

        while not self._admitting.is_set():  # set again, an update may have closed it before we resumed
            await self._admitting.wait()
        # Admitted. Draining, no update loads weights until these requests finish, so this is the
        # version that generates them (read before the wait, it could be the one the update replaces);
        # in flight, each token's own version comes with the output and this is only a fallback.
        version = self.version
        loop = asyncio.get_running_loop()
        futs, added = [], []
        try:
            for ids in prompts:
                # Outputs and aborts use this external id (vLLM suffixes its own internal one).
                rid = f"r{next(self._ids)}"
                self.engine.add_request(rid, TokensPrompt(prompt_token_ids=ids), params)
                added.append(rid)
                fut = loop.create_future()
                self._pending[rid] = fut
                futs.append(fut)
        except Exception:
            if added:
                self.engine.abort_request(added)
            for rid in added:
                self._pending.pop(rid, None)
            raise
        finally:
            self._wake()
        return version, await asyncio.gather(*futs)

    def _wake(self) -> None:
        if self._pending:
            self._idle.clear()
            if self._stepper is None or self._stepper.done():
                self._stepper = asyncio.get_running_loop().create_task(self._step_loop())
        else:
            self._idle.set()

    def _deliver(self, outputs) -> None:
        for out in outputs:
            if out.finished:
                fut = self._pending.pop(out.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(out)

    async def _step_loop(self) -> None:
        try:
            while self._pending:
                if not self._stepping.is_set():
                    await self._stepping.wait()
                    continue
                t0 = time.perf_counter()
                self._deliver(self.engine.step())
                self.step_s += time.perf_counter() - t0
                self.steps += 1
                await asyncio.sleep(0)  # let new calls (and updates) in between steps
        except BaseException as e:  # fail every waiter rather than hang them
            pending, self._pending = self._pending, {}
            if pending:
                self.engine.abort_request(list(pending))
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
            if not isinstance(e, Exception):
                raise
        finally:
            self._idle.set()

    async def generate(
        self,
        prompts: list[list[int]],
        n: int = 1,
        sampling: dict | None = None,
        *,
        problem_ids: list[str] | None = None,
        group_ids: list[int] | None = None,
        issued_step: int = 0,
    ) -> list[list[Sample]]:
        """``n`` samples per token-id prompt, grouped per prompt (outer list follows ``prompts``).

        Each sample carries the behaviour log-prob of every response token (of the processed
        distribution the token was drawn from) and the policy version that produced it.
        """
        prompts = check_prompts(prompts, self.max_model_len)
        for name, vals in (("problem_ids", problem_ids), ("group_ids", group_ids)):
            if vals is not None and len(vals) != len(prompts):
                raise ValueError(f"generate: {len(vals)} {name} for {len(prompts)} prompts")
        params = make_sampling_params(sampling, n)
        version, outs = await self._submit(prompts, params)
        groups = [
            to_samples(
                o,
                version=version,
                problem_id=problem_ids[i] if problem_ids else "",
                group_id=group_ids[i] if group_ids else i,
                issued_step=issued_step,
            )
            for i, o in enumerate(outs)
        ]
        for i, g in enumerate(groups):
            if len(g) != n:
                raise RuntimeError(f"generate: prompt {i} got {len(g)} completions, asked for {n}")
        return groups

    async def score(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """Log-probs (temperature 1, current weights) of ``response_ids`` following ``prompt_ids``."""
        (seq,) = check_prompts([list(prompt_ids) + list(response_ids)], self.max_model_len, "score")
        _, (out,) = await self._submit([seq], make_scoring_params())
        return scored_logprobs(out, len(prompt_ids))

    # ---- weights --------------------------------------------------------------------------
    async def _exclusive(self, fn: Callable[[Any], Any], superseded: Callable[[], bool] = lambda: False,
                         drain: bool = True, commit: Callable[[Any], None] = lambda out: None):
        """Run ``fn(engine)`` in a thread while the engine admits nothing, then ``commit(its result)``
        before anything else runs on the engine; calls queue in arrival order. ``drain``: once no
        request runs; else between two steps, running requests paused (see the module doc). Returns
        ``_SUPERSEDED`` without running ``fn`` if ``superseded()`` turns true before it starts."""
        self._queued += 1
        try:
            async with self._update_lock:
                if superseded():
                    return _SUPERSEDED
                self._admitting.clear()
                if drain:
                    await self._idle.wait()
                    if superseded():
                        return _SUPERSEDED
                    out = await asyncio.to_thread(_run_and_sync, fn, self.engine)
                    commit(out)
                    return out
                self._stepping.clear()
                try:
                    for outputs in pause_scheduling(self.engine):
                        self._deliver(outputs)
                    out = await asyncio.to_thread(_run_and_sync, fn, self.engine)
                    commit(out)
                    return out
                finally:
                    resume_scheduling(self.engine)
                    self._stepping.set()
        finally:
            self._queued -= 1
            if not self._queued:  # a call queued behind this one keeps admission closed
                self._admitting.set()

    async def run_idle(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(engine)`` in a thread while the engine runs nothing (e.g. joining a weight group)."""
        return await self._exclusive(fn)

    async def update_weights(self, version: int, load: Callable[[Any], int], *, reset: bool = False,
                             droppable: bool = True) -> dict:
        """Load new weights as ``version``: updates queue in arrival order; at its turn an update
        stops admitting requests and, per ``weight_update``, waits for the running ones to finish
        (``drain``) or for the step in progress (``inflight``), runs ``load(engine)`` (in a thread,
        since it may block on transfers; it returns the tensor count), makes sure no request reuses
        KV of the old weights (:func:`reset_prefix_cache`) and records ``version`` (and labels the
        tokens sampled from now on with it). Versions only move forward, except with ``reset`` (a new
        run's first sync, whose versions start again at its resumed step).

        A ``droppable`` update that a later one supersedes before it starts loading is dropped,
        ``load`` never called: loading a version already out of date would only delay the newer
        one. An update whose bytes are pushed to it (a NCCL broadcast the sender is already in) is
        not droppable.

        Returns ``{"loaded": bool, "tensors": int, "version": the version now loaded}``.
        """
        if not isinstance(version, int) or (version < self.version and not reset):
            raise ValueError(f"update_weights: version {version!r} is older than the loaded {self.version}")
        ticket = next(self._tickets)
        self._newest = ticket

        def load_and_reset(engine) -> int:
            t0 = time.perf_counter()
            count = int(load(engine))
            reset_prefix_cache(engine)  # cached KV blocks were computed with the old weights
            self.load_s += time.perf_counter() - t0
            return count

        def commit(_) -> None:  # before any step runs or any request is admitted
            self.version = version
            self.engine.set_weight_version(str(version))

        count = await self._exclusive(load_and_reset, lambda: droppable and ticket != self._newest,
                                      drain=self.weight_update == "drain", commit=commit)
        if count is _SUPERSEDED:
            return {"loaded": False, "tensors": 0, "version": self.version}
        return {"loaded": True, "tensors": count, "version": version}

    @property
    def num_running(self) -> int:
        return len(self._pending)

    def stats(self) -> dict:
        """Engine steps run, seconds spent in them and in weight loads, since the engine started."""
        return {"steps": self.steps, "step_s": self.step_s, "load_s": self.load_s, "version": self.version}
