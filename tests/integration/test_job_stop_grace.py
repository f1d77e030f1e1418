"""`ray job stop` gives the job the grace period cluster.yaml sets, on a real Ray head with its job server.

Ray 2.60's job supervisor sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (default 3 s),
read from the environment the supervisor inherits from `ray start` on the head. A job that needs 6 s
after SIGTERM (our final checkpoint, scaled down) finishes only when cluster.yaml's head start command
exports a longer wait.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

JOB = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
def on_term(*_):
    time.sleep(6)  # the final checkpoint
    (out / "checkpointed").write_text("ok")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
(out / "started").write_text("ok")
while True:
    time.sleep(0.1)
"""


def stop_wait_from_cluster_yaml() -> int:
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    found = re.findall(r"RAY_JOB_STOP_WAIT_TIME_S=(\d+)", " ".join(cfg["head_start_ray_commands"]))
    assert found, "cluster.yaml's head_start_ray_commands do not set RAY_JOB_STOP_WAIT_TIME_S (Ray's default: 3 s)"
    return int(found[0])


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait_for(cond, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_job_stop_waits_the_grace_period_of_cluster_yaml(tmp_path):
    wait = stop_wait_from_cluster_yaml()
    assert wait >= 600  # the final checkpoint of the 14B recipe (see the arithmetic in cluster.yaml)
    from ray.job_submission import JobStatus, JobSubmissionClient

    gcs, dash, client_port, agent, agent_grpc, rt_env, metrics, nm, om = _free_ports(9)
    temp = tempfile.mkdtemp(prefix="rjs", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_JOB_STOP_WAIT_TIME_S": str(wait), "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--num-cpus=1", f"--port={gcs}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--ray-client-server-port={client_port}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={rt_env}", f"--metrics-export-port={metrics}", f"--node-manager-port={nm}",
         f"--object-manager-port={om}", f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dash}"
        client = None

        def up():
            nonlocal client
            try:
                client = JobSubmissionClient(address)
                return True
            except Exception:
                return False
        _wait_for(up, 180, "the Ray head's job server")
        script = tmp_path / "job.py"
        script.write_text(JOB)
        sid = None

        def submitted():
            # The job server answers before the head's agent registers ("No available agent"), longer so
            # on a loaded machine: keep asking.
            nonlocal sid
            try:
                sid = client.submit_job(entrypoint=f"{sys.executable} {script} {tmp_path}")
                return True
            except RuntimeError as e:
                if "No available agent" not in str(e):
                    raise
                return False
        _wait_for(submitted, 180, "the Ray head's agent to take a job")
        _wait_for(lambda: (tmp_path / "started").exists(), 120, "the job to start")
        t_stop = time.monotonic()
        client.stop_job(sid)
        _wait_for(lambda: client.get_job_status(sid) in (JobStatus.STOPPED, JobStatus.FAILED,
                                                           JobStatus.SUCCEEDED), 120, "the job to stop")
        assert (tmp_path / "checkpointed").exists(), "the job was killed before its 6 s shutdown finished"
        assert time.monotonic() - t_stop >= 5.5
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
