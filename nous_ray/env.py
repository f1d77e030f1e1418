"""The environment the CPU stack needs, in one place (the Makefile exports the same).

Entry points call :func:`apply_stack_env` before importing torch, vLLM or Ray; explicit settings in
the caller's environment win. :func:`actor_env` is what Ray actors inherit through the runtime env.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stack_env(root: Path = ROOT) -> dict[str, str]:
    return {
        # A job downloads nothing: launch/prefetch.py fetches the model and data before it, onto
        # storage every node sees, and the job reads those local folders (nous_ray/inputs.py).
        "HF_HUB_OFFLINE": "1",
        "RAY_AUTH_MODE": "disabled",  # Ray 2.60 may turn on token auth for local clusters
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # in-process engine: weights load in place
        "VLLM_HOST_IP": "127.0.0.1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        # The first generation compiles kernels once; keep the cache with the project.
        "VLLM_CACHE_ROOT": str(root / ".cache" / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / ".cache" / "inductor"),
    }


# Keys apply_stack_env set because the caller's environment had none (not the caller's choice).
_DEFAULTED: set[str] = set()
# Right for one machine, wrong on a cluster: vLLM must advertise the node's own address there.
_ONE_MACHINE_ONLY = ("VLLM_HOST_IP",)


def apply_stack_env() -> None:
    for key, value in stack_env().items():
        if key not in os.environ:
            os.environ[key] = value
            _DEFAULTED.add(key)


ACTOR_ENV_KEYS = ("HF_HUB_OFFLINE", "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_HOST_IP", "VLLM_CACHE_ROOT",
                  "TORCHINDUCTOR_CACHE_DIR", "TOKENIZERS_PARALLELISM", "VLLM_CPU_KVCACHE_SPACE")


def actor_env(cluster: bool = False) -> dict[str, str]:
    """Environment for every actor: the stack's settings and the project on PYTHONPATH. ``cluster``:
    the actors may run on other machines, so one-machine defaults stay out."""
    env = {k: os.environ[k] for k in ACTOR_ENV_KEYS if k in os.environ
           and not (cluster and k in _ONE_MACHINE_ONLY and k in _DEFAULTED)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def setup_logging() -> None:
    """Our INFO lines, and only warnings from the chatty libraries of the stack."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("vllm", "ray", "transformers", "datasets", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def local_num_cpus() -> int:
    """The CPUs a local cluster of :func:`start_ray` offers."""
    return max(2, os.cpu_count() or 2)


def start_ray(ray_address: str | None = None, dashboard: bool = True):
    """Join the cluster this runs in (``ray job submit`` sets RAY_ADDRESS), else start a local one."""
    import ray

    address = ray_address or os.environ.get("RAY_ADDRESS")
    env = actor_env(cluster=bool(address))
    if address:  # and out of this process, which hands its environment to some actors itself
        for key in _ONE_MACHINE_ONLY:
            if key in _DEFAULTED:
                os.environ.pop(key, None)
    if address:
        ray.init(address=address, runtime_env={"env_vars": env})
    else:
        env.setdefault("OMP_NUM_THREADS", "1")  # actors share few cores
        # "local": a cluster of this run's own. Without it ray.init() joins the last cluster any
        # `ray start` (or test) left running on this machine.
        ray.init(address="local", num_cpus=local_num_cpus(), include_dashboard=dashboard,
                 log_to_driver=False, runtime_env={"env_vars": env})
    return ray
