"""The RL math: advantages, filters, policy losses, chunked log-probs, schedules. Pure torch, no Ray."""

from nous_ray.algo.advantages import dynamic_sampling_mask, group_advantages, group_advantages_with_overlong
from nous_ray.algo.logprobs import token_entropy, token_logprobs
from nous_ray.algo.losses import (
    DEFAULT_CLIP,
    DEFAULT_CLIP_RATIO_C,
    DEFAULT_LOG_RATIO_CLAMP,
    LOSSES,
    loss_normalizers,
    policy_loss,
)
from nous_ray.algo.pass_at_k import pass_at_k
from nous_ray.algo.rope import apply_yarn, yarn_rope_scaling
from nous_ray.algo.schedule import ContextSchedule

__all__ = [
    "ContextSchedule",
    "DEFAULT_CLIP",
    "DEFAULT_CLIP_RATIO_C",
    "DEFAULT_LOG_RATIO_CLAMP",
    "LOSSES",
    "apply_yarn",
    "dynamic_sampling_mask",
    "group_advantages",
    "group_advantages_with_overlong",
    "loss_normalizers",
    "pass_at_k",
    "policy_loss",
    "token_entropy",
    "token_logprobs",
    "yarn_rope_scaling",
]
