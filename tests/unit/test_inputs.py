"""Item 4 of issue 10: the model and the data reach the nodes through an explicit prefetch step.

No hub is reachable here, so a local folder plays the hub: the prefetch command's plan runs through
huggingface_hub's own pattern filter (the one snapshot_download applies) over a real repository
layout, and the job's start-up check runs as a real `launch/train.py` subprocess.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub.utils import filter_repo_objects

from nous_ray.config import load_config
from nous_ray.inputs import Fetch, MissingInputs, missing_inputs, model_problem, prefetch_plan, require_inputs

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
RECIPE = ROOT / "configs" / "nouscoder_14b.yaml"


def _recipe(tmp_path, *extra):
    return load_config(RECIPE, [f"run.shared_dir={tmp_path}", *extra])


def _fake_model_repo(root: Path, shards: int = 3) -> Path:
    """A hub model repository's files (Qwen3-14B's layout: sharded safetensors with an index)."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (root / "tokenizer.json").write_text("{}")
    (root / "tokenizer_config.json").write_text("{}")
    (root / "merges.txt").write_text("")
    (root / "README.md").write_text("card")
    (root / "LICENSE").write_text("apache")
    (root / "original").mkdir()
    (root / "original" / "consolidated.pth").write_bytes(b"x")
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    for n in names:
        (root / n).write_bytes(b"weights")
    index = {"weight_map": {f"w{i}": n for i, n in enumerate(names)}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


def _fetch_from(hub: dict[str, Path]):
    """What snapshot_download does, with a local folder per repository as the hub."""
    def fetch(f: Fetch) -> str:
        src = hub[f.repo_id]
        files = [str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()]
        for rel in filter_repo_objects(files, allow_patterns=list(f.allow_patterns)):
            dst = Path(f.local_dir) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / rel, dst)
        return f.local_dir
    return fetch


def test_recipe_plan_fetches_model_training_data_and_eval_data_onto_shared_storage(tmp_path):
    cfg = _recipe(tmp_path)
    assert cfg.run.run_dir == f"{tmp_path}/runs/nouscoder-14b"
    plan = prefetch_plan(cfg)
    assert [(f.key, f.repo_id, f.repo_type, f.local_dir) for f in plan] == [
        ("model.path", "Qwen/Qwen3-14B", "model", f"{tmp_path}/models/Qwen3-14B"),
        ("data.train_path", "agentica-org/DeepCoder-Preview-Dataset", "dataset",
         f"{tmp_path}/data/DeepCoder-Preview-Dataset"),
        ("eval.path", "livecodebench/code_generation_lite", "dataset", f"{tmp_path}/data/code_generation_lite"),
    ]
    assert plan[1].allow_patterns == ("primeintellect/*.parquet", "taco/*.parquet", "lcbv5/*.parquet")
    assert plan[2].allow_patterns == tuple(["test.jsonl"] + [f"test{k}.jsonl" for k in range(2, 7)])
    assert prefetch_plan(load_config(None)) == []  # the tiny default needs nothing
    # A prepared set (launch/prepare_data.py writes jsonl) is local: only the model and eval data.
    prepared = tmp_path / "problems.jsonl"
    prepared.write_text("")
    plan = prefetch_plan(_recipe(tmp_path, "data.train=jsonl", f"data.train_path={prepared}"))
    assert [f.key for f in plan] == ["model.path", "eval.path"]
    with pytest.raises(ValueError, match="jsonl problems are written by launch/prepare_data.py"):
        prefetch_plan(_recipe(tmp_path, "data.train=jsonl", f"data.train_path={tmp_path}/missing.jsonl"))


def test_model_folder_problems():
    assert model_problem("/nonexistent/model") == "no such folder"


def test_model_folder_checks(tmp_path):
    repo = _fake_model_repo(tmp_path / "m")
    assert model_problem(repo) is None
    (repo / "model-00002-of-00003.safetensors").unlink()
    assert model_problem(repo) == ("1 of 3 weight shards missing (first: model-00002-of-00003.safetensors): "
                                   "an interrupted download")
    (repo / "config.json").unlink()
    assert model_problem(repo) == "no config.json in it"


def test_prefetch_then_every_input_is_in_place(tmp_path):
    """The prefetch command's plan, against a local hub: the files the job needs arrive, no others."""
    from launch.prefetch import main

    hub = {"Qwen/Qwen3-14B": _fake_model_repo(tmp_path / "hub" / "qwen"),
           "agentica-org/DeepCoder-Preview-Dataset": FIXTURES / "deepcoder",
           "livecodebench/code_generation_lite": FIXTURES / "lcb"}
    shared = tmp_path / "fsx"
    args = ["--config", str(RECIPE), f"run.shared_dir={shared}"]
    lines = []
    calls = []
    assert main(args + ["--dry-run"], fetch_one=calls.append, out=lines.append) == 0
    assert calls == [] and [line.split()[0] for line in lines] == ["missing"] * 3
    lines.clear()
    assert main(args, fetch_one=_fetch_from(hub), out=lines.append) == 0
    assert lines[-1] == "prefetch: every input is in place"
    cfg = _recipe(shared)
    assert missing_inputs(cfg) == []
    model = Path(cfg.model.path)
    assert sorted(p.name for p in model.iterdir()) == sorted(
        ["config.json", "tokenizer.json", "tokenizer_config.json", "merges.txt", "model.safetensors.index.json"]
        + [f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)])  # no README, LICENSE or original/
    data = Path(cfg.data.train_path)
    assert sorted(p.name for p in data.iterdir()) == ["lcbv5", "primeintellect", "taco"]  # not codeforces
    # The job's loaders read what arrived.
    from nous_ray.data import load_problems

    problems = load_problems("deepcoder", cfg.data.train_path, cfg.data.train_subsets)
    assert len(problems) == len(load_problems("deepcoder", str(FIXTURES / "deepcoder"), cfg.data.train_subsets))
    lines.clear()
    assert main(args + ["--dry-run"], fetch_one=calls.append, out=lines.append) == 0
    assert [line.split()[0] for line in lines] == ["present"] * 3


def test_missing_inputs_name_the_path_and_the_fetch_command(tmp_path):
    cfg = _recipe(tmp_path)
    with pytest.raises(MissingInputs) as e:
        require_inputs(cfg, "python launch/prefetch.py --config configs/nouscoder_14b.yaml")
    msg = str(e.value)
    assert f"model.path='{tmp_path}/models/Qwen3-14B': no such folder" in msg
    assert f"data.train_path='{tmp_path}/data/DeepCoder-Preview-Dataset' (data.train=deepcoder): no such file" in msg
    assert f"eval.path='{tmp_path}/data/code_generation_lite'" in msg
    assert msg.endswith("python launch/prefetch.py --config configs/nouscoder_14b.yaml")
    # A deepcoder folder without one of the subsets the run trains on.
    data = tmp_path / "data" / "DeepCoder-Preview-Dataset"
    shutil.copytree(FIXTURES / "deepcoder", data)
    shutil.rmtree(data / "taco")
    assert f"data.train_path='{data}' (data.train=deepcoder): no parquet files for subset(s) ['taco']" \
        in missing_inputs(cfg)


def test_train_fails_at_start_up_with_the_path_and_the_prefetch_command(tmp_path):
    """A real `launch/train.py`: a missing model stops it before Ray starts, exit code 2."""
    proc = subprocess.run(
        [sys.executable, "launch/train.py", "--config", "configs/nouscoder_14b.yaml", f"run.shared_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr
    assert f"model.path='{tmp_path}/models/Qwen3-14B': no such folder" in err
    assert (f"python launch/prefetch.py --config configs/nouscoder_14b.yaml run.shared_dir={tmp_path}" in err)
    assert not (tmp_path / "runs").exists()  # nothing started
