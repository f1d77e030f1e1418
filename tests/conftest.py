"""Shared test set-up: the environment the CPU stack needs, and one local Ray cluster per session."""

import pytest

from nous_ray.env import actor_env, apply_stack_env

apply_stack_env()  # same as the Makefile, so a bare `pytest` works too


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the whole session (starting one costs seconds; tests share it)."""
    import ray

    if not ray.is_initialized():
        # address="local": a cluster of the session's own, never the last one `ray start` (or another
        # test run) left on this machine.
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {**actor_env(), "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
