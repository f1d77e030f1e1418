"""The policy as the learner trains it: a Hugging Face causal LM, FSDP2-sharded, scoring tokens.

:class:`PolicyModule` owns the LM's ``model`` (embeddings, decoder layers, final norm) and
``lm_head`` under their Hugging Face names, so its state dict keys are exactly those of
``model.safetensors``. Its forward returns log-probs of chosen tokens computed chunk by chunk from
the final hidden states (:func:`nous_ray.algo.token_logprobs`); the [T, V] logits are never built.
The head weight is read *inside* this module's forward, where FSDP2 has unsharded the root's
parameters (embeddings, norm, head), so the chunked function sees a plain full tensor and its
gradient flows back into FSDP's reduce-scatter.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from nous_ray.algo import token_logprobs
from nous_ray.train.attention import VARLEN, register

__all__ = ["PolicyModule", "build_policy", "load_policy", "load_weights_from_rank0", "shard_policy"]


class PolicyModule(nn.Module):
    """Wraps a ``*ForCausalLM`` (Qwen3 and alike: ``.model`` backbone, ``.lm_head``)."""

    def __init__(self, lm: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = lm.model
        self.lm_head = lm.lm_head
        self.config = lm.config
        self.chunk_size = chunk_size
        # Kept outside the module tree (a plain attribute of a list) so its parameters are not
        # registered twice; used only for gradient-checkpointing switches.
        self._lm = [lm]

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        pred_pos: Tensor,
        targets: Tensor,
        temperature: float = 1.0,
        with_entropy: bool = False,
        cu_seqlens: Optional[Tensor] = None,
        max_seqlen: Optional[int] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """Log-probs (and entropies) of ``targets`` predicted at ``pred_pos`` of a packed row.

        Args:
            input_ids, position_ids: [1, T]; position ids restart at 0 at each packed sequence.
            pred_pos: [N] row positions to score; targets: [N] the tokens that follow them.
            cu_seqlens: [B+1] starts of the packed sequences, max_seqlen the longest: handed to
                variable-length attention kernels (``varlen``, ``flash_attention_2``); ``sdpa``
                finds the boundaries from the position resets instead.

        Returns:
            ``(logprobs [N] float32, entropy [N] float32 or None)``; entropy is computed without grad.
        """
        # use_cache=False matters: with a cache transformers skips the packed-sequence mask and
        # lets sequences of the row attend to each other.
        varlen = {}
        if cu_seqlens is not None:
            varlen = dict(cu_seq_lens_q=cu_seqlens, cu_seq_lens_k=cu_seqlens, max_length_q=max_seqlen,
                          max_length_k=max_seqlen)
        out = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=False, **varlen)
        h = out.last_hidden_state[0].index_select(0, pred_pos)
        w = self.lm_head.weight
        ent = None
        if with_entropy:
            lp, ent = token_logprobs(h, w, targets, chunk_size=self.chunk_size, temperature=temperature,
                                     with_entropy=True)
            ent = ent.to(torch.float32, copy=True)
        else:
            lp = token_logprobs(h, w, targets, chunk_size=self.chunk_size, temperature=temperature)
        # A fresh tensor, not a view: FSDP2 hooks backward onto the root's outputs, which an
        # in-place op on a view would bypass.
        return lp.to(torch.float32, copy=True), ent

    def enable_activation_checkpointing(self) -> None:
        self._lm[0].gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @property
    def tied(self) -> bool:
        return bool(getattr(self.config, "tie_word_embeddings", False))


def build_policy(
    config,
    dtype: torch.dtype,
    chunk_size: int,
    attn_implementation: str = VARLEN,
    activation_checkpointing: bool = False,
) -> PolicyModule:
    """A :class:`PolicyModule` of ``config`` (a transformers config) on the meta device: structure,
    no memory. Shard it (:func:`shard_policy`), then :func:`load_weights_from_rank0`."""
    from transformers import AutoModelForCausalLM

    if attn_implementation == VARLEN:
        register()
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    for attr in ("model", "lm_head"):
        if not hasattr(lm, attr):
            raise ValueError(f"build_policy: {type(lm).__name__} has no .{attr}; expected a *ForCausalLM")
    lm.config.use_cache = False
    policy = PolicyModule(lm, chunk_size=chunk_size)
    if activation_checkpointing:
        policy.enable_activation_checkpointing()
    policy.train()
    return policy


def load_weights_from_rank0(policy: nn.Module, path: str, device: torch.device, read_dtype: torch.dtype) -> None:
    """Materialize a sharded meta-device policy on ``device`` and fill it from the Hugging Face
    folder ``path``, read once: rank 0 loads the checkpoint (in ``read_dtype``, its own dtype) and
    ``set_model_state_dict(..., broadcast_from_rank0=True)`` broadcasts it tensor by tensor, each rank
    keeping its shard (cast to the parameter's dtype); no other rank ever holds more than one full
    tensor. Buffers (rotary frequencies, computed at construction, not in the checkpoint) are rank
    0's, sent along. All ranks must call."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    policy.to_empty(device=device)
    full: dict = {}
    buffers: list = [None]
    if not dist.is_initialized() or dist.get_rank() == 0:
        from transformers import AutoModelForCausalLM

        lm = AutoModelForCausalLM.from_pretrained(path, dtype=read_dtype)
        full = lm.state_dict()
        buffers = [{name: b.detach().cpu() for name, b in lm.named_buffers()}]
        del lm
    if dist.is_initialized():
        set_model_state_dict(policy, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        dist.broadcast_object_list(buffers, src=0)
    else:  # one process, no sharding
        policy.load_state_dict(full, strict=True)
    del full
    with torch.no_grad():
        for name, value in buffers[0].items():
            policy.get_buffer(name).copy_(value)


def load_policy(path: str, dtype: torch.dtype, chunk_size: int, attn_implementation: str = "sdpa",
                activation_checkpointing: bool = False) -> PolicyModule:
    """A whole, unsharded :class:`PolicyModule` of the Hugging Face folder ``path`` on CPU (one
    process, e.g. for tests)."""
    from transformers import AutoConfig

    policy = build_policy(AutoConfig.from_pretrained(path), dtype, chunk_size, attn_implementation,
                          activation_checkpointing)
    load_weights_from_rank0(policy, path, torch.device("cpu"), dtype)
    return policy


def shard_policy(policy: PolicyModule, mesh, mixed_precision: bool, reshard_after_forward: bool = True) -> PolicyModule:
    """FSDP2: one unit per decoder layer, then the root (embeddings, final norm, head).

    Tied embeddings share one parameter between ``embed_tokens`` and ``lm_head``; both live in the
    root unit, which FSDP2 requires of shared parameters. With ``mixed_precision`` (GPU) the
    sharded master weights stay in their loaded dtype (float32), compute runs in bfloat16 and
    gradients are reduced in float32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kw = {"mesh": mesh}
    if mixed_precision:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in policy.model.layers:
        fully_shard(layer, reshard_after_forward=reshard_after_forward, **kw)
    # The root is needed again right after forward (backward starts at the head): keep it gathered.
    fully_shard(policy, reshard_after_forward=False, **kw)
    return policy
