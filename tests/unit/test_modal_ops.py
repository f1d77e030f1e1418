"""Item 6 of issue 10: Modal fails fast without credentials, and deploys from the run's config.

Modal's servers cannot be reached from here, but its client is real: without a token it raises its
own AuthError before any network call, which is exactly the cluster's failure mode.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nous_ray.config import VerifierConfig, load_config
from nous_ray.verify.modal_client import CANARY_CODE, CANARY_PROBLEM, ModalBackend, ModalUnavailable

pytest.importorskip("modal")
ROOT = Path(__file__).resolve().parents[2]


def _no_token_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["MODAL_CONFIG_PATH"] = str(tmp_path / "no-modal.toml")  # no ~/.modal.toml either
    return env


def test_without_a_token_the_real_client_fails_the_start_up_check_with_the_fix(tmp_path):
    code = ("from nous_ray.config import VerifierConfig\n"
            "from nous_ray.verify.modal_client import ModalBackend\n"
            "ModalBackend(VerifierConfig(backend='modal')).check()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_no_token_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nous_ray.verify.modal_client.ModalUnavailable: Modal function nous-ray-verifier/judge "
                           "cannot be called (AuthError: Token missing.")
    assert "MODAL_TOKEN_ID" in last and "MODAL_TOKEN_SECRET" in last and "--runtime-env-json" in last


def _check(transport, **cfg):
    ModalBackend(VerifierConfig(backend="modal", **cfg), transport=transport).check()


def test_start_up_check_messages():
    import modal.exception

    async def not_deployed(problem, code):
        raise modal.exception.NotFoundError("Lookup failed for Function 'judge' from the 'nous-ray-verifier' app")
    with pytest.raises(ModalUnavailable, match=r"NotFoundError.*deploy the judge first: python launch/deploy_modal.py"):
        _check(not_deployed)

    async def wrong(problem, code):
        return {"verdict": "runtime_error", "detail": "ModuleNotFoundError: nous_ray"}
    with pytest.raises(ModalUnavailable, match="judged a correct program runtime_error .*out of date"):
        _check(wrong)

    async def hangs(problem, code):
        import asyncio
        await asyncio.sleep(60)
    with pytest.raises(ModalUnavailable, match="no answer to the start-up check within"):
        _check(hangs, modal_call_timeout_s=0.2)

    sent = []

    async def ok(problem, code):
        sent.append((problem, code))
        return {"verdict": "accepted", "tests_run": 1}
    _check(ok)
    assert sent == [(CANARY_PROBLEM.to_dict(), CANARY_CODE)]


def test_the_canary_is_accepted_by_the_real_judge():
    """The start-up check's program passes the judge the Modal app runs (locally here)."""
    import nous_ray.verify.modal_app as m

    assert m.judge.local(CANARY_PROBLEM.to_dict(), CANARY_CODE)["verdict"] == "accepted"


@pytest.fixture
def restore_modal_app(monkeypatch):
    """deploy_modal re-imports modal_app with a run's settings; put the defaults back afterwards."""
    import importlib

    import nous_ray.verify.modal_app as m

    monkeypatch.delenv(m.CONFIG_ENV, raising=False)
    yield
    os.environ.pop(m.CONFIG_ENV, None)
    importlib.reload(m)


def test_deploy_takes_the_autoscaler_settings_from_the_config_file(restore_modal_app):
    from launch.deploy_modal import main

    deployed, lines = [], []
    assert main(["--config", "configs/nouscoder_14b.yaml", "verifier.modal_max_containers=64"],
                deploy_app=deployed.append, out=lines.append) == 0
    (app,) = deployed
    s = app.FUNCTION_SETTINGS
    recipe = load_config(ROOT / "configs" / "nouscoder_14b.yaml", ["verifier.modal_max_containers=64"]).verifier
    assert (s["max_containers"], s["buffer_containers"], s["scaledown_window"], s["timeout"]) == (64, 8, 120, 600)
    assert app.app.name == recipe.modal_app and s["name"] == recipe.modal_function
    # The containers import the module again: they rebuild the same settings from the env they get.
    assert app.verifier_config(s["env"]) == recipe
    assert len(app.judge._spec_.secrets) == 1  # the env travels with the function
    assert "deployed" in lines[-1]
    # --dry-run deploys nothing; without the variable the module deploys the defaults.
    assert main(["--config", "configs/nouscoder_14b.yaml", "--dry-run"], deploy_app=deployed.append,
                out=lines.append) == 0
    assert len(deployed) == 1 and json.loads(lines[-1].split(": ", 1)[1])["max_containers"] == 100
    assert app.verifier_config({}) == VerifierConfig()
