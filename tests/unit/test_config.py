import pytest

from nous_ray.config import ConfigError, load_config, save_config


def test_tiny_default_loads_with_yaml_values():
    cfg = load_config()
    assert cfg.model.path == "tiny" and cfg.model.tiny_head_dim == 64
    assert cfg.learner.optim.lr == 5e-4
    assert [(s.step, s.max_tokens) for s in cfg.algo.context_schedule] == [(0, 48), (30, 64)]
    assert cfg.run.run_dir == "runs/tiny"  # interpolation resolved


def test_recipe_config_and_command_line_overrides():
    cfg = load_config("configs/nouscoder_14b.yaml", ["trainer.steps=3", "algo.loss=gspo"])
    assert cfg.model.hub_id == "Qwen/Qwen3-14B" and cfg.model.path == "/fsx/nous-ray/models/Qwen3-14B"
    assert cfg.rollout.group_size == 8 and cfg.algo.clip_high == 0.28
    assert cfg.trainer.max_off_policy_steps == 2
    assert cfg.trainer.steps == 3 and cfg.algo.loss == "gspo"
    assert cfg.learner.num_ranks * cfg.learner.gpus_per_rank + \
        cfg.rollout.num_workers * cfg.rollout.gpus_per_worker == 48


@pytest.mark.parametrize("override,needle", [
    ("trainer.stepz=3", "trainer.stepz"),
    ("trainer.steps=abc", "trainer.steps"),
    ("algo.loss=ppo", "algo.loss"),
    ("nonsense", "expected key=value"),
    ("learner.minibatches=3", "learner.minibatches"),
])
def test_broken_keys_are_errors_naming_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert needle in str(e.value)


def test_missing_file_and_bad_yaml_key(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  gruop_size: 4\n")
    with pytest.raises(ConfigError, match="rollout.gruop_size"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["trainer.steps=7"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
