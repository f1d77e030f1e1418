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
    assert cfg.rollout.group_size == 8
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


def test_recipe_leaves_the_clip_to_each_objective():
    """Issue 13 item 2: switching the recipe to GSPO switches the clip to GSPO's (3e-4 / 4e-4), not
    DAPO's 0.2 / 0.28 (which never clips a geometric-mean ratio)."""
    from nous_ray.algo import DEFAULT_CLIP

    for loss, want in (("dapo", (0.2, 0.28)), ("gspo", (3e-4, 4e-4)), ("gspo_plus", (3e-4, 4e-4))):
        cfg = load_config("configs/nouscoder_14b.yaml", [f"algo.loss={loss}"])
        assert (cfg.algo.clip_low, cfg.algo.clip_high) == (None, None)
        assert DEFAULT_CLIP[cfg.algo.loss] == want


@pytest.mark.parametrize("overrides,key", [
    (["algo.loss=gspo", "algo.clip_high=0.28"], "algo.clip_high"),
    (["algo.loss=gspo_plus", "algo.clip_low=0.2"], "algo.clip_low"),
    (["algo.loss=gspo", "algo.clip_high=0.011"], "algo.clip_high"),
    (["algo.clip_ratio_c=1.0"], "algo.clip_ratio_c"),
    (["algo.log_ratio_clamp=0"], "algo.log_ratio_clamp"),
    (["algo.tis_cap=-1"], "algo.tis_cap"),
    (["algo.clip_low=1.0"], "algo.clip_low"),
])
def test_algo_validation_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)


def test_large_sequence_clip_only_when_asked():
    cfg = load_config(None, ["algo.loss=gspo", "algo.clip_high=0.28", "algo.allow_large_sequence_clip=true"])
    assert cfg.algo.clip_high == 0.28
    assert load_config(None, ["algo.loss=gspo", "algo.clip_high=0.01"]).algo.clip_high == 0.01
    assert load_config(None, ["algo.loss=dapo", "algo.clip_high=0.28"]).algo.clip_high == 0.28
    assert load_config(None, ["algo.clip_ratio_c=null"]).algo.clip_ratio_c is None


def test_weight_update_mode_is_checked_and_in_flight_by_default():
    assert load_config(None).rollout.weight_update == "inflight"
    assert load_config(None, ["rollout.weight_update=drain"]).rollout.weight_update == "drain"
    with pytest.raises(ConfigError, match=r"key 'rollout\.weight_update': unknown weight update 'drian' "
                                          r"\(inflight \| drain\)"):
        load_config(None, ["rollout.weight_update=drian"])
    with pytest.raises(ConfigError, match=r"sim\.weight_update"):  # one key: the planner follows rollout's
        load_config(None, ["sim.weight_update=drain"])
