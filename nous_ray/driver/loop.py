"""The asynchronous driver loop: one process keeps rollout workers, verifiers and learners busy.

Three kinds of coroutines share one event loop:

- the *generation loop*: whenever the window below has room it hands out prompts, spread fairly over
  the rollout workers, one call per group with many in flight per worker (the engine batches them),
  and hands each group to the verifiers the moment its own samples are done;
- one *verification task* per group: judges it, scores it (advantages, overlong filtering, dynamic
  sampling) and puts useful groups into the :class:`BatchBuffer`;
- the *trainer*: waits until a batch of useful groups is ready, trains, publishes the new weights to
  the rollout workers (who load them between engine steps), logs, checkpoints, repeats.

What is counted: a *training step* trains one batch and publishes one new *policy version*
(``Driver.step`` is both: training steps done = the version the learners hold); it is
``learner.minibatches`` *optimizer steps* (what the learning-rate warm-up counts, ``train/optimizer_step``).
Staleness and ``trainer.max_off_policy_steps`` count policy versions.

Generation continues while the learners train; how far it may run ahead is bounded by the
staleness bound (``trainer.max_off_policy_steps``): at most ``max(1, bound)`` batches of groups are
outstanding (issued, in flight or buffered, not yet trained or dropped; ``trainer.max_outstanding_batches``
overrides it), and a group older than the bound when its batch forms is dropped and counted.

The worker pools are duck-typed (see :class:`Workers`), built by ``actors/`` and handed in: the
library never imports the actor layer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import uuid
from pathlib import Path

from nous_ray.algo import ContextSchedule
from nous_ray.config import Config
from nous_ray.data.problem import Problem
from nous_ray.driver.checkpoint import (
    ResumeError,
    checkpoint_dir,
    discard_after,
    find_resume_point,
    finish_checkpoint,
    latest_checkpoint,
    read_driver_state,
    start_checkpoint,
)
from nous_ray.driver.sampler import ProblemSampler
from nous_ray.driver.scoring import BatchBuffer, Counters, ScoredGroup, score_group
from nous_ray.driver.step_metrics import StepStats, StepTimes, Waits, progress_line, step_metrics
from nous_ray.driver.warm_start import CheckpointedRandom, run_warm_start, sampled_pass_rate
from nous_ray.driver.workers import Workers
from nous_ray.metrics import MetricsSink
from nous_ray.samples import GenerationRequest, Sample
from nous_ray.verdicts import Verdict, infra_error_record

log = logging.getLogger("nous_ray.driver")


class LearnerFailed(RuntimeError):
    """A learner call failed: the run cannot go on (see ``Driver._learner``)."""


class Driver:
    def __init__(self, cfg: Config, problems: list[Problem], prompt_ids: list[list[int]],
                 workers: Workers, run_dir: str | Path, sft_examples: list[Sample] | None = None,
                 progress=print, eval_set: tuple[list[Problem], list[list[int]]] | None = None):
        self.cfg = cfg
        self.problems = problems
        self.prompt_ids = prompt_ids
        self.w = workers
        self.run_dir = Path(run_dir)
        self.sft_examples = sft_examples or []
        self.eval_set = eval_set
        self.progress = progress
        t = cfg.trainer
        self.schedule = ContextSchedule.from_stages(cfg.algo.context_schedule)
        self.sampler = ProblemSampler(len(problems), seed=cfg.data.seed, shuffle=cfg.data.shuffle)
        self.counters = Counters()
        self.buffer = BatchBuffer(t.prompts_per_step, t.max_off_policy_steps, self.counters)
        self.step = 0  # training steps done == the learners' policy version (not optimizer steps)
        self.rng = CheckpointedRandom(t.seed)  # the warm start's draws of examples
        # Groups issued but not yet trained on or dropped. Generating further ahead than the
        # staleness bound only produces samples that go stale before their batch forms.
        ahead = t.max_outstanding_batches or max(1, t.max_off_policy_steps)
        self.max_outstanding = ahead * t.prompts_per_step
        self._next_group_id = 0
        self._outstanding: dict[int, int] = {}  # group id -> problem index, issued not yet accounted
        self._verifying = 0  # groups in verification
        self._changed = asyncio.Event()
        self._stop = False
        self._stopped = asyncio.Event()  # set with _stop: phases that can be abandoned wait on it
        self._phase = "start-up"  # what a stop interrupts: "warm start", "training", "evaluation"
        self._warm_start_done = False  # a warm start ran to its end in this process (worth a checkpoint)
        self._verify_tasks: set[asyncio.Task] = set()
        # Names the weights this process trains: periodic evaluation results are theirs alone.
        self.segment = uuid.uuid4().hex[:12]
        self._published = False  # whether any weights went out yet (a restarted worker needs them)
        self._stats = StepStats()
        self._waits = Waits()
        self.worker_restarts = 0
        self.resumed_from: Path | None = None
        self._sync_tasks: dict[int, asyncio.Task] = {}
        self._last_infra_error = ""
        n = self.w.rollout.size
        self._in_flight = [0] * n  # groups being generated, per worker
        self._served = [-1] * n  # the last group id each worker got (fairness among equals)
        self._incarnation = [0] * n  # bumped by each replacement: late failures of a dead worker are ignored
        self._replacing: set[int] = set()
        self._gen_tasks: set[asyncio.Future] = set()
        # Work the staleness bound left the workers (see _note_window), integrated over time.
        self._allowed_s, self._allowed_rate, self._window_t = 0.0, 0.0, 0.0

    @staticmethod
    def _now() -> float:
        """The event loop's clock: monotonic time, or simulated time on ``nous_ray.sim``'s virtual loop."""
        return asyncio.get_running_loop().time()

    # ---- generation -------------------------------------------------------------------------

    def _sampling(self) -> dict:
        s = self.cfg.rollout.sampling
        return {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k}

    def _take_prompts(self) -> list[tuple[int, int, int]]:
        """Fill the open slots of the window, fairly: each prompt goes to the ready worker with the fewest
        groups in flight (ties: the one served longest ago), at most ``rollout.max_prompts_per_worker``
        each. Returns ``(worker, group id, problem index)`` per prompt taken."""
        # Buffered groups count too: they wait for the learners just like those still in flight.
        room = self.max_outstanding - len(self._outstanding) - len(self.buffer)
        if room <= 0:
            return []
        cap = self.cfg.rollout.max_prompts_per_worker
        ready = [i for i in range(self.w.rollout.size) if self._worker_ready(i)]
        taken = []
        while room > 0:
            open_ = [i for i in ready if self._in_flight[i] < cap]
            if not open_:
                break
            i = min(open_, key=lambda w: (self._in_flight[w], self._served[w]))
            gid, self._next_group_id = self._next_group_id, self._next_group_id + 1
            idx = self.sampler.next()
            self._outstanding[gid] = idx
            self._in_flight[i] += 1
            self._served[i] = gid
            taken.append((i, gid, idx))
            room -= 1
        return taken

    def _worker_ready(self, i: int) -> bool:
        """Not being replaced, and holding the weights published last (a failed load is a failed worker)."""
        if i in self._replacing:
            return False
        sync = self._sync_tasks.get(i)
        if sync is None:
            return True
        if not sync.done():
            return False
        del self._sync_tasks[i]
        if not sync.cancelled() and sync.exception() is not None:
            self._worker_failed(i, self._incarnation[i], sync.exception(), 0)
            return False
        return True

    def _note_window(self) -> None:
        """Integrate how much work the staleness bound leaves each worker: the groups generating plus
        those that may still be issued, shared over the workers, at most one each."""
        now = self._now()
        self._allowed_s += (now - self._window_t) * self._allowed_rate
        self._window_t = now
        work = self.max_outstanding - self._verifying - len(self.buffer)
        self._allowed_rate = max(0.0, min(1.0, work / max(1, self.w.rollout.size)))

    async def _generation_loop(self) -> None:
        """Issue prompts whenever the window has room: one call per group, many in flight per worker
        (its engine batches them), so each group goes to the verifiers as soon as its own samples are
        done, not when the slowest sequence of a larger call is."""
        while not self._stop:
            self._note_window()
            for i, gid, idx in self._take_prompts():
                task = asyncio.ensure_future(self._generate_group(i, gid, idx))
                self._gen_tasks.add(task)
                task.add_done_callback(self._gen_tasks.discard)
            self._changed.clear()
            await self._wait_changed()

    async def _generate_group(self, i: int, gid: int, idx: int) -> None:
        issued_step, incarnation = self.step, self._incarnation[i]
        request = GenerationRequest(gid, self.problems[idx].id, self.prompt_ids[idx])
        t_call = self._now()
        try:
            samples = await self.w.rollout.generate(
                i, [request], self.cfg.rollout.group_size, self._sampling(), self.schedule(issued_step))
        except Exception as e:
            if self._stop:
                return
            del self._outstanding[gid]
            self.sampler.give_back([idx])
            self._worker_failed(i, incarnation, e, 1)
            return
        finally:
            self._in_flight[i] -= 1
            self._changed.set()  # a slot is free
        self._stats.generate_s += self._now() - t_call
        self._stats.generate_calls += 1
        for s in samples:
            s.issued_step = issued_step
        self.counters.generated += len(samples)
        self._verifying += 1
        asyncio.ensure_future(self._verify(gid, idx, samples))

    def _worker_failed(self, i: int, incarnation: int, e: BaseException, prompts: int) -> None:
        """Replace worker ``i`` once per death: its other calls fail too, and only give their prompts back."""
        if incarnation != self._incarnation[i] or i in self._replacing:
            return
        log.warning("rollout worker %d failed (%s: %s); replacing it, its prompts are re-issued",
                    i, type(e).__name__, e)
        self._replacing.add(i)
        self.worker_restarts += 1
        task = asyncio.ensure_future(self._replace(i))
        self._gen_tasks.add(task)
        task.add_done_callback(self._gen_tasks.discard)

    async def _replace(self, i: int) -> None:
        try:
            while not self._stop:
                try:
                    await self.w.rollout.replace(i)  # waits for capacity where the worker's bundle lives
                    break
                except Exception as e:
                    log.warning("replacing rollout worker %d failed (%s: %s); retrying", i, type(e).__name__, e)
                    await asyncio.sleep(5.0)
            self._incarnation[i] += 1
            if self._published and not self._stop:  # the new worker loads the current weights first
                self._sync_tasks[i] = self._watch(asyncio.ensure_future(self.w.sync.sync_one(i, self.step)))
        finally:
            self._replacing.discard(i)
            self._changed.set()

    def _watch(self, fut):
        """A worker that loaded its weights is ready for prompts. A failed load is seen by
        ``_worker_ready`` (or, once superseded by a newer publish, by the worker's next call)."""
        def done(f):
            if not f.cancelled():
                f.exception()  # retrieved here: a superseded failure is not an unhandled one
            self._changed.set()

        fut.add_done_callback(done)
        return fut

    # ---- verification -----------------------------------------------------------------------

    async def _verify(self, gid: int, idx: int, samples: list[Sample]) -> None:
        task = asyncio.current_task()
        self._verify_tasks.add(task)  # awaited or cancelled at the end of the run, never left behind
        task.add_done_callback(self._verify_tasks.discard)
        problem = self.problems[idx]
        verdicts = None
        t_call = self._now()
        for attempt in range(3):
            try:
                verdicts = await self.w.verifiers.verify_group(problem, [s.text for s in samples])
                break
            except Exception as e:  # Ray re-sends to a restarted actor; this is the last resort
                log.warning("verifier call for %s failed (attempt %d): %s", problem.id, attempt + 1, e)
                await asyncio.sleep(0.5 * (attempt + 1))
        self._stats.verify_s += self._now() - t_call
        self._stats.verify_calls += 1
        for j, s in enumerate(samples):
            v = verdicts[j] if verdicts else infra_error_record("verifier call failed")
            s.verdict, s.reward = v["verdict"], v["reward"]
            if s.reward is None:
                self._last_infra_error = v.get("detail") or s.verdict
            st = self._stats
            st.verdicts[s.verdict] = st.verdicts.get(s.verdict, 0) + 1
            if s.reward is not None:
                st.verified += 1
                st.reward_sum += s.reward
                st.accepted += s.verdict == Verdict.ACCEPTED
            st.response_tokens += len(s.response_ids)
            st.truncated += s.truncated
        group = score_group(samples, self.cfg.algo, self.counters)
        self._verifying -= 1
        self._outstanding.pop(gid, None)
        if group.useful:
            group.problem_index = idx  # re-issued if a checkpoint finds it buffered
            self.buffer.add(group)
        self._changed.set()

    # ---- training ---------------------------------------------------------------------------

    async def _wait_changed(self, timeout: float = 0.5) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _wait_for_batch(self) -> list[ScoredGroup] | None:
        """Block until a batch is ready; charge the wait to generation or verification. None once a
        stop is requested: the checkpoint must not wait for generation (``ray job stop`` kills after
        its grace period), and the prompts in flight are saved for re-issue.

        Dynamic sampling refills the batch from more groups, but not forever: a policy that passes
        all or none of its samples on every prompt would spin here, so after
        ``trainer.max_filtered_batches`` batches' worth of filtered groups without a batch this is
        an error that says so. Likewise a verifier that cannot judge (``trainer.max_infra_error_batches``
        batches' worth of samples dropped for infra errors).
        """
        need = self.cfg.trainer.prompts_per_step
        filtered_at_start = self.counters.filtered_groups
        infra_at_start = self.counters.dropped_infra
        last_report = self._now()
        while True:
            batch = self.buffer.pop_batch(self.step)
            if batch is not None:
                self._changed.set()  # room for more prompts
                return batch
            if self._stop:
                return None
            infra = self.counters.dropped_infra - infra_at_start
            infra_limit = self.cfg.trainer.max_infra_error_batches * need * self.cfg.rollout.group_size
            if infra_limit and infra >= infra_limit:
                raise RuntimeError(
                    f"step {self.step + 1}: the verifier failed on {infra} samples (infra errors: no verdict; last: "
                    f"{self._last_infra_error}) and only {len(self.buffer)}/{need} useful groups formed "
                    f"(trainer.max_infra_error_batches={self.cfg.trainer.max_infra_error_batches}). Check the "
                    f"verifier: for verifier.backend=modal the token in the job's runtime env and the deployed app.")
            filtered = self.counters.filtered_groups - filtered_at_start
            limit = self.cfg.trainer.max_filtered_batches * need
            if limit and filtered >= limit:
                raise RuntimeError(
                    f"step {self.step + 1}: dynamic sampling filtered {filtered} groups (all samples passed or "
                    f"all failed) and only {len(self.buffer)}/{need} useful groups formed; the policy gives no "
                    f"learning signal on this data (trainer.max_filtered_batches={self.cfg.trainer.max_filtered_batches})."
                    f" Use easier/harder problems, a longer warm start, or algo.dynamic_sampling=false.")
            if self._now() - last_report > 30:
                last_report = self._now()
                self.progress(f"  waiting for step {self.step + 1}: {len(self.buffer)}/{need} useful groups, "
                              f"{self._verifying} in verification, {filtered} filtered so far")
            t0 = self._now()
            waiting_on_verification = len(self.buffer) + self._verifying >= need
            self._changed.clear()
            await self._wait_changed(1.0)  # every change that matters sets the event; this is a backstop
            dt = self._now() - t0
            if waiting_on_verification:
                self._waits.verification_s += dt
            else:
                self._waits.generation_s += dt

    async def _publish(self, reset: bool = False) -> None:
        """Send the learner's weights to every rollout worker as version ``self.step``.

        Each worker loads them between engine steps (``rollout.weight_update=inflight``: its running
        requests go on under the new weights) or once its running requests finish (``drain``).
        ``reset``: this run's first sync; the workers may hold a higher version from an earlier run
        (a restarted job, or workers reused across runs), which this one replaces.
        """
        tasks = await self.w.sync.publish(self.step, reset)
        self._sync_tasks = {i: self._watch(t) for i, t in tasks.items()}
        self._published = True

    async def _train(self) -> None:
        t = self.cfg.trainer
        t_start = self._now()
        while self.step < t.steps and not self._stop:
            t_step = self._now()
            self._note_window()
            allowed_before = self._allowed_s
            filtered_before = self.counters.filtered_groups
            waits_before = Waits(self._waits.generation_s, self._waits.verification_s)
            batch = await self._wait_for_batch()
            if batch is None:
                break
            t_ready = self._now()
            samples = [s for g in batch for s in g.samples]
            stats, self._stats = self._stats, StepStats()
            trained_at = self.step  # the policy version the batch trains at (staleness counts from it)
            metrics = await self._learner("the train step", self.w.learner.train_step(
                samples, self.cfg.rollout.sampling.temperature, trained_at))
            t_trained = self._now()
            self.step += 1
            await self._learner("the weight publish", self._publish())
            t_end = self._now()
            self._note_window()
            checked = await self._check_sync(samples[0]) if self.cfg.weight_sync.verify_after_sync else {}
            evaluated = await self._maybe_evaluate()
            row = step_metrics(
                samples, trained_at, stats, self.counters,
                filtered_groups=self.counters.filtered_groups - filtered_before,
                waits=Waits(self._waits.generation_s - waits_before.generation_s,
                            self._waits.verification_s - waits_before.verification_s),
                waits_total_s=self._waits.total, allowed_s=self._allowed_s - allowed_before,
                times=StepTimes(t_start, t_step, t_ready, t_trained, t_end),
                max_response_tokens=self.schedule(self.step - 1), worker_restarts=self.worker_restarts,
                learner=metrics)
            row.update(checked)
            row.update(evaluated)
            self.sinks.log(self.step, row)
            self._save_samples(samples)
            self.progress(progress_line(self.step, t.steps, row))
            if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                await self.save_checkpoint()
        await self._save_last()

    async def _save_last(self) -> None:
        """The run ends saved: its last step whatever ``trainer.checkpoint_every`` (at ``trainer.steps``
        or at a stop), and at step 0 a finished warm start, so a re-run does not repeat it."""
        if self._checkpointed_at_current_step():
            return
        if self.step > 0 or self._warm_start_done:
            await self.save_checkpoint()
        elif self._stop:
            self.progress("stopped before the first training step: nothing to checkpoint; the next run starts "
                          "from the beginning")

    async def _unless_stopped(self, coro):
        """Await ``coro``, unless a stop is requested first: then it is cancelled (and awaited) and
        the answer is None."""
        if self._stopped.is_set():
            coro.close()
            return None
        task = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return None
        return task.result()

    async def _learner(self, what: str, call):
        """Await a learner call. A failure (a rank lost, e.g. with its node) stops the run: the learners'
        state is gone with the rank, so no new checkpoint can be written; the message names the one
        a restart resumes from."""
        try:
            return await call
        except Exception as e:
            last = latest_checkpoint(self.run_dir)
            then = (f"resumes from {last} (step {read_driver_state(last)['step']})" if last else
                    "starts from the beginning (no complete checkpoint yet)")
            raise LearnerFailed(
                f"the learner failed during {what} at step {self.step + 1} ({type(e).__name__}: {e}); the run "
                f"stops. Restart the same command once the cluster has its GPUs again: it {then}") from e

    async def _synced(self) -> None:
        """Wait until every rollout worker has loaded the weights published last."""
        for i in list(self._sync_tasks):
            await self._sync_tasks.pop(i)

    async def _check_sync(self, sample: Sample) -> dict:
        """``weight_sync.verify_after_sync``: every rollout worker must now score a response as the
        learner does. Some vLLM versions silently keep stale weights after a reload; this catches it."""
        await self._synced()
        (ref,) = await self.w.learner.compute_logprobs([sample], 1.0)
        worst = 0.0
        for i in range(self.w.rollout.size):
            got = await self.w.rollout.score(i, sample.prompt_ids, sample.response_ids)
            worst = max([worst] + [abs(a - b) for a, b in zip(got, ref)])
        if worst > self.cfg.weight_sync.max_logprob_diff:
            raise RuntimeError(
                f"weight sync check after step {self.step}: a rollout worker's log-probs differ from the "
                f"learner's by {worst:.3g} (> weight_sync.max_logprob_diff={self.cfg.weight_sync.max_logprob_diff}):"
                f" the engine did not load the new weights")
        return {"sync_logprob_diff_max": worst}

    async def _maybe_evaluate(self) -> dict:
        """Periodic evaluation (``eval.every_steps``) on the training pools, with the new weights."""
        every = self.cfg.eval.every_steps
        if not every or not self.eval_set or self.step % every:
            return {}
        from nous_ray.eval import evaluate, max_tokens_within, metrics_for_log
        from nous_ray.eval.records import RESULTS_FILE

        # Every worker must hold the weights just published, or the samples would mix policies;
        # the trainer publishes nothing more until the evaluation is done.
        await self._synced()
        problems, ids = self.eval_set
        t0 = self._now()
        out_dir = self.run_dir / "eval" / f"step_{self.step:06d}"
        if (out_dir / RESULTS_FILE).exists():
            # Only a run that was rolled back to an earlier checkpoint finds results here: they were
            # made by weights it no longer has. Results belong to the weights that made them.
            self.progress(f"eval at step {self.step}: {out_dir} holds results of the weights of an earlier run "
                          f"(rolled back since); evaluating these weights afresh")
        self._phase = "evaluation"
        summary = await self._unless_stopped(evaluate(
            self.cfg, problems, ids, self.w.rollout, self.w.verifiers, out_dir, step=self.step,
            progress=False, plot=False, say=lambda m: None, fresh=True, info={"weights": self.segment},
            max_tokens=max_tokens_within(self.cfg.rollout.max_model_len, ids, self.cfg.eval.max_tokens)))
        self._phase = "training"
        if summary is None:
            self.progress(f"eval at step {self.step}: abandoned at the stop")
            return {}
        out = metrics_for_log(summary)
        self.progress(f"eval at step {self.step}: pass@1 {out.get('eval/pass@1', float('nan')):.3f} "
                      f"on {len(problems)} problems ({self._now() - t0:.1f} s)")
        return out

    def _save_samples(self, samples: list[Sample]) -> None:
        n = self.cfg.trainer.save_samples
        if not n:
            return
        d = self.run_dir / "samples"
        d.mkdir(exist_ok=True)
        with open(d / f"step_{self.step:06d}.jsonl", "w") as f:
            for s in samples[:n]:
                f.write(json.dumps({"problem_id": s.problem_id, "version": s.version,
                                    "version_starts": s.version_starts, "verdict": s.verdict,
                                    "reward": s.reward, "advantage": s.advantage,
                                    "finish_reason": s.finish_reason, "text": s.text}) + "\n")

    # ---- supervised warm start --------------------------------------------------------------

    async def warm_start(self) -> None:
        """The supervised warm start (:mod:`nous_ray.driver.warm_start`), when ``init.sft_steps`` and
        examples are given."""
        if self.cfg.init.sft_steps <= 0 or not self.sft_examples:
            return
        self._phase = "warm start"
        await run_warm_start(self.cfg, self.sft_examples, self.w.learner, self.rng, pass_rate=self._pass_rate_now,
                             stopped=lambda: self._stop, progress=self.progress, log=self.sinks.log)
        self._warm_start_done = not self._stop

    async def _pass_rate_now(self) -> float:
        """Sampled pass rate of the current weights on every problem (one group each)."""
        await self._publish(reset=True)
        await self._synced()
        return await sampled_pass_rate(self.w.rollout, self.w.verifiers, self.problems, self.prompt_ids,
                                       self.cfg.rollout.group_size, self._sampling(), self.schedule(0))

    # ---- checkpoints ------------------------------------------------------------------------

    def _checkpointed_at_current_step(self) -> bool:
        last = latest_checkpoint(self.run_dir)
        return last is not None and last == checkpoint_dir(self.run_dir, self.step)

    async def save_checkpoint(self) -> Path:
        """Learner state (sharded), then driver state, then the COMPLETE marker, then pruning.

        Prompts issued but not yet trained on (in flight or buffered) are saved for re-issue, so a
        resume neither skips them nor trains on samples from before the stop.
        """
        path = start_checkpoint(self.run_dir, self.step)
        await self._learner("a checkpoint", self.w.learner.save_checkpoint(str(path / "learner")))
        finish_checkpoint(path, self.state_dict(), keep=self.cfg.trainer.keep_checkpoints)
        self.progress(f"checkpoint written: {path}")
        return path

    def state_dict(self) -> dict:
        """The driver's part of a checkpoint (``driver_state.json``): the step, the sampler's position
        with the prompts issued but not yet trained on (in flight or buffered) to re-issue, the
        counters, the warm start's random state and the worker restarts."""
        waiting = sorted(self._outstanding.values()) + self.buffer.problem_indices()
        return {
            "step": self.step,
            "sampler": self.sampler.state_dict(outstanding=waiting),
            "counters": self.counters.state_dict(),
            "rng": self.rng.state_dict(),
            "worker_restarts": self.worker_restarts,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (``worker_restarts`` may be missing: older checkpoints)."""
        self.step = state["step"]
        self.sampler.load_state_dict(state["sampler"])
        self.counters.load_state_dict(state["counters"])
        # Samples in flight at the checkpoint are gone; their prompts come back through the sampler.
        self.counters.dropped_resume += self.counters.generated - self.counters.accounted
        self.rng.load_state_dict(state["rng"])
        self.worker_restarts = state.get("worker_restarts", 0)

    async def maybe_resume(self) -> None:
        """Resume from ``trainer.resume`` (see :func:`find_resume_point`: broken checkpoints are skipped,
        each with a warning); checkpoints after the resume point are moved aside (:func:`discard_after`)."""
        point = find_resume_point(self.run_dir, self.cfg.trainer.resume)
        for skipped, why in point.skipped:
            self.progress(f"warning: skipping checkpoint {skipped}: {why}")
        path = point.path
        moved = discard_after(self.run_dir, read_driver_state(path)["step"] if path else -1)
        if moved:
            self.progress(f"moved {len(moved)} checkpoint(s) after the resume point to {moved[0].parent} "
                          f"(weights this run does not continue): {', '.join(p.name for p in moved)}")
        if path is None:
            return
        state = read_driver_state(path)
        try:
            await self.w.learner.load_checkpoint(str(path / "learner"))
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise ResumeError(f"resuming from {path}: the learners could not load {path / 'learner'}: {first}") from e
        self.load_state_dict(state)
        self.resumed_from = path
        self.progress(f"resumed from {path} at step {self.step}")
        if self.step >= self.cfg.trainer.steps:
            self.progress(f"nothing to train: this run is complete at step {self.step} (trainer.steps="
                          f"{self.cfg.trainer.steps}); raise trainer.steps to continue it, or start a new run "
                          f"with run.name=... or trainer.resume=never")

    # ---- the whole run ----------------------------------------------------------------------

    async def _drain_verification(self, timeout_s: float = 10.0) -> None:
        """Let the verifications in flight finish (bounded), then cancel the rest: the run returns
        with no verifier call outstanding, so tearing the verifier actors down fails none of them."""
        if not self._verify_tasks:
            return
        _, late = await asyncio.wait(set(self._verify_tasks), timeout=timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def request_stop(self, *_):
        """Ctrl-C, ``ray job stop`` (SIGINT, SIGTERM): honoured within one step of the phase running."""
        if not self._stop:
            self.progress({
                "warm start": "stop requested during the warm start: stopping after the warm-start step in flight "
                              "(nothing to checkpoint before the warm start ends; the next run starts it again)",
                "evaluation": f"stop requested during the evaluation at step {self.step}: abandoning it, writing a "
                              f"checkpoint",
            }.get(self._phase, "stop requested: finishing the step in flight and writing a checkpoint"))
        self._stop = True
        self._stopped.set()
        self._changed.set()

    async def run(self) -> dict:
        await self.maybe_resume()
        # Rows of steps this run does not continue (after its checkpoint; every row when it starts from
        # the beginning, e.g. after a stop during the warm start) are dropped, so none appears twice.
        self.sinks = MetricsSink(self.run_dir, resume_step=self.step if self.resumed_from else None)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            if self.step == 0 and self.resumed_from is None:
                await self.warm_start()
            self._phase = "training"
            if not self._stop:  # a stop during the warm start trains nothing: _train only saves what it can
                await self._publish(reset=True)  # the rollout workers start from the learner's (resumed) weights
            self._window_t = self._now()
            gen = asyncio.ensure_future(self._generation_loop())
            try:
                await self._train()
            finally:
                self._stop = True
                self._changed.set()
                gens = [gen, *self._gen_tasks]
                for g in gens:
                    g.cancel()
                await asyncio.gather(*gens, return_exceptions=True)
        finally:
            await self._drain_verification()
            self.sinks.close()
        return {"step": self.step, "counters": self.counters.to_dict(), "worker_restarts": self.worker_restarts,
                "pending": self.counters.generated - self.counters.accounted,
                "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                "learner_wait_generation_s": self._waits.generation_s,
                "learner_wait_verification_s": self._waits.verification_s,
                "rollout_allowed_s": self._allowed_s}
