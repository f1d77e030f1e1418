"""What the driver drives: the worker pools, as Protocols.

``actors/`` implements these on Ray actors (:class:`actors.pools.RolloutPool`,
:class:`actors.pools.VerifierPool`, :class:`actors.learner.Learner`,
:class:`actors.weight_sync.WeightSync`), ``nous_ray.sim`` with stand-ins; the library never imports
the actor layer. Every method is a coroutine.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from nous_ray.config import OptimConfig
from nous_ray.data.problem import Problem
from nous_ray.samples import GenerationRequest, Sample
from nous_ray.verdicts import VerdictRecord


class RolloutPool(Protocol):
    size: int

    async def generate(self, i: int, requests: list[GenerationRequest], n: int, sampling: dict,
                       max_tokens: int) -> list[Sample]: ...  # n samples per request, flattened
    async def replace(self, i: int) -> None: ...  # a fresh worker in i's place; done once it is ready
    async def score(self, i: int, prompt_ids: list[int], response_ids: list[int]) -> list[float]: ...


class VerifierPool(Protocol):
    async def verify_group(self, problem: Problem, completions: list[str]) -> list[VerdictRecord]: ...


class Learner(Protocol):
    """The learner ranks as one: every call runs on all of them and answers rank 0's result."""

    async def train_step(self, samples: list[Sample], temperature: float,
                         policy_version: int) -> dict[str, Any]: ...  # PolicyTrainer.train_step's metrics
    async def sft_step(self, samples: list[Sample]) -> dict[str, Any]: ...
    async def configure_optimizer(self, optim: OptimConfig) -> None: ...
    async def compute_logprobs(self, samples: list[Sample], temperature: float) -> list[list[float]]: ...
    async def save_checkpoint(self, path: str) -> str: ...
    async def load_checkpoint(self, path: str) -> dict: ...


class WeightSync(Protocol):
    # Per worker, a future done once that worker has loaded ``version``.
    async def publish(self, version: int, reset: bool = False) -> dict[int, asyncio.Future]: ...
    async def sync_one(self, i: int, version: int) -> None: ...


@dataclass
class Workers:
    rollout: RolloutPool
    verifiers: VerifierPool
    learner: Learner
    sync: WeightSync
