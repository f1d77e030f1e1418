"""The supervised warm start (``init.sft_*``): SFT steps on reference solutions before RL, until the
sampled pass rate reaches ``init.sft_target_pass_rate``, so that RL starts from a policy whose groups
carry a learning signal.

The SFT optimizer (``init.sft_lr``, its own warm-up) is replaced by a fresh RL one at the end,
whatever happens. A stop is honoured between steps (a pass-rate check counts as one).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable

from nous_ray.config import Config, OptimConfig
from nous_ray.data.problem import Problem
from nous_ray.driver.workers import Learner, RolloutPool, VerifierPool
from nous_ray.samples import GenerationRequest, Sample
from nous_ray.verdicts import Verdict


class CheckpointedRandom(random.Random):
    """A ``random.Random`` whose state is a JSON list: the Mersenne Twister's words (``getstate()[1]``).

    The cached Gaussian of ``getstate()[2]`` is left out (nothing here draws Gaussians), so the list
    is all ``driver_state.json`` holds under ``"rng"``.
    """

    def state_dict(self) -> list[int]:
        return list(self.getstate()[1])

    def load_state_dict(self, words: list[int]) -> None:
        self.setstate((3, tuple(words), None))  # 3: the state format of Python 3's random


async def sampled_pass_rate(rollout: RolloutPool, verifiers: VerifierPool, problems: list[Problem],
                            prompt_ids: list[list[int]], group_size: int, sampling: dict, max_tokens: int) -> float:
    """The fraction of verified samples accepted, one group of ``group_size`` per problem, all sampled by
    rollout worker 0; infra errors are left out."""
    requests = [GenerationRequest(k, p.id, prompt_ids[k]) for k, p in enumerate(problems)]
    samples = await rollout.generate(0, requests, group_size, sampling, max_tokens)
    by_group: dict[int, list[Sample]] = {}
    for s in samples:
        by_group.setdefault(s.group_id, []).append(s)
    results = await asyncio.gather(*(verifiers.verify_group(problems[g], [s.text for s in ss])
                                     for g, ss in by_group.items()))
    flat = [v for r in results for v in r if v["reward"] is not None]
    return sum(v["verdict"] == Verdict.ACCEPTED for v in flat) / max(1, len(flat))


async def run_warm_start(cfg: Config, examples: list[Sample], learner: Learner, rng: random.Random, *,
                         pass_rate: Callable[[], Awaitable[float]], stopped: Callable[[], bool],
                         progress: Callable[[str], Any], log: Callable[[int, dict], Any]) -> None:
    """Up to ``init.sft_steps`` SFT steps of ``init.sft_batch_size`` examples drawn with ``rng``.

    ``pass_rate``: the current weights' sampled pass rate (publishes them first), asked every
    ``init.sft_check_every`` steps and at the last; ``stopped``: a stop was requested; ``log(step,
    row)``: the metrics sink (warm-start rows go in at step 0).
    """
    ic = cfg.init
    await learner.configure_optimizer(
        OptimConfig(lr=ic.sft_lr, warmup_steps=ic.sft_warmup_steps, grad_clip=cfg.learner.optim.grad_clip))
    try:
        for k in range(1, ic.sft_steps + 1):
            if stopped():  # honoured between warm-start steps; the pass-rate check counts as one
                progress(f"warm start stopped after {k - 1}/{ic.sft_steps} steps")
                return
            batch = rng.sample(examples, min(ic.sft_batch_size, len(examples)))
            m = await learner.sft_step(batch)
            if stopped():
                continue
            if k % ic.sft_check_every == 0 or k == ic.sft_steps:
                rate = await pass_rate()
                progress(f"warm start {k:3d}/{ic.sft_steps} | sft loss {m.get('loss', float('nan')):.3f}"
                         f" | sampled pass rate {rate:.3f}")
                log(0, {"warmup/step": k, "warmup/loss": m.get("loss"), "warmup/pass_rate": rate})
                if rate >= ic.sft_target_pass_rate:
                    break
    finally:  # RL starts with a fresh optimizer at its own learning rate
        await learner.configure_optimizer(cfg.learner.optim)
