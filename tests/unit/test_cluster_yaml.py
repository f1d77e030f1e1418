"""cluster.yaml: Ray's own validation, and agreement with the recipe (issue 10, items 5 and 7)."""

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _schema():
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _cluster():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _recipe():
    from nous_ray.config import load_config

    return load_config(ROOT / "configs" / "nouscoder_14b.yaml")


def test_cluster_yaml_validates_against_rays_schema():
    jsonschema.validate(_cluster(), _schema())


def test_ray_up_accepts_it_after_filling_its_defaults():
    """What `ray up` does before touching AWS: fill defaults and validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(_cluster())
    validate_config(cfg)
    # Ray takes the security groups of EFA nodes from their interfaces: one group for all nodes.
    head = cfg["available_node_types"]["head"]["node_config"]
    nics = cfg["available_node_types"]["gpu_worker"]["node_config"]["NetworkInterfaces"]
    assert {g for n in nics for g in n["Groups"]} == set(head["SecurityGroupIds"])


def test_cluster_matches_the_recipe():
    cfg = _cluster()
    gpu = cfg["available_node_types"]["gpu_worker"]
    # The 14B config's arithmetic assumes B200 (~180 GB): the node type must be that.
    assert gpu["node_config"]["InstanceType"] == "p6-b200.48xlarge"
    assert "B200" in (ROOT / "configs" / "nouscoder_14b.yaml").read_text()
    per_node = gpu["resources"]["GPU"]
    gpus = per_node * gpu["min_workers"]
    recipe = _recipe()
    learner = recipe.learner.num_ranks * recipe.learner.gpus_per_rank
    assert gpus == 48 == learner + recipe.rollout.num_workers * recipe.rollout.gpus_per_worker
    assert per_node == 8 and learner % per_node == 0  # learner ranks fill whole nodes
    assert "dashboard-port=8265" in " ".join(cfg["head_start_ray_commands"])


def test_efa_on_every_network_card_in_a_cluster_placement_group():
    node = _cluster()["available_node_types"]["gpu_worker"]["node_config"]
    nics = node["NetworkInterfaces"]
    assert [(n["NetworkCardIndex"], n["DeviceIndex"], n["InterfaceType"]) for n in nics][:2] == \
        [(0, 0, "interface"), (0, 1, "efa-only")]
    assert sorted(n["NetworkCardIndex"] for n in nics if n["InterfaceType"] == "efa-only") == list(range(8))
    assert node["Placement"]["GroupName"]
    assert any("LD_LIBRARY_PATH=/opt/amazon/ofi-nccl/lib" in c for c in _cluster()["worker_start_ray_commands"])


def test_file_mounts_do_not_ship_venv_runs_or_caches(tmp_path):
    """Ray's own rsync arguments for this config, run through rsync on a copy of the project layout."""
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    cfg = _cluster()
    assert list(cfg["file_mounts"].values()) == ["."]
    args = SSHCommandRunner._create_rsync_filter_args(
        None, {"rsync_exclude": cfg.get("rsync_exclude"), "rsync_filter": cfg.get("rsync_filter")})
    src, dst = tmp_path / "src", tmp_path / "dst"
    for rel in (".venv/bin/python", "runs/x/checkpoints/step_000010/COMPLETE", ".cache/vllm/k", "nous_ray/config.py",
                "launch/train.py", "configs/tiny.yaml", "nous_ray/__pycache__/config.cpython-311.pyc"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("x")
    shutil.copy(ROOT / ".gitignore", src / ".gitignore")
    if shutil.which("rsync") is None:
        assert {".venv", "runs", ".cache"} <= set(args[1::2])
        pytest.skip("rsync is not installed here; checked the exclude arguments only")
    subprocess.run(["rsync", "-a", *args, f"{src}/", f"{dst}/"], check=True)
    shipped = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert shipped == [".gitignore", "configs/tiny.yaml", "launch/train.py", "nous_ray/config.py"]


def test_the_image_gives_the_python_vllm_needs_and_the_gpu_extra_is_pinned():
    cfg = _cluster()
    for t in cfg["available_node_types"].values():
        assert "ubuntu-24.04" in t["node_config"]["ImageId"]  # python3 is 3.12 there
    assert any("python3.12 -m venv" in c for c in cfg["setup_commands"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"].startswith(">=3.11")
    gpu = project["optional-dependencies"]["gpu"]
    # vllm 0.32.0's package metadata requires torch==2.13.0 (0.33.0 moves to 2.14.0).
    assert "vllm==0.32.0" in gpu and "torch==2.13.0" in project["dependencies"]
    # The learner's attention is torch's own varlen kernel: no package that builds from source.
    assert not any(d.startswith("flash-attn") for d in gpu)
    assert _recipe().learner.attn_implementation == "varlen"
    assert any(".[gpu,modal]" in c for c in cfg["worker_setup_commands"])


def test_job_stop_grace_period_covers_the_final_checkpoint():
    """tests/integration/test_job_stop_grace.py shows on a real head that this variable is the one."""
    cmds = " ".join(_cluster()["head_start_ray_commands"])
    found = re.findall(r"RAY_JOB_STOP_WAIT_TIME_S=(\d+)", cmds)
    assert found and int(found[0]) >= 600


def test_a_broken_cluster_yaml_is_rejected():
    cfg = _cluster()
    cfg["max_workers"] = "six"
    with pytest.raises(jsonschema.ValidationError) as e:
        jsonschema.validate(cfg, _schema())
    assert "max_workers" in str(e.value.path) or "six" in str(e.value.message)
