"""Items 4 and 7 of issue 10 on real Ray: the start-up checks run as tasks in the workers' own
placement bundles (so on the nodes the learner ranks and engines will use)."""

import pytest

from nous_ray.config import load_config
from nous_ray.inputs import MissingInputs

pytestmark = pytest.mark.slow


@pytest.fixture
def placement(ray_cluster):
    from actors.placement import Placement

    p = Placement(load_config(None))  # tiny: 2 learner ranks, 1 rollout worker, 1 verifier
    yield p
    p.remove()


def test_every_learner_bundle_answers_the_probe_and_finds_the_model(placement, tmp_path):
    from actors.node_check import check_nodes
    from nous_ray.models.tiny import build_tiny_model_dir

    model = build_tiny_model_dir(load_config(None).model, tmp_path / "model")
    run_dir = tmp_path / "run"
    check_nodes(placement, run_dir, str(model), "python launch/prefetch.py")
    assert list((run_dir / ".probe").iterdir()) == []  # every answer was read back and removed


def test_a_model_missing_on_the_workers_nodes_names_each_bundle_and_the_fix(placement, tmp_path):
    from actors.node_check import check_nodes

    missing = tmp_path / "not-fetched"
    with pytest.raises(MissingInputs) as e:
        check_nodes(placement, tmp_path / "run", str(missing), "python launch/prefetch.py --config x.yaml")
    msg = str(e.value)
    for who in ("learner-0", "learner-1", "rollout-0"):
        assert f"{who} on " in msg
    assert f"model folder {str(missing)!r}: no such folder" in msg
    assert msg.endswith("python launch/prefetch.py --config x.yaml")
