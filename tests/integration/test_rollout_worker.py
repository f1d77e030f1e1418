"""The rollout worker on a real local Ray cluster with a real vLLM engine (CPU, float32).

Reference: transformers' Qwen3 built from the same folder. After a weight sync through
pack_buckets -> ray.put -> update_weights, the engine's log-probs of a fixed response must equal the
reference's (tied and untied embeddings); the behaviour log-probs of sampled tokens must be those of
the processed sampling distribution (temperature, top-k).
"""


import pytest
import torch

from nous_ray.config import ModelConfig, RolloutConfig
from nous_ray.models.tiny import build_tiny_model_dir
from nous_ray.weight_sync.buckets import pack_buckets

pytestmark = pytest.mark.slow

ATOL = 1e-4
PROMPTS = [[5, 17, 42, 99, 7], [3, 200, 11]]


@pytest.fixture(scope="module", params=["tied", "untied"])
def setup(request, ray_cluster, tmp_path_factory):
    """(worker handle, reference model) — one engine per embedding kind for the whole module."""
    import ray
    from transformers import AutoModelForCausalLM

    from actors.rollout import RolloutWorker, rollout_actor_options

    tied = request.param == "tied"
    model_dir = build_tiny_model_dir(
        ModelConfig(tie_word_embeddings=tied, tiny_layers=4), tmp_path_factory.mktemp(request.param) / "model"
    )
    # Draining engines: the update tests below are about drain's semantics (in flight:
    # tests/integration/test_inflight_update.py).
    cfg = RolloutConfig(max_model_len=512, kv_cache_memory_bytes=64 * 2**20, weight_update="drain")
    worker = RolloutWorker.options(**rollout_actor_options(cfg)).remote(str(model_dir), cfg, dtype="float32")
    assert ray.get(worker.ready.remote()) == 0
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert ref.config.tie_word_embeddings == tied
    yield worker, ref, tied
    ray.kill(worker)


def ref_logprobs(model, prompt, response, temperature=1.0, top_k=0):
    """Reference log-probs of ``response`` after ``prompt`` under the processed distribution."""
    ids = torch.tensor([list(prompt) + list(response)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].double() / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None])[:, 0]


def perturb_(model, seed, scale=0.05):
    """A fake training step: every weight moves."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def put_weights(model, tied, bucket_bytes=64 * 1024):
    """The learner side of a sync: state dict -> buckets -> object store. Returns (refs, the number
    of tensors the worker should load, the buckets' total bytes)."""
    import ray

    sd = model.state_dict()
    # transformers lists a tied head beside the embedding it shares; the worker skips it.
    shared = sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
    assert shared == tied
    buckets = pack_buckets(sd.items(), bucket_bytes)
    assert len(buckets) > 1  # the test exercises several buckets per call
    return [ray.put(b) for b in buckets], len(sd) - tied, sum(b.nbytes for b in buckets)


def sync(worker, model, version, tied, bucket_bytes=64 * 1024):
    """One object-store sync: (tensors expected, the worker's summary of the update)."""
    import ray

    refs, n_tensors, _ = put_weights(model, tied, bucket_bytes)
    return n_tensors, ray.get(worker.update_weights.remote(version, refs))


def test_generate_returns_consistent_records(setup):
    import ray

    worker, ref, _ = setup
    version = ray.get(worker.version.remote())
    groups = ray.get(worker.generate.remote(
        PROMPTS, 3, {"temperature": 1.0, "max_tokens": 6, "ignore_eos": True},
        problem_ids=["a", "b"], group_ids=[10, 11], issued_step=4,
    ))
    assert len(groups) == 2 and all(len(g) == 3 for g in groups)
    for prompt, pid, gid, group in zip(PROMPTS, ["a", "b"], [10, 11], groups):
        for s in group:
            assert s.prompt_ids == prompt
            assert len(s.response_ids) == len(s.logprobs) == 6
            assert s.finish_reason == "length" and s.truncated
            assert (s.problem_id, s.group_id, s.issued_step, s.version) == (pid, gid, 4, version)
            assert all(lp <= 0.0 for lp in s.logprobs)
            # At temperature 1 the behaviour log-probs are the model's own.
            want = ref_logprobs(ref, s.prompt_ids, s.response_ids)
            assert torch.allclose(torch.tensor(s.logprobs, dtype=torch.float64), want, atol=ATOL)

    # A response that ends on its own: the stop token is the last response id.
    eos = ref.config.eos_token_id
    (group,) = ray.get(worker.generate.remote([PROMPTS[0]], 8, {"temperature": 1.0, "max_tokens": 64}))
    for s in group:
        assert s.finish_reason in ("stop", "length")
        if s.finish_reason == "stop":
            assert s.response_ids[-1] == eos and len(s.response_ids) <= 64
        else:
            assert len(s.response_ids) == 64


def test_concurrent_calls_share_the_engine(setup):
    """Calls from several callers at once are batched together and each gets its own answer."""
    import ray

    worker, _, _ = setup
    calls = [worker.generate.remote([PROMPTS[i % 2]] * (i + 1), 2, {"max_tokens": 4 + i, "ignore_eos": True})
             for i in range(4)]
    for i, groups in enumerate(ray.get(calls)):
        assert len(groups) == i + 1
        assert all(len(s.response_ids) == 4 + i and s.prompt_ids == PROMPTS[i % 2] for g in groups for s in g)


def test_behaviour_logprobs_are_of_the_processed_distribution(setup):
    """temperature 0.7 and top-k 5: the log-probs are those of the distribution sampled from."""
    import ray

    worker, ref, _ = setup
    (group,) = ray.get(worker.generate.remote(
        [PROMPTS[0]], 4, {"temperature": 0.7, "top_k": 5, "max_tokens": 12, "ignore_eos": True}))
    for s in group:
        want = ref_logprobs(ref, s.prompt_ids, s.response_ids, temperature=0.7, top_k=5)
        got = torch.tensor(s.logprobs, dtype=torch.float64)
        assert torch.allclose(got, want, atol=ATOL), (got, want)
        # Not the raw model's: the test would catch vLLM's default raw_logprobs mode.
        raw = ref_logprobs(ref, s.prompt_ids, s.response_ids)
        assert (got - raw).abs().max() > 1e-2


def test_sync_makes_engine_logprobs_equal_the_learners(setup):
    import ray

    worker, ref, tied = setup
    prompt, response = PROMPTS[0], [8, 300, 21, 21, 150, 4, 77]
    v0 = ray.get(worker.version.remote())
    before = torch.tensor(ray.get(worker.score.remote(prompt, response)), dtype=torch.float64)
    assert torch.allclose(before, ref_logprobs(ref, prompt, response), atol=ATOL)

    perturb_(ref, seed=v0 + 1)
    want = ref_logprobs(ref, prompt, response)
    assert (before - want).abs().max() > 1e-2  # the step moved the log-probs: the check can fail

    n_tensors, out = sync(worker, ref, v0 + 1, tied)
    assert out["loaded"] and out["tensors"] == n_tensors and out["version"] == v0 + 1
    assert ray.get(worker.version.remote()) == v0 + 1
    after = torch.tensor(ray.get(worker.score.remote(prompt, response)), dtype=torch.float64)
    assert torch.allclose(after, want, atol=ATOL), (after - want).abs().max()

    # Sampling uses the new weights too, and records the new version.
    (group,) = ray.get(worker.generate.remote([prompt], 2, {"max_tokens": 8, "ignore_eos": True}))
    for s in group:
        assert s.version == v0 + 1
        got = torch.tensor(s.logprobs, dtype=torch.float64)
        assert torch.allclose(got, ref_logprobs(ref, s.prompt_ids, s.response_ids), atol=ATOL)

    # A second sync keeps working (the tied head is re-tied each time).
    perturb_(ref, seed=v0 + 2)
    sync(worker, ref, v0 + 2, tied)
    again = torch.tensor(ray.get(worker.score.remote(prompt, response)), dtype=torch.float64)
    assert torch.allclose(again, ref_logprobs(ref, prompt, response), atol=ATOL)


def test_update_waits_for_running_requests(setup):
    """A sync issued while a request runs lands after it: that sample keeps the old version."""
    import ray

    worker, ref, tied = setup
    v = ray.get(worker.version.remote())
    long = worker.generate.remote([PROMPTS[1]], 2, {"max_tokens": 200, "ignore_eos": True})
    perturb_(ref, seed=100 + v)
    sync(worker, ref, v + 1, tied)
    (old,) = ray.get(long)
    assert all(s.version == v and len(s.response_ids) == 200 for s in old)
    (new,) = ray.get(worker.generate.remote([PROMPTS[1]], 1, {"max_tokens": 3}))
    assert new[0].version == v + 1


def test_object_store_sync_holds_at_most_two_buckets(setup):
    """The worker fetches each bucket as its engine loads it: the bucket bytes alive at once (counted
    until every view of a fetched bucket is gone, vLLM's included) never exceed two buckets."""
    import ray

    worker, ref, tied = setup
    v = ray.get(worker.version.remote())
    prompt, response = PROMPTS[0], [8, 300, 21, 21, 150, 4, 77]
    perturb_(ref, seed=200 + v)
    refs, n_tensors, total = put_weights(ref, tied, bucket_bytes=16 * 1024)
    out = ray.get(worker.update_weights.remote(v + 1, refs))
    assert out["loaded"] and out["tensors"] == n_tensors
    largest = out["largest_bucket_bytes"]
    assert len(refs) >= 4 and total > 3 * largest  # a version of many buckets
    assert 0 < out["peak_held_bytes"] <= 2 * largest, (out, total)
    after = torch.tensor(ray.get(worker.score.remote(prompt, response)), dtype=torch.float64)
    assert torch.allclose(after, ref_logprobs(ref, prompt, response), atol=ATOL)


def test_an_update_superseded_while_queued_is_dropped(setup):
    """Two versions queue behind a running request: the older is dropped, never fetched or loaded;
    the newer loads once the request finishes."""
    import ray

    worker, ref, tied = setup
    v = ray.get(worker.version.remote())
    prompt, response = PROMPTS[0], [8, 300, 21, 21, 150, 4, 77]
    long = worker.generate.remote([PROMPTS[1]], 2, {"max_tokens": 200, "ignore_eos": True})
    perturb_(ref, seed=400 + v)
    first_refs, _, _ = put_weights(ref, tied)
    first_want = ref_logprobs(ref, prompt, response)
    first = worker.update_weights.remote(v + 1, first_refs)
    perturb_(ref, seed=500 + v)
    second_refs, n_tensors, _ = put_weights(ref, tied)
    second = worker.update_weights.remote(v + 2, second_refs)
    (old,) = ray.get(long)
    a, b = ray.get([first, second])
    assert all(s.version == v for s in old)
    assert a["loaded"] is False and a["tensors"] == 0 and a["peak_held_bytes"] == 0
    assert b["loaded"] and b["version"] == v + 2 and b["tensors"] == n_tensors
    assert ray.get(worker.version.remote()) == v + 2
    got = torch.tensor(ray.get(worker.score.remote(prompt, response)), dtype=torch.float64)
    want = ref_logprobs(ref, prompt, response)
    assert (first_want - want).abs().max() > 1e-2  # the two versions differ: the check can fail
    assert torch.allclose(got, want, atol=ATOL)


def test_multi_gpu_engines_get_vllms_mp_executor_and_nccl_weight_transfer(ray_cluster, tmp_path):
    """vLLM's own engine config, built inside a placement group as a rollout actor is: with more
    than one GPU it must not pick its Ray executor (which wants one GPU per bundle), and the
    workers it starts must have vLLM's NCCL weight-transfer engine to receive weights."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from nous_ray.rollout.engine import engine_kwargs

    model_dir = str(build_tiny_model_dir(ModelConfig(), tmp_path / "model"))

    @ray.remote(num_cpus=0.25)
    def engine_config(kw):
        from vllm import EngineArgs

        c = EngineArgs(**kw).create_engine_config()
        wt = c.weight_transfer_config
        return c.parallel_config.distributed_executor_backend, wt.backend if wt else None

    pg = placement_group([{"CPU": 0.5}])
    ray.get(pg.ready())
    try:
        in_bundle = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
        for tp, want in ((2, ("mp", "nccl")), (1, ("uni", None))):
            kw = engine_kwargs(model_dir, RolloutConfig(tensor_parallel_size=tp, max_model_len=256), cpu=False)
            assert ray.get(engine_config.options(scheduling_strategy=in_bundle).remote(kw)) == want
    finally:
        remove_placement_group(pg)


def test_a_request_admitted_after_an_update_carries_the_new_version(setup, tmp_path):
    """A generate call that arrives while an update drains the engine waits for admission; the new
    weights generate it, so it must carry the new version (read after the wait, not before).

    The interleaving is driven step by step on one event loop (a Ray actor's calls may start out of
    order), with a real engine, in a Ray task of its own."""
    import ray

    _, ref, tied = setup
    model_dir = build_tiny_model_dir(ModelConfig(tie_word_embeddings=tied), tmp_path / "model")
    cfg = RolloutConfig(max_model_len=512, kv_cache_memory_bytes=64 * 2**20)
    moved = type(ref).from_pretrained(model_dir, dtype=torch.float32).eval()
    perturb_(moved, seed=300)
    buckets = pack_buckets(moved.state_dict().items(), 64 * 1024)
    prompts = PROMPTS

    def scenario():
        import asyncio

        from nous_ray.rollout.engine import build_engine
        from nous_ray.rollout.stream import StreamingEngine
        from nous_ray.rollout.weights import load_from_store

        async def main():
            se = StreamingEngine(build_engine(str(model_dir), cfg, dtype="float32"), version=0, weight_update="drain")
            long = asyncio.ensure_future(se.generate([prompts[1]], 2, {"max_tokens": 200, "ignore_eos": True}))
            while se.num_running == 0:
                await asyncio.sleep(0)
            update = asyncio.ensure_future(se.update_weights(1, lambda engine: load_from_store(engine, buckets)))
            await asyncio.sleep(0)  # the update closes admission and waits for the long request
            closed = not se._admitting.is_set()
            waiting = asyncio.ensure_future(se.generate([prompts[0]], 1, {"max_tokens": 4, "ignore_eos": True}))
            (old,), _, (new,) = await asyncio.gather(long, update, waiting)
            return closed, old, new

        return asyncio.run(main())

    closed, old, new = ray.get(ray.remote(num_cpus=0.5)(scenario).remote())
    assert closed  # the scenario is the one meant: the second call came while admission was shut
    assert all(s.version == 0 for s in old)
    assert new[0].version == 1
    # and it really was the new weights that sampled it
    got = torch.tensor(new[0].logprobs, dtype=torch.float64)
    assert torch.allclose(got, ref_logprobs(moved, new[0].prompt_ids, new[0].response_ids), atol=ATOL)


def test_bad_requests_are_named(setup):
    import ray

    worker, _, _ = setup
    with pytest.raises(ValueError, match="unknown key.*'top-p'"):
        ray.get(worker.generate.remote(PROMPTS, 1, {"top-p": 0.9}))
    with pytest.raises(ValueError, match="prompt 1 must be a non-empty"):
        ray.get(worker.generate.remote([[1, 2], []], 1, {}))
    with pytest.raises(ValueError, match="prompt 0 has 600 tokens"):
        ray.get(worker.generate.remote([[1] * 600], 1, {}))
    with pytest.raises(ValueError, match="older than the loaded"):
        ray.get(worker.update_weights.remote(-1, []))
    # The worker still serves after refusing bad calls.
    assert len(ray.get(worker.generate.remote([PROMPTS[0]], 1, {"max_tokens": 2}))[0]) == 1
