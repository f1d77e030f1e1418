"""Rollout engine settings, sampling params and output conversion (no engine started)."""

import pytest

from actors.rollout import rollout_actor_options
from nous_ray.config import RolloutConfig
from nous_ray.rollout.engine import LOGPROBS_MODE, engine_kwargs
from nous_ray.rollout.outputs import scored_logprobs, to_samples
from nous_ray.rollout.sampling import make_sampling_params
from nous_ray.rollout.stream import check_prompts


def test_engine_kwargs_cpu_and_gpu():
    cpu = engine_kwargs("/m", RolloutConfig(kv_cache_memory_bytes=123), dtype="float32", seed=3, cpu=True)
    assert cpu["kv_cache_memory_bytes"] == 123 and "gpu_memory_utilization" not in cpu
    assert cpu["distributed_executor_backend"] == "uni" and cpu["logprobs_mode"] == "processed_logprobs"
    assert (cpu["model"], cpu["dtype"], cpu["seed"], cpu["max_model_len"]) == ("/m", "float32", 3, 1024)
    gpu = engine_kwargs("/m", RolloutConfig(tensor_parallel_size=4, gpu_memory_utilization=0.7), cpu=False)
    assert gpu["tensor_parallel_size"] == 4 and gpu["gpu_memory_utilization"] == 0.7
    assert "kv_cache_memory_bytes" not in gpu
    # Several GPUs: vLLM's mp executor (its Ray executor refuses our one multi-GPU bundle) and its
    # NCCL weight transfer, the only way new weights reach worker processes.
    assert gpu["distributed_executor_backend"] == "mp" and gpu["weight_transfer_config"] == {"backend": "nccl"}
    assert LOGPROBS_MODE == "processed_logprobs"
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        engine_kwargs("/m", RolloutConfig(tensor_parallel_size=0), cpu=True)


def test_sampling_params():
    from vllm.sampling_params import RequestOutputKind

    p = make_sampling_params({"temperature": 0.6, "top_p": 0.95, "top_k": -1, "max_tokens": 7}, n=8)
    assert (p.n, p.temperature, p.top_p, p.top_k, p.max_tokens) == (8, 0.6, 0.95, 0, 7)
    assert p.logprobs == 0 and p.output_kind == RequestOutputKind.FINAL_ONLY
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['top-p'\]"):
        make_sampling_params({"top-p": 0.9})
    with pytest.raises(ValueError, match="n must be a positive int"):
        make_sampling_params({}, n=0)
    with pytest.raises(ValueError, match="max_tokens must be a positive int"):
        make_sampling_params({"max_tokens": 0})


def _out(finish=("length", "stop"), logprob_tokens=None):
    from vllm.logprobs import Logprob
    from vllm.outputs import CompletionOutput, RequestOutput, WeightVersionSpan

    comps = []
    # Completion 0 spans an in-flight update after its second token; completion 1 ran on version 4 only.
    spans = {0: [WeightVersionSpan("4", 0, 2), WeightVersionSpan("5", 2, 3)], 1: [WeightVersionSpan("4", 0, 2)]}
    for idx, ids in ((1, [7, 8]), (0, [5, 6, 9])):  # out of order on purpose
        toks = logprob_tokens or ids
        lps = [{t: Logprob(logprob=-0.5 * (k + 1) - idx, rank=1)} for k, t in enumerate(toks)]
        comps.append(CompletionOutput(index=idx, text=f"t{idx}", token_ids=ids, cumulative_logprob=None,
                                      logprobs=lps, finish_reason=finish[idx], weight_versions=spans[idx]))
    return RequestOutput(request_id="r1", prompt=None, prompt_token_ids=[1, 2, 3], prompt_logprobs=None,
                         outputs=comps, finished=True)


def test_to_samples():
    a, b = to_samples(_out(), version=4, problem_id="p", group_id=2, issued_step=9)
    assert (a.response_ids, a.logprobs, a.finish_reason, a.text) == ([5, 6, 9], [-0.5, -1.0, -1.5], "length", "t0")
    assert (b.response_ids, b.logprobs, b.finish_reason) == ([7, 8], [-1.5, -2.0], "stop")
    for s in (a, b):
        assert (s.prompt_ids, s.version, s.problem_id, s.group_id, s.issued_step) == ([1, 2, 3], 4, "p", 2, 9)
    assert a.version_starts == [(4, 0), (5, 2)] and a.token_versions() == [4, 4, 5]
    assert b.version_starts == [] and b.token_versions() == [4, 4]
    with pytest.raises(RuntimeError, match="completion 0 ended with 'abort'"):
        to_samples(_out(finish=("abort", "stop")), version=0)
    with pytest.raises(ValueError, match="no log-prob for token 5 at position 0"):
        to_samples(_out(logprob_tokens=[11, 12, 13]), version=0)


def test_scored_logprobs():
    from vllm.logprobs import Logprob
    from vllm.outputs import RequestOutput

    ids = [1, 2, 3, 4]
    plp = [None] + [{t: Logprob(logprob=-float(t), rank=1)} for t in ids[1:]]
    out = RequestOutput(request_id="s", prompt=None, prompt_token_ids=ids, prompt_logprobs=plp, outputs=[],
                        finished=True)
    assert scored_logprobs(out, 2) == [-3.0, -4.0]


def test_check_prompts_and_actor_options():
    assert check_prompts([(1, 2), [3]], 10) == [[1, 2], [3]]
    with pytest.raises(TypeError, match="list of token-id lists"):
        check_prompts("hello", 10)
    with pytest.raises(ValueError, match="prompt 1 must be a non-empty"):
        check_prompts([[1], "ab"], 10)
    with pytest.raises(ValueError, match="prompt 0 has 10 tokens; max_model_len is 10"):
        check_prompts([list(range(10))], 10)
    cpu = rollout_actor_options(RolloutConfig(cpus_per_worker=0.5))
    assert cpu["num_cpus"] == 0.5 and cpu["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert cpu["runtime_env"]["env_vars"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    gpu = rollout_actor_options(RolloutConfig(gpus_per_worker=2, tensor_parallel_size=2))
    assert gpu["num_gpus"] == 2 and "OMP_NUM_THREADS" not in gpu["runtime_env"]["env_vars"]
    with pytest.raises(ValueError, match="gpus_per_worker"):
        rollout_actor_options(RolloutConfig(gpus_per_worker=1, tensor_parallel_size=2))


def test_scheduler_settings_default_to_vllm_offline_defaults(tmp_path, monkeypatch):
    """build_engine schedules like ``vllm.LLM`` (offline defaults: on CPU 256 sequences / 4,096 tokens
    per step), not like a bare ``LLMEngine`` (128 / 2,048, twice the engine steps); config keys win."""
    from vllm.v1.engine.llm_engine import LLMEngine

    from nous_ray.config import ModelConfig
    from nous_ray.models.tiny import build_tiny_model_dir
    from nous_ray.rollout import engine as engine_mod

    model = str(build_tiny_model_dir(ModelConfig(), tmp_path / "m"))
    seen = {}

    def capture(args, usage_context=None, **kw):
        seen["sched"] = args.create_engine_config(usage_context).scheduler_config
        return "engine"

    monkeypatch.setattr(LLMEngine, "from_engine_args", classmethod(lambda cls, *a, **k: capture(*a, **k)))
    assert engine_mod.build_engine(model, RolloutConfig(max_model_len=256)) == "engine"
    assert (seen["sched"].max_num_seqs, seen["sched"].max_num_batched_tokens) == (256, 4096)
    engine_mod.build_engine(model, RolloutConfig(max_model_len=256, max_num_seqs=64, max_num_batched_tokens=1024))
    assert (seen["sched"].max_num_seqs, seen["sched"].max_num_batched_tokens) == (64, 1024)


def test_the_recipe_runs_one_gpu_engines_and_refuses_multi_gpu_engines_without_nccl():
    from nous_ray.config import ConfigError, load_config

    cfg = load_config("configs/nouscoder_14b.yaml")
    assert (cfg.rollout.tensor_parallel_size, cfg.rollout.gpus_per_worker) == (1, 1)
    assert cfg.weight_sync.transport == "nccl"
    assert engine_kwargs(cfg.model.path, cfg.rollout, cpu=False)["distributed_executor_backend"] == "uni"
    with pytest.raises(ConfigError, match="weight_sync.transport.*tensor_parallel_size=2 needs 'nccl'"):
        load_config("configs/nouscoder_14b.yaml", ["rollout.tensor_parallel_size=2", "rollout.gpus_per_worker=2",
                                                   "weight_sync.transport=object_store"])


def test_weight_version_spans_become_version_starts():
    from vllm.outputs import WeightVersionSpan

    from nous_ray.rollout.outputs import version_starts

    spans = [WeightVersionSpan("4", 0, 3), WeightVersionSpan("5", 3, 8)]
    assert version_starts(spans, 8, "r1") == [(4, 0), (5, 3)]
    assert version_starts(None, 0, "r1") == []
    with pytest.raises(ValueError, match="r1: 8 tokens but no weight-version spans"):
        version_starts(None, 8, "r1")
    with pytest.raises(ValueError, match="r1: weight-version spans .* do not cover 9 tokens"):
        version_starts(spans, 9, "r1")
    with pytest.raises(ValueError, match="in version order"):
        version_starts([WeightVersionSpan("5", 0, 3), WeightVersionSpan("4", 3, 8)], 8, "r1")
