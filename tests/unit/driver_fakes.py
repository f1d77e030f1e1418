"""Small stand-ins for the driver's worker pools, so driver tests run in seconds (tests only).

- :class:`CannedRollout`: each sample is one of the problem's reference solutions or a wrong program,
  drawn by a seeded rng; it carries the policy version the pool was last given.
- :class:`SandboxVerifiers`: the real local sandbox backend, in this process (no Ray actor).
- :class:`TinyLearner`: a torch module with an AdamW; its checkpoints are real DCP checkpoints written by
  ``nous_ray.train.checkpoint``, so resume reads and verifies what a learner writes.
- :class:`DirectSync`: publishing sets the rollout's version at once.

Hooks (``on_generate``, ``on_sft_step``) let a test act at an exact point (request a stop, corrupt a file).
"""

from __future__ import annotations

import asyncio
import random

import torch

from nous_ray.config import Config
from nous_ray.driver.workers import Workers
from nous_ray.samples import Sample

WRONG = "```python\nprint('wrong')\n```"


class CannedRollout:
    size = 1

    def __init__(self, problems, seed: int = 0, pass_prob: float = 0.5, on_generate=None):
        self.by_id = {p.id: p for p in problems}
        self.rng = random.Random(seed)
        self.pass_prob = pass_prob
        self.on_generate = on_generate  # async (pool, requests, sampling) -> None, before answering
        self.version = 0
        self.calls: list[dict] = []

    async def generate(self, i, requests, n, sampling, max_tokens):
        self.calls.append({"requests": len(requests), "n": n, "temperature": sampling["temperature"]})
        if self.on_generate is not None:
            await self.on_generate(self, requests, sampling)
        out = []
        for q in requests:
            p = self.by_id[q.problem_id]
            for _ in range(n):
                ok = p.solutions and self.rng.random() < self.pass_prob
                text = f"```python\n{p.solutions[0]}```" if ok else WRONG
                out.append(Sample(problem_id=p.id, group_id=q.group_id, prompt_ids=list(q.prompt_ids),
                                  response_ids=[5, 6, 7], logprobs=[-1.0] * 3, finish_reason="stop",
                                  version=self.version, text=text))
        return out

    def replace(self, i):
        pass

    async def score(self, i, prompt_ids, response_ids):
        return [-1.0] * len(response_ids)


class SandboxVerifiers:
    def __init__(self, cfg: Config, hold=None):
        from nous_ray.verify import make_backend

        self.backend = make_backend(cfg.verifier)
        self.hold = hold  # async (problem) -> None, between judging a group and answering
        self.calls = 0

    async def verify_group(self, problem, completions):
        self.calls += 1
        verdicts = [r.to_dict() for r in await self.backend.averify([(problem, c) for c in completions])]
        if self.hold is not None:
            await self.hold(problem)
        return verdicts

    def close(self):
        self.backend.close()


class TinyLearner:
    def __init__(self, on_sft_step=None):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 2)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.on_sft_step = on_sft_step  # async (learner) -> None, after each warm-start step
        self.sft_steps = self.train_steps = 0
        self.loaded_from: list[str] = []

    def _step(self) -> float:
        loss = self.model(torch.ones(2, 4)).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # as the real trainer: DCP then saves the moments
        return loss.item()

    async def train_step(self, samples, temperature, policy_version):
        self.train_steps += 1
        return {"loss": self._step(), "tokens": sum(len(s.response_ids) for s in samples)}

    async def sft_step(self, samples):
        self.sft_steps += 1
        m = {"loss": self._step()}
        if self.on_sft_step is not None:
            await self.on_sft_step(self)
        return m

    async def configure_optimizer(self, optim):
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=optim.lr)

    async def compute_logprobs(self, samples, temperature):
        return [[-1.0] * len(s.response_ids) for s in samples]

    async def save_checkpoint(self, path):
        from nous_ray.train.checkpoint import save_checkpoint

        return str(save_checkpoint(path, self.model, self.optimizer, {"train_steps": self.train_steps}))

    async def load_checkpoint(self, path):
        from nous_ray.train.checkpoint import load_checkpoint

        self.loaded_from.append(path)
        return load_checkpoint(path, self.model, self.optimizer)


class DirectSync:
    def __init__(self, rollout: CannedRollout):
        self.rollout = rollout
        self.versions: list[int] = []

    async def publish(self, version, reset=False):
        self.versions.append(version)
        self.rollout.version = version
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return {0: done}

    async def sync_one(self, i, version):
        self.rollout.version = version


def fake_workers(cfg: Config, problems, rollout: CannedRollout | None = None, learner: TinyLearner | None = None,
                 verifiers: SandboxVerifiers | None = None) -> Workers:
    rollout = rollout or CannedRollout(problems)
    return Workers(rollout=rollout, verifiers=verifiers or SandboxVerifiers(cfg), learner=learner or TinyLearner(),
                   sync=DirectSync(rollout))
