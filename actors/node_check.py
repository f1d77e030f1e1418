"""Start-up checks on the nodes the workers will run on, before any engine or learner rank starts.

One small Ray task in every learner and rollout bundle of the placement, so on the very node each
worker will use: every learner bundle answers the run directory's probe (its ranks write checkpoint
shards there; see :mod:`nous_ray.run_storage`), and every bundle checks the model folder is there (a
node without it would fail minutes later, deep inside vLLM or transformers). Failures come back as
one error naming each node and the fix.
"""

from __future__ import annotations

from pathlib import Path

import ray

from nous_ray.inputs import MissingInputs, model_problem
from nous_ray.run_storage import ProbeAnswer, answer_probe, check_probe, write_probe


@ray.remote(num_cpus=0.01, max_retries=0)
def _check_here(run_dir: str | None, token: str, who: str, model_path: str) -> tuple[ProbeAnswer | None, str]:
    answer = answer_probe(run_dir, token, who) if run_dir else None
    why = model_problem(model_path)
    return answer, (f"{who} on {ray.util.get_node_ip_address()}: model folder {model_path!r}: {why}" if why else "")


def check_nodes(placement, run_dir: Path, model_path: str, fetch_command: str, timeout_s: float = 300.0) -> None:
    """Probe ``run_dir`` from every learner bundle and look for ``model_path`` from every learner and
    rollout bundle; raise :class:`~nous_ray.run_storage.RunDirError` or :class:`MissingInputs`."""
    token = write_probe(run_dir)
    refs = []
    for q in placement.requests:
        if q.role not in ("learner", "rollout"):
            continue
        for i in range(q.count):
            who = f"{q.role}-{i}"
            probe_dir = str(run_dir) if q.role == "learner" else None
            refs.append(_check_here.options(scheduling_strategy=placement.strategy_for(q.role, i))
                        .remote(probe_dir, token, who, model_path))
    results = ray.get(refs, timeout=timeout_s)
    check_probe(run_dir, token, [a for a, _ in results if a is not None])
    missing = [m for _, m in results if m]
    if missing:
        raise MissingInputs("inputs missing on the workers' nodes: " + "; ".join(missing)
                            + f". Put the model on storage every node mounts: {fetch_command}")
