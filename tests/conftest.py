"""Shared test set-up: the environment the CPU stack needs, and one local Ray cluster per session."""

import pytest

from nous_ray.env import actor_env, apply_stack_env

apply_stack_env()  # same as the Makefile, so a bare `pytest` works too


def _init_local_ray():
    import ray

    # address="local": a cluster of the session's own, never the last one `ray start` (or another
    # test run) left on this machine.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {**actor_env(), "OMP_NUM_THREADS": "1"}})


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the whole session (starting one costs seconds; tests share it)."""
    import ray

    if not ray.is_initialized():
        _init_local_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def restart_local_ray():
    """For a test that needs another cluster: call it afterwards to bring the session's back."""
    return _init_local_ray
