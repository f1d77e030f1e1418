"""What the stand-in policy writes: response lengths, which responses pass, and stand-in problems.

Outcomes are drawn per sample from :class:`~nous_ray.config.SimConfig`'s distributions and written
into the sample's text (``pass`` / ``fail``), which is all the stand-in verifier reads: the driver
passes texts between the two exactly as it does for real programs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from nous_ray.config import SimConfig
from nous_ray.data.problem import Problem

PASS, FAIL, NO_CODE = "pass", "fail", "none"


class ConstantSeq(Sequence):
    """``n`` copies of ``value`` in O(1) memory: the token ids and log-probs of a simulated response
    (tens of thousands of tokens each) have a length, which is all the driver and the stand-ins read."""

    __slots__ = ("value", "n")

    def __init__(self, value, n: int):
        self.value, self.n = value, int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ConstantSeq(self.value, len(range(*i.indices(self.n))))
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.value

    def __iter__(self):
        return (self.value for _ in range(self.n))

    def __eq__(self, other):
        return isinstance(other, ConstantSeq) and (self.value, self.n) == (other.value, other.n)

    def __repr__(self) -> str:
        return f"ConstantSeq({self.value!r}, {self.n})"


class Workload:
    """The simulated policy's behaviour: deterministic per ``seed`` and problem id."""

    def __init__(self, sim: SimConfig):
        self.sim = sim
        self._pass: dict[str, float] = {}

    def pass_rate(self, problem_id: str) -> float:
        """The problem's pass probability ~ Beta(pass_alpha, pass_beta), the same in every process."""
        p = self._pass.get(problem_id)
        if p is None:
            p = random.Random(f"{self.sim.seed}:pass:{problem_id}").betavariate(self.sim.pass_alpha,
                                                                                 self.sim.pass_beta)
            self._pass[problem_id] = p
        return p

    def response_length(self, rng: random.Random, max_tokens: int) -> tuple[int, bool]:
        """(tokens, truncated): log-normal around ``response_len_median``, cut at ``max_tokens``."""
        n = max(1, int(round(rng.lognormvariate(math.log(self.sim.response_len_median), self.sim.response_len_sigma))))
        return (max_tokens, True) if n >= max_tokens else (n, False)

    def outcome(self, rng: random.Random, problem_id: str, truncated: bool) -> str:
        """A truncated response holds no finished program (no code to run)."""
        if truncated:
            return NO_CODE
        return PASS if rng.random() < self.pass_rate(problem_id) else FAIL


def synthetic_problems(sim: SimConfig, n: int | None = None) -> tuple[list[Problem], list[Sequence[int]]]:
    """``n`` (default ``sim.num_problems``) stand-in problems and their prompts of ``sim.prompt_tokens``."""
    n = sim.num_problems if n is None else n
    problems = [Problem(id=f"sim-{k:06d}", source="sim", prompt="", tests=[]) for k in range(n)]
    return problems, [ConstantSeq(0, sim.prompt_tokens) for _ in range(n)]
