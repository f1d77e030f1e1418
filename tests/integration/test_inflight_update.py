"""In-flight weight updates on a real vLLM engine (CPU, float32): a response that spans an update.

The engine is driven step by step on one event loop in a Ray task (as the rollout actor drives it).
References are transformers' Qwen3 built from the same folder, with the weights of each version:

- tokens sampled before the update: the old weights' log-probs (full forward);
- tokens sampled after it: the new weights reading the KV cache the old weights wrote for the tokens
  before the update (transformers' ``past_key_values`` from the old model, continued by the new one),
  which is what an in-flight update means: running requests keep their KV cache;
- a request admitted after the update, whose prompt the old weights had cached (full KV blocks): the
  new weights' full forward, so the prefix cache gave it nothing of the old weights.

A label off by one token, or a step that ran the old weights after the label changed, moves a token to
the other reference, which differs from it by far more than the tolerance (checked).
"""

import pytest
import torch

from nous_ray.config import ModelConfig, RolloutConfig
from nous_ray.models.tiny import build_tiny_model_dir
from nous_ray.weight_sync.buckets import pack_buckets

pytestmark = pytest.mark.slow

ATOL = 1e-4
MAX_TOKENS = 40


def perturb_(model, seed, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def full_logprobs(model, prompt, response):
    ids = torch.tensor([list(prompt) + list(response)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].double()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None])[:, 0]


def kept_kv_logprobs(old, new, prompt, response, k):
    """Log-probs of ``response[k:]`` sampled by ``new`` over the KV ``old`` wrote for ``prompt`` and
    ``response[:k-1]`` (token k-1 was sampled by ``old`` and is fed to the first step after the update)."""
    ids = list(prompt) + list(response)
    cut = len(prompt) + k - 1
    with torch.no_grad():
        past = old(torch.tensor([ids[:cut]]), use_cache=True).past_key_values
        logits = new(torch.tensor([ids[cut:-1]]), past_key_values=past, use_cache=True).logits[0].double()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(response[k:])[:, None])[:, 0]


@pytest.fixture(scope="module")
def spanning(ray_cluster, tmp_path_factory):
    """Run the scenario once: (old model, new model, prompt, samples of the spanning call, steps
    before the update, samples of the call admitted after it, engine block size)."""
    import ray
    from transformers import AutoModelForCausalLM

    model_dir = build_tiny_model_dir(ModelConfig(tiny_layers=4), tmp_path_factory.mktemp("inflight") / "model")
    cfg = RolloutConfig(max_model_len=512, kv_cache_memory_bytes=64 * 2**20, weight_update="inflight")
    old = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    new = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    perturb_(new, seed=7)
    buckets = pack_buckets(new.state_dict().items(), 64 * 1024)
    prompt = [(7 * i + 3) % 300 + 5 for i in range(150)]  # spans full KV blocks: cacheable

    def scenario():
        import asyncio

        from nous_ray.rollout.engine import build_engine
        from nous_ray.rollout.stream import StreamingEngine
        from nous_ray.rollout.weights import load_from_store

        async def main():
            engine = build_engine(str(model_dir), cfg, dtype="float32")
            se = StreamingEngine(engine, version=0, weight_update="inflight")
            call = asyncio.ensure_future(se.generate([prompt], 2, {"max_tokens": MAX_TOKENS, "ignore_eos": True}))
            while se.steps < 12:
                await asyncio.sleep(0)
            steps_before = se.steps
            out = await se.update_weights(1, lambda e: load_from_store(e, buckets))
            assert se.steps == steps_before  # nothing stepped during the update
            after = await se.generate([prompt], 1, {"max_tokens": 6, "ignore_eos": True})
            (group,) = await call
            return group, steps_before, out, after[0][0], engine.vllm_config.cache_config.block_size

        return asyncio.run(main())

    group, steps_before, out, after, block_size = ray.get(ray.remote(num_cpus=0.5)(scenario).remote())
    assert out["loaded"] and out["version"] == 1
    return old, new, prompt, group, steps_before, after, block_size


def test_a_response_spanning_an_update_records_both_versions_at_the_right_token(spanning):
    _, _, _, group, steps_before, _, _ = spanning
    # The first step prefills and samples token 0: `steps_before` tokens came from version 0.
    for s in group:
        assert len(s.response_ids) == len(s.logprobs) == MAX_TOKENS
        assert s.version_starts == [(0, 0), (1, steps_before)]
        assert s.version == 0 and s.newest_version == 1 and s.spans_versions
        assert s.token_versions() == [0] * steps_before + [1] * (MAX_TOKENS - steps_before)


def test_each_segments_behaviour_logprobs_are_its_versions(spanning):
    old, new, prompt, group, k, _, _ = spanning
    for s in group:
        got = torch.tensor(s.logprobs, dtype=torch.float64)
        before = full_logprobs(old, prompt, s.response_ids)
        kept = kept_kv_logprobs(old, new, prompt, s.response_ids, k)
        assert torch.allclose(got[:k], before[:k], atol=ATOL), (got[:k] - before[:k]).abs().max()
        assert torch.allclose(got[k:], kept, atol=ATOL), (got[k:] - kept).abs().max()
        # The two versions tell tokens apart: a boundary one token off would fail above.
        assert (before[k:] - kept).abs()[0] > 1e-2 and (before[k:] - kept).abs().max() > 0.1
        # Keeping the KV matters: the new weights' full forward is yet another distribution.
        assert (full_logprobs(new, prompt, s.response_ids)[k:] - kept).abs().max() > 1e-3


def test_a_request_after_the_update_reuses_no_kv_of_the_old_weights(spanning):
    old, new, prompt, _, _, after, block_size = spanning
    assert len(prompt) >= block_size  # the old weights' prompt blocks were cacheable
    assert after.version == 1 and not after.spans_versions
    got = torch.tensor(after.logprobs, dtype=torch.float64)
    want = full_logprobs(new, prompt, after.response_ids)
    assert torch.allclose(got, want, atol=ATOL), (got - want).abs().max()
