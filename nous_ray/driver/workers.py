"""What the driver drives: the worker pools, duck-typed.

``actors/pools.py`` implements these on Ray actors; the library never imports the actor layer.
Every method returns an awaitable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from nous_ray.config import OptimConfig
from nous_ray.data.problem import Problem
from nous_ray.samples import Sample


class RolloutPool(Protocol):
    size: int

    def generate(self, i: int, requests: list[dict], n: int, sampling: dict, max_tokens: int) -> Any: ...
    def replace(self, i: int) -> Any: ...  # a fresh worker in i's place; done once it is ready
    def score(self, i: int, prompt_ids: list[int], response_ids: list[int]) -> Any: ...


class VerifierPool(Protocol):
    def verify_group(self, problem: Problem, completions: list[str]) -> Any: ...


class LearnerGroup(Protocol):
    def train_step(self, samples: list[Sample], temperature: float, policy_version: int) -> Any: ...
    def sft_step(self, samples: list[Sample]) -> Any: ...
    def configure_optimizer(self, optim: OptimConfig) -> Any: ...
    def compute_logprobs(self, samples: list[Sample], temperature: float) -> Any: ...
    def save_checkpoint(self, path: str) -> Any: ...
    def load_checkpoint(self, path: str) -> Any: ...


class WeightSync(Protocol):
    def publish(self, version: int, reset: bool = False) -> Any: ...  # -> {worker: awaitable}
    def sync_one(self, i: int, version: int) -> Any: ...


@dataclass
class Workers:
    rollout: RolloutPool
    verifiers: VerifierPool
    learner: LearnerGroup
    sync: WeightSync
