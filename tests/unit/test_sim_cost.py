"""The cost model against hand-computed figures for Qwen3-14B on B200 (DESIGN.md's scale facts)."""

import pytest

from nous_ray.config import load_config
from nous_ray.sim.cost import CostModel, DoesNotFit
from nous_ray.sim.specs import MODELS, model_spec

KV_PER_TOKEN = 2 * 40 * 8 * 128 * 2  # K and V, 40 layers, 8 KV heads, head dim 128, bf16: 160 KiB


def _cost(*overrides):
    return CostModel.from_config(load_config("configs/nouscoder_14b.yaml", list(overrides)))


def test_qwen3_14b_spec_matches_its_config():
    m = MODELS["Qwen/Qwen3-14B"]
    assert m.kv_bytes_per_token() == KV_PER_TOKEN == 163840
    assert model_spec(load_config("configs/nouscoder_14b.yaml").model) is m


def test_decode_step_is_memory_bound_on_weights_plus_kv():
    c = _cost("rollout.tensor_parallel_size=1")
    bw = 8e12 * 0.85  # B200 bandwidth x decode_bw_efficiency
    # batch 1, no context: the weights are read once (29.6 GB), plus 1 ms per step and 10 us per sequence
    assert c.decode_step_s(1, 0) == pytest.approx(29.6e9 / bw + 1e-3 + 1e-5, rel=1e-9)
    # batch 64 at 10k tokens of context each: the KV read dominates
    assert c.decode_step_s(64, 640_000) == pytest.approx((29.6e9 + 640_000 * KV_PER_TOKEN) / bw + 1e-3 + 64e-5,
                                                         rel=1e-9)
    # tokens/s grows with the batch toward the KV-bandwidth plateau
    rates = [c.decode_tokens_per_s(b, 12_000) for b in (1, 8, 32, 64, 128)]
    assert rates == sorted(rates) and rates[-1] < bw / (12_000 * KV_PER_TOKEN)


def test_kv_capacity_and_memory_per_gpu():
    c = _cost("rollout.tensor_parallel_size=1")
    em = c.engine_memory()
    kv = 0.85 * 180e9 - 29.6e9 - 6e9  # gpu_memory_utilization x HBM - weights - vLLM's reserve
    assert em["kv_cache_gb"] == pytest.approx(kv / 1e9)
    assert em["kv_capacity_tokens"] == int(kv / KV_PER_TOKEN) == 716_552
    lm = c.learner_memory()  # 16 ranks, 45,056-token micro-batches, activation checkpointing
    assert lm["states_gb"] == pytest.approx(16 * 14.8e9 / 16 / 1e9)
    t, h = 45_056, 5120
    assert lm["activations_gb"] == pytest.approx((2 * t * h * 40 + 34 * t * h) / 1e9)
    assert c.memory_gb_per_gpu()["learner"] == pytest.approx(lm["total_gb"])
    c.check_fits()


def test_train_step_time_from_flops_and_mfu():
    c = _cost()
    per_token = 6 * 14.8e9 + 12 * 40 * 40 * 128 * 1000  # 6N + 12 L H Q T at T = 1000
    rate = 16 * 2.2e15 * 0.35  # ranks x peak x MFU
    assert c.train_step_s([1000, 1000]) == pytest.approx(2000 * per_token / rate + 1.0, rel=1e-9)
    # the log-prob recompute (TIS) adds a forward pass: a third of forward + backward
    tis = _cost("algo.tis_cap=2.0")
    assert tis.train_step_s([1000, 1000]) - 1.0 == pytest.approx(4 / 3 * 2000 * per_token / rate, rel=1e-9)


def test_weight_sync_and_verification_times():
    c = _cost()
    assert c.sync_learner_s() == pytest.approx(2.0 + 29.6 / 40)
    assert c.sync_engine_s() == pytest.approx(29.6 / 100)
    assert c.verify_slots() == 100  # modal_max_containers
    assert c.program_s(True, 0.5) == pytest.approx(1.0 + 15 * 0.2)  # start + every test
    assert c.program_s(False, 0.05) == pytest.approx(1.0 + 15.0)  # into the time limit
    assert c.program_s(False, 0.55) == pytest.approx(1.0 + 8 * 0.2)  # stops at its first failing test


@pytest.mark.parametrize("override,needle", [
    ("learner.activation_checkpointing=false", "learner.micro_batch_tokens"),
    ("rollout.gpu_memory_utilization=0.2", "rollout.max_model_len=43008"),
])
def test_what_does_not_fit_is_an_error_naming_the_keys(override, needle):
    with pytest.raises(DoesNotFit, match=needle):
        _cost("rollout.tensor_parallel_size=1", override).check_fits()


def test_unknown_gpu_or_model_names_the_key():
    with pytest.raises(ValueError, match="sim.gpu"):
        _cost("sim.gpu=a100")
    with pytest.raises(ValueError, match="model.hub_id"):
        _cost("model.hub_id=someone/unknown-7b")


def test_the_cost_model_defaults_are_the_cluster_yaml_hardware():
    import yaml

    from nous_ray.config import SimConfig
    from nous_ray.sim.specs import GPUS

    nodes = yaml.safe_load(open("cluster.yaml"))["available_node_types"]
    gpu_nodes = [n for n in nodes.values() if n.get("resources", {}).get("GPU")]
    assert len(gpu_nodes) == 1
    (node,) = gpu_nodes
    sim = SimConfig()
    assert node["node_config"]["InstanceType"] == GPUS[sim.gpu].instance
    assert node["min_workers"] == sim.nodes and node["resources"]["GPU"] == sim.gpus_per_node
