"""Issue 16 item 1: the data, the prompts' room in the context, the resume point and the placement are
checked before Ray starts, each failure one line naming the file, row, field or key. The functions are
tested on their own, and the job as a real `launch/train.py` subprocess fed the bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nous_ray.config import load_config
from nous_ray.data import Problem, TestCase
from nous_ray.data.jsonl import load_jsonl, save_jsonl
from nous_ray.inputs import BadInputs, check_prompt_room, load_train_problems, missing_inputs
from nous_ray.train.checkpoint import STATE_FILE, checkpoint_problem, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
GOOD = [Problem(id=f"p{i}", source="s", prompt="Print 1.", tests=[TestCase("", "1\n")], solutions=["print(1)"])
        for i in range(3)]
NO_TESTS_ROW = json.dumps(dict(GOOD[0].to_dict(), id="broken", tests=[]))


def _data(tmp_path, *extra_lines):
    path = tmp_path / "problems.jsonl"
    save_jsonl(GOOD, str(path))
    with open(path, "a") as f:
        f.writelines(line + "\n" for line in extra_lines)
    return path


def _cfg(path, *extra):
    return load_config(None, ["data.train=jsonl", f"data.train_path={path}", *extra])


def test_a_malformed_row_names_the_file_row_and_field_and_the_key_that_skips_it(tmp_path):
    path = _data(tmp_path, NO_TESTS_ROW)
    with pytest.raises(BadInputs) as e:
        load_train_problems(_cfg(path))
    assert str(e.value) == (f"data.train_path='{path}' (data.train=jsonl): jsonl:{path}: row line 4: field 'tests': "
                            f"must be a non-empty list; data.skip_malformed=true leaves such rows out and counts them")


def test_skip_malformed_leaves_bad_rows_out_and_counts_them(tmp_path):
    path = _data(tmp_path, NO_TESTS_ROW, "{not json")
    problems, skipped = load_train_problems(_cfg(path, "data.skip_malformed=true"))
    assert [p.id for p in problems] == ["p0", "p1", "p2"]
    assert [(e.row, e.field) for e in skipped] == [("line 4", "tests"), ("line 5", "<line>")]


def test_a_line_that_is_not_json_is_skipped_like_any_malformed_row(tmp_path):
    path = _data(tmp_path, "{not json")
    assert load_jsonl(str(path), errors="skip") == GOOD


def test_no_problems_is_an_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(BadInputs) as e:
        load_train_problems(_cfg(empty))
    assert str(e.value) == f"data.train_path='{empty}' (data.train=jsonl): no problems to train on: it holds no problems"
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text(NO_TESTS_ROW + "\n")
    with pytest.raises(BadInputs) as e:
        load_train_problems(_cfg(only_bad, "data.skip_malformed=true"))
    assert str(e.value) == (f"data.train_path='{only_bad}' (data.train=jsonl): no problems to train on: all 1 rows "
                            f"are malformed (first: jsonl:{only_bad}: row line 1: field 'tests': must be a non-empty "
                            f"list)")


def test_unset_training_path_names_the_key():
    cfg = load_config(None, ["data.train=jsonl"])
    assert missing_inputs(cfg) == ["data.train_path=None (data.train=jsonl): not set (a job reads local files only)"]


def test_a_prompt_without_room_for_a_response_names_the_key_and_the_problem():
    ids = [[1] * 10, [1] * 20, [1] * 25]
    check_prompt_room(GOOD, ids, 26, "data.train=jsonl")  # 25 tokens leave one for the response
    with pytest.raises(BadInputs) as e:
        check_prompt_room(GOOD, ids, 20, "data.train=jsonl")
    assert str(e.value) == ("data.train=jsonl: 2 of 3 prompts leave no room for a response within "
                            "rollout.max_model_len=20 (the first: problem 'p1', 20 tokens; the longest 25); raise "
                            "rollout.max_model_len or leave those problems out")


def test_a_learner_checkpoint_is_verified_without_loading_it(tmp_path):
    import torch

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    path = save_checkpoint(tmp_path / "learner", model, opt, {"optimizer_step": 0})
    assert checkpoint_problem(path) is None
    shard = path / "__0_0.distcp"
    data = shard.read_bytes()
    shard.write_bytes(data[:-1])
    assert checkpoint_problem(path) == f"{shard} is truncated ({len(data) - 1} of at least {len(data)} bytes)"
    shard.unlink()
    assert checkpoint_problem(path) == f"{shard} is missing"
    (path / ".metadata").write_bytes(b"\x80\x04torn")
    assert checkpoint_problem(path).startswith(f"{path / '.metadata'} cannot be read (")
    (path / STATE_FILE).write_text("")
    assert checkpoint_problem(path).startswith(f"{path / STATE_FILE} is not JSON (")


# ---- the job itself: `launch/train.py` stops before Ray starts, with one line -------------------

def _train(tmp_path, *overrides):
    proc = subprocess.run([sys.executable, "launch/train.py", f"run.run_dir={tmp_path / 'run'}", *overrides],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr  # nothing started
    assert "Traceback" not in proc.stderr
    return proc.stdout.splitlines(), proc.stderr.strip().splitlines()


def test_train_with_a_malformed_row_stops_before_ray_with_one_line(tmp_path):
    path = _data(tmp_path, NO_TESTS_ROW)
    _, err = _train(tmp_path, "data.train=jsonl", f"data.train_path={path}")
    assert err == [f"start-up error: data.train_path='{path}' (data.train=jsonl): jsonl:{path}: row line 4: field "
                   f"'tests': must be a non-empty list; data.skip_malformed=true leaves such rows out and counts them"]


@pytest.mark.slow
def test_train_counts_skipped_rows_then_stops_on_a_prompt_too_long_before_ray(tmp_path):
    path = _data(tmp_path, "{not json")
    _, err = _train(tmp_path, "data.train=jsonl", f"data.train_path={path}", "data.skip_malformed=true",
                    "rollout.max_model_len=8")
    # The loader logs each row it leaves out, and the count; then the prompts are held against the context.
    assert err[0].endswith(f"WARNING skipped malformed row: jsonl:{path}: row line 4: field '<line>': not valid JSON "
                           f"(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))")
    assert err[1].endswith(f"WARNING jsonl:{path}: skipped 1 malformed rows, kept 3 problems")
    assert len(err) == 3 and err[2].startswith(
        f"start-up error: data.train=jsonl ({path}): 3 of 3 prompts leave no room for a response within "
        f"rollout.max_model_len=8 (the first: problem 'p0', ")


@pytest.mark.slow
def test_train_with_a_placement_this_machine_cannot_hold_stops_before_ray(tmp_path):
    _, err = _train(tmp_path, "learner.num_ranks=64")
    assert len(err) == 1 and err[0].startswith("start-up error: the cluster cannot hold the requested placement: ")
    assert "learner: 64 x {'CPU': 0.5}" in err[0] and err[0].endswith(
        "this machine's local Ray cluster is all there is (no run.ray_address, no RAY_ADDRESS): ask for fewer "
        "workers or fewer CPUs each")


@pytest.mark.slow
def test_train_asked_to_resume_from_a_torn_checkpoint_stops_before_ray(tmp_path):
    torn = tmp_path / "run" / "checkpoints" / "step_000010"
    torn.mkdir(parents=True)
    _, err = _train(tmp_path, f"trainer.resume={torn}")
    assert err == [f"start-up error: trainer.resume='{torn}' cannot be resumed from: no COMPLETE marker in {torn} "
                   f"(its save did not finish)"]
