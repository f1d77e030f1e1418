"""Item 6 of issue 10 end to end: `launch/train.py` with the Modal verifier and no Modal token stops
at start-up, from the verifier actor's own check, with the fix in the message (it used to wait for
its first batch forever). The real Modal client raises its AuthError without any network call."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_train_with_modal_and_no_token_fails_at_start_up(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["MODAL_CONFIG_PATH"] = str(tmp_path / "no-modal.toml")
    proc = subprocess.run([sys.executable, "launch/train.py", f"run.run_dir={tmp_path / 'run'}",
                           "verifier.backend=modal"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("start-up error: Modal function nous-ray-verifier/judge cannot be called (AuthError")
    assert "MODAL_TOKEN_ID" in err and "--runtime-env-json" in err
    assert "step" not in proc.stdout  # no engine started, nothing trained
