"""Engine settings for long-context evaluation: YaRN through vLLM's ``hf_overrides``, and max_model_len.

Without YaRN the rollout engine's context is ``max_model_len = prompt budget + max_tokens`` (the
longest prompt of the problems evaluated, plus the response limit), so every response may reach
``max_tokens``.

With YaRN the context is the rope table, exactly ``original * factor`` positions (the recipe: factor
2.0 over 40,960 = 81,920 positions in all, prompt included), and each response gets what its prompt
leaves: ``min(max_tokens, max_model_len - its prompt)`` (:meth:`EngineSettings.response_limit`). The
factor is never stretched to fit a longer context: that would evaluate another model than the recipe's.

YaRN (the recipe: factor 2.0 over 40,960 -> 81,920 positions) reaches vLLM as two overrides of the
model's config:

- the rope dict: ``rope_parameters`` (transformers >= 5; vLLM sets a dict-valued override *after*
  normalizing the config, replacing the whole dict, so it must carry the model's ``rope_theta``) or
  ``rope_scaling`` (transformers 4, theta stays a top-level attribute);
- ``max_position_embeddings``: vLLM 0.32 takes a YaRN model's ``max_position_embeddings`` as
  already scaled when it checks ``max_model_len``, and builds a cos/sin table of
  ``original * factor`` positions.

Positions past the table would be out of range, so ``max_model_len`` never exceeds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from nous_ray.algo.rope import yarn_rope_scaling
from nous_ray.config import EvalConfig


@dataclass(frozen=True)
class ModelRope:
    """A model's own rope settings, as the installed transformers exposes them."""

    key: str  # "rope_parameters" (transformers >= 5) or "rope_scaling" (transformers 4)
    params: Optional[dict]  # the model's rope dict under that key (None: plain RoPE)
    rope_theta: Optional[float]
    max_position_embeddings: Optional[int]


@dataclass
class EngineSettings:
    """What the rollout pool's engines need for an evaluation."""

    max_model_len: int
    max_tokens: int  # the response limit before the context bounds it
    hf_overrides: Optional[dict] = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"max_model_len": self.max_model_len, "hf_overrides": self.hf_overrides}

    def response_limit(self, prompt_len: int) -> int:
        """Tokens a response to a prompt of ``prompt_len`` tokens may have: the context's rest, at most
        ``max_tokens``."""
        return min(self.max_tokens, self.max_model_len - prompt_len)


def read_model_rope(model_path: str) -> ModelRope:
    """The rope settings of a Hugging Face folder or (cached) hub model."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    if hasattr(config, "rope_parameters"):
        params = dict(getattr(config, "rope_parameters", None) or {}) or None
        theta = (params or {}).get("rope_theta", getattr(config, "rope_theta", None))
        key = "rope_parameters"
    else:
        params = dict(getattr(config, "rope_scaling", None) or {}) or None
        theta = getattr(config, "rope_theta", None)
        key = "rope_scaling"
    return ModelRope(key, params, None if theta is None else float(theta),
                     getattr(config, "max_position_embeddings", None))


def yarn_hf_overrides(rope: ModelRope, original_max_positions: int, target_max_positions: int) -> dict:
    """``hf_overrides`` turning on YaRN from ``original`` to ``target`` positions for this model.

    Returns ``{rope.key: <the model's rope dict with the YaRN keys set>, "max_position_embeddings":
    target}``; under ``rope_parameters`` the dict keeps the model's ``rope_theta``.
    """
    if rope.key == "rope_parameters":
        if rope.rope_theta is None:
            raise ValueError("yarn: the model config has no rope_theta; a rope_parameters override "
                             "without it would silently fall back to theta 10,000")
        params = dict(rope.params or {})
        params.update(yarn_rope_scaling(original_max_positions, target_max_positions, rope.rope_theta))
    elif rope.key == "rope_scaling":
        params = dict(rope.params or {})
        params.update(yarn_rope_scaling(original_max_positions, target_max_positions))
        params.pop("type", None)  # old spelling of rope_type; two would disagree
    else:
        raise ValueError(f"yarn: unknown rope key {rope.key!r}")
    return {rope.key: params, "max_position_embeddings": target_max_positions}


def long_context_settings(ev: EvalConfig, prompt_budget: int, rope: Optional[ModelRope],
                          max_tokens: Optional[int] = None) -> EngineSettings:
    """Engine settings for evaluating ``ev`` with prompts of at most ``prompt_budget`` tokens.

    ``rope``: the model's rope settings (:func:`read_model_rope`); needed only with YaRN on
    (``ev.yarn_original_max_positions`` set). ``max_tokens`` overrides ``ev.max_tokens``.
    With YaRN, ``max_model_len`` is at most the rope table's ``original * factor`` positions and a
    prompt that leaves no room for a response in it is an error.
    """
    max_tokens = ev.max_tokens if max_tokens is None else max_tokens
    for what, v in (("prompt_budget", prompt_budget), ("eval.max_tokens", max_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"long_context_settings: {what} must be a positive int, got {v!r}")
    original = ev.yarn_original_max_positions
    if original is None:
        return EngineSettings(prompt_budget + max_tokens, max_tokens)
    if rope is None:
        raise ValueError("long_context_settings: YaRN is on (eval.yarn_original_max_positions) but "
                         "the model's rope settings were not given")
    if not (ev.yarn_factor > 1.0):
        raise ValueError(f"eval.yarn_factor must be > 1 with YaRN on, got {ev.yarn_factor}")
    table = original * ev.yarn_factor
    if table != math.floor(table):
        raise ValueError(f"eval.yarn_factor {ev.yarn_factor} x eval.yarn_original_max_positions {original} = {table} "
                         f"is not a whole number of positions")
    table = int(table)
    if prompt_budget >= table:
        raise ValueError(f"eval: the longest prompt has {prompt_budget} tokens, no room for a response within "
                         f"the {table} positions of YaRN factor {ev.yarn_factor:g} over {original}")
    max_model_len = min(table, prompt_budget + max_tokens)
    notes = []
    if max_model_len - prompt_budget < max_tokens:
        notes.append(f"responses get at most {table} positions minus their prompt (YaRN factor {ev.yarn_factor:g} "
                     f"over {original}): {max_model_len - prompt_budget} tokens after the longest prompt "
                     f"({prompt_budget}), up to max_tokens {max_tokens} after shorter ones")
    return EngineSettings(max_model_len, max_tokens, yarn_hf_overrides(rope, original, table), notes)


def max_tokens_within(max_model_len: int, prompt_ids: list[list[int]], max_tokens: int) -> int:
    """The response limit for evaluating on an engine already running with ``max_model_len``
    (periodic evaluation on the training engines): ``max_tokens``, capped so the longest prompt
    plus its response fits. A prompt that leaves no room is an error naming it."""
    longest = max(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    room = max_model_len - len(prompt_ids[longest])
    if room < 1:
        raise ValueError(f"eval: prompt {longest} has {len(prompt_ids[longest])} tokens, no room for a response "
                         f"in the engines' max_model_len {max_model_len}")
    return min(max_tokens, room)
