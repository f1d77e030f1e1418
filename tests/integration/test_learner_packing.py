"""Packed rows score every sequence exactly as it scores alone, with each attention implementation.

The learner packs several sequences into one row with position ids restarting at 0. With ``sdpa`` it
relies on transformers turning that into a block-diagonal causal mask; with ``varlen`` (the default,
nous_ray/train/attention.py) on the sequence boundaries the micro-batch passes. If either stops
isolating sequences, sequences of a row attend to each other and these tests fail.
"""

import random

import pytest
import torch

from nous_ray.config import ModelConfig
from nous_ray.models.tiny import build_tiny_model_dir
from nous_ray.train.microbatch import build_micro_batch
from nous_ray.train.model import load_policy


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model_dir(ModelConfig(), tmp_path_factory.mktemp("tiny") / "model"))


def _batch(seed, n=5):
    rng = random.Random(seed)
    prompts = [[rng.randrange(400) for _ in range(rng.randint(1, 9))] for _ in range(n)]
    responses = [[rng.randrange(400) for _ in range(rng.randint(1, 12))] for _ in range(n)]
    return prompts, responses


def _reference(lm, prompts, responses):
    """Each sequence alone through the full model and its full-vocabulary logits."""
    out = []
    for p, r in zip(prompts, responses):
        logits = lm(torch.tensor([p + r])).logits[0, len(p) - 1 : len(p) - 1 + len(r)].double()
        out.append(logits.log_softmax(-1).gather(1, torch.tensor(r)[:, None]).squeeze(1))
    return torch.cat(out)


IMPLEMENTATIONS = pytest.mark.parametrize("attn", ["varlen", "sdpa"])


def _score(policy, mb, **kw):
    return policy(mb.input_ids, mb.position_ids, mb.pred_pos, mb.targets, cu_seqlens=mb.cu_seqlens,
                  max_seqlen=mb.max_seqlen, **kw)


@IMPLEMENTATIONS
def test_packed_logprobs_and_grads_match_unpacked(model_dir, attn):
    torch.manual_seed(0)
    policy = load_policy(model_dir, torch.float32, chunk_size=7, attn_implementation=attn)
    assert policy.config._attn_implementation == attn
    lm = policy._lm[0]
    prompts, responses = _batch(0)
    mb = build_micro_batch(prompts, responses)
    lp, ent = _score(policy, mb, with_entropy=True)
    ref = _reference(lm, prompts, responses)
    assert lp.shape == ref.shape
    assert torch.allclose(lp.double(), ref, atol=2e-5), (lp.double() - ref).abs().max()
    assert ent.shape == lp.shape and bool((ent > 0).all())

    w = torch.randn(lp.shape[0], dtype=torch.float64)
    (lp.double() * w).sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in policy.named_parameters()}
    policy.zero_grad()
    (_reference(lm, prompts, responses) * w).sum().backward()
    for n, p in policy.named_parameters():
        assert torch.allclose(packed_grads[n], p.grad, atol=1e-4, rtol=1e-3), n


@IMPLEMENTATIONS
def test_no_cross_sequence_attention(model_dir, attn):
    # Changing the first sequence's tokens must not move the second sequence's log-probs.
    policy = load_policy(model_dir, torch.float32, chunk_size=64, attn_implementation=attn)
    a = build_micro_batch([[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]])
    b = build_micro_batch([[50, 60, 70], [8, 9]], [[100, 110], [12, 13, 14]])
    with torch.no_grad():
        la, _ = _score(policy, a)
        lb, _ = _score(policy, b)
    second = a.seq_idx == 1
    assert torch.allclose(la[second], lb[second], atol=1e-6)
    assert not torch.allclose(la[~second], lb[~second], atol=1e-3)
