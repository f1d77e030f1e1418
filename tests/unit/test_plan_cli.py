"""launch/plan.py: the table, the JSON the issue names, memory errors, the split comparison."""

import json

import pytest

from launch.plan import main
from nous_ray.config import load_config
from nous_ray.sim.planner import split_candidates

SMALL = ["rollout.num_workers=32", "trainer.prompts_per_step=64", "rollout.max_prompts_per_worker=4",
         "sim.response_len_median=2000", "sim.num_problems=500"]


def test_json_report_has_every_figure_the_issue_names(capsys):
    assert main(["--config", "configs/nouscoder_14b.yaml", "--json", "--steps", "4", "--splits-steps", "0",
                 *SMALL]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert isinstance(rep["step_time_s"], float) and rep["step_time_s"] > 0
    assert rep["rollout"]["gpus"] == 32 and rep["learner"]["gpus"] == 16
    for k in ("busy_frac", "tokens_per_s"):
        assert isinstance(rep["rollout"][k], float)
    lg = rep["learner"]
    assert lg["idle_frac"] == pytest.approx(lg["idle_generation_frac"] + lg["idle_verification_frac"])
    assert set(rep["memory_gb_per_gpu"]) == {"learner", "rollout"} and rep["fits"] is True
    assert rep["counters"]["trained"] + rep["counters"]["dropped_truncated"] == 4 * 64 * 8


def test_table_and_split_comparison(capsys):
    assert main(["--config", "configs/nouscoder_14b.yaml", "--steps", "3", "--splits-steps", "2", *SMALL]) == 0
    out = capsys.readouterr().out
    for needle in ("memory per GPU", "rollout", "learner", "verifier", "waiting on generation", "<- best",
                   "(this config)"):
        assert needle in out
    cands = split_candidates(load_config("configs/nouscoder_14b.yaml"))
    assert [(c.learner.num_ranks, c.rollout.num_workers) for c in cands] == [(8, 40), (16, 32), (24, 24), (32, 16),
                                                                              (40, 8)]


def test_what_does_not_fit_is_a_clear_error(capsys):
    code = main(["--config", "configs/nouscoder_14b.yaml", "--json", "learner.activation_checkpointing=false"])
    captured = capsys.readouterr()
    assert code == 1 and json.loads(captured.out)["fits"] is False
    assert "learner does not fit" in captured.err and "learner.micro_batch_tokens=45056" in captured.err
