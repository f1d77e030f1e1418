"""Long-context engine settings: YaRN overrides and max_model_len, and what vLLM makes of them."""

import pytest

from nous_ray.config import EvalConfig, ModelConfig
from nous_ray.eval import ModelRope, long_context_settings, read_model_rope, yarn_hf_overrides

QWEN3_14B = ModelRope("rope_parameters", {"rope_type": "default", "rope_theta": 1000000.0}, 1000000.0, 40960)


def test_recipe_keeps_the_factor_exact_and_each_response_gets_81920_minus_its_prompt():
    """Issue 13 item 7: factor 2.0 over 40,960 = 81,920 positions in all, prompt included."""
    ev = EvalConfig()
    assert (ev.max_tokens, ev.yarn_original_max_positions, ev.yarn_factor) == (81920, 40960, 2.0)
    s = long_context_settings(ev, prompt_budget=1000, rope=QWEN3_14B)
    assert s.max_model_len == 81920
    assert s.hf_overrides == {
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 2.0,
                            "original_max_position_embeddings": 40960},
        "max_position_embeddings": 81920,
    }
    assert s.hf_overrides["rope_parameters"]["factor"] == 2.0  # exactly, not 82920 / 40960
    assert [s.response_limit(p) for p in (1000, 300, 1)] == [80920, 81620, 81919]
    assert len(s.notes) == 1 and "80920 tokens after the longest prompt" in s.notes[0]


def test_short_max_tokens_and_yarn_off():
    ev = EvalConfig(max_tokens=80000)
    s = long_context_settings(ev, prompt_budget=1920, rope=QWEN3_14B)
    assert s.max_model_len == 81920 and s.notes == []
    assert s.response_limit(1920) == 80000 and s.response_limit(10) == 80000
    assert s.hf_overrides["rope_parameters"]["factor"] == 2.0
    assert s.hf_overrides["max_position_embeddings"] == 81920
    short = long_context_settings(ev, 10, QWEN3_14B, max_tokens=20)
    assert short.max_model_len == 30 and short.hf_overrides["max_position_embeddings"] == 81920
    off = long_context_settings(EvalConfig(yarn_original_max_positions=None, max_tokens=64), 30, rope=None)
    assert (off.max_model_len, off.hf_overrides, off.response_limit(30), off.response_limit(5)) == (94, None, 64, 64)


def test_transformers4_style_key_keeps_theta_out_of_rope_scaling():
    old = ModelRope("rope_scaling", {"type": "linear", "factor": 1.5}, 1e6, 40960)
    o = yarn_hf_overrides(old, 40960, 81920)
    assert o == {"rope_scaling": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 40960},
                 "max_position_embeddings": 81920}


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="prompt_budget must be a positive int"):
        long_context_settings(EvalConfig(), 0, QWEN3_14B)
    with pytest.raises(ValueError, match="yarn_factor must be > 1"):
        long_context_settings(EvalConfig(yarn_factor=1.0), 10, QWEN3_14B)
    with pytest.raises(ValueError, match="rope settings were not given"):
        long_context_settings(EvalConfig(), 10, None)
    with pytest.raises(ValueError, match="81920 tokens, no room for a response within the 81920 positions"):
        long_context_settings(EvalConfig(), 81920, QWEN3_14B)
    with pytest.raises(ValueError, match="not a whole number of positions"):
        long_context_settings(EvalConfig(yarn_original_max_positions=40961, yarn_factor=1.5), 10, QWEN3_14B)
    with pytest.raises(ValueError, match="no rope_theta"):
        yarn_hf_overrides(ModelRope("rope_parameters", None, None, 4096), 128, 256)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from nous_ray.models.tiny import build_tiny_model_dir

    return str(build_tiny_model_dir(ModelConfig(), tmp_path_factory.mktemp("m") / "tiny"))


def test_read_model_rope_of_a_real_folder(tiny_dir):
    r = read_model_rope(tiny_dir)
    assert r == ModelRope("rope_parameters", {"rope_theta": 10000.0, "rope_type": "default"}, 10000.0, 4096)


def test_the_rollout_engine_kwargs_carry_the_settings(tiny_dir):
    """What the rollout pool hands each worker reaches vllm.EngineArgs' fields unchanged."""
    from nous_ray.config import RolloutConfig
    from nous_ray.rollout.engine import engine_kwargs

    s = long_context_settings(EvalConfig(yarn_original_max_positions=128, max_tokens=100), 40,
                              read_model_rope(tiny_dir))
    kw = engine_kwargs(tiny_dir, RolloutConfig(max_model_len=s.max_model_len), cpu=True, hf_overrides=s.hf_overrides)
    assert kw["max_model_len"] == 140
    assert kw["hf_overrides"] == {
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "yarn", "factor": 2.0,
                            "original_max_position_embeddings": 128},
        "max_position_embeddings": 256}


@pytest.mark.slow
def test_vllm_model_config_takes_the_overrides(tiny_dir):
    """vLLM's own ModelConfig, built from the rollout engine's kwargs plus these settings."""
    from vllm import EngineArgs

    from nous_ray.config import RolloutConfig
    from nous_ray.rollout.engine import engine_kwargs

    s = long_context_settings(EvalConfig(yarn_original_max_positions=128, max_tokens=200), 56,
                              read_model_rope(tiny_dir))
    assert s.max_model_len == 256 and s.notes == []
    kw = engine_kwargs(tiny_dir, RolloutConfig(max_model_len=s.max_model_len), cpu=True, hf_overrides=s.hf_overrides)
    mc = EngineArgs(**kw).create_model_config()
    assert mc.max_model_len == 256
    assert mc.hf_config.max_position_embeddings == 256
    assert mc.hf_config.rope_parameters == {"rope_theta": 10000.0, "rope_type": "yarn", "factor": 2.0,
                                            "original_max_position_embeddings": 128}
    # Without the max_position_embeddings override vLLM would refuse a context past the YaRN
    # table; with it, one position more than the table is refused too.
    kw["max_model_len"] = 257
    with pytest.raises(Exception, match="max_model_len"):
        EngineArgs(**kw).create_model_config()


def test_max_tokens_within_a_running_engine():
    from nous_ray.eval import max_tokens_within

    assert max_tokens_within(256, [[1] * 10, [1] * 56], 81920) == 200
    assert max_tokens_within(256, [[1] * 10], 64) == 64
    with pytest.raises(ValueError, match="prompt 1 has 256 tokens, no room"):
        max_tokens_within(256, [[1] * 10, [1] * 256], 64)
