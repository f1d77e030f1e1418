"""Train: ``python launch/train.py [--config FILE] [key=value ...]``.

Joins the Ray cluster it runs in (``ray job submit`` sets RAY_ADDRESS), else starts a local one;
places rollout workers, verifiers and learners; runs the asynchronous driver; prints one line per
step and a final summary. Metrics: ``<run_dir>/metrics.jsonl``, TensorBoard in ``<run_dir>/tb``, and
the Ray dashboard. Ctrl-C (or ``ray job stop``: SIGTERM) writes a checkpoint before exiting; running
the same command again resumes from it (``trainer.resume=auto``).

Start-up checks stop a run that could not reach step 1 with one line that names the problem and the
fix (exit code 2). Before Ray starts: the model and data at their local paths (fetched before the job
by ``launch/prefetch.py``); every row of the training (and periodic evaluation) data, and every
prompt's room in ``rollout.max_model_len``; the checkpoint ``trainer.resume`` would resume from; on a
local cluster, that the placement fits this machine. Then, before any engine or learner rank starts:
the placement on the cluster, the model on every worker's node, a run directory every learner rank's
node shares with the driver, the verifier (Modal: one call of the deployed judge from every verifier
actor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nous_ray.env import apply_stack_env, setup_logging, start_ray  # noqa: E402

apply_stack_env()

from actors.placement import PlacementError  # noqa: E402
from nous_ray.config import Config, ConfigError, load_config, save_config  # noqa: E402
from nous_ray.driver.checkpoint import ResumeError, find_resume_point  # noqa: E402
from nous_ray.inputs import (  # noqa: E402
    BadInputs,
    MissingInputs,
    check_prompt_room,
    load_eval_problems,
    load_train_problems,
    prefetch_command,
    require_inputs,
)
from nous_ray.run_storage import RunDirError, resolve_run_dir  # noqa: E402
from nous_ray.verify.modal_client import ModalUnavailable  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (default: configs/tiny.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.steps=20")
    return p.parse_args(argv)


def prepare_inputs(cfg: Config, tokenizer: str):
    """Problems, their prompt token ids, and the supervised warm-start examples; :class:`BadInputs` for
    data that cannot be trained on (a malformed row, no problems, a prompt with no room for a response).
    With ``data.skip_malformed`` the loaders log each row they leave out, and the count."""
    problems, _ = load_train_problems(cfg)  # before transformers loads: a bad row fails in a second
    from transformers import AutoTokenizer

    from nous_ray.data import build_messages, render_prompt
    from nous_ray.samples import Sample

    tok = AutoTokenizer.from_pretrained(tokenizer)
    prompt_ids = [tok(render_prompt(tok, build_messages(p, cfg.data.prompt_format)), add_special_tokens=False)
                  ["input_ids"] for p in problems]
    check_prompt_room(problems, prompt_ids, cfg.rollout.max_model_len, f"data.train={cfg.data.train}"
                      + (f" ({cfg.data.train_path})" if cfg.data.train_path else ""))
    sft = []
    if cfg.init.sft_steps > 0:
        for k, p in enumerate(problems):
            for sol in p.solutions:
                resp = tok(f"```python\n{sol}```", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                sft.append(Sample(problem_id=p.id, group_id=k, prompt_ids=prompt_ids[k], response_ids=resp,
                                  logprobs=[0.0] * len(resp), finish_reason="stop", version=0))
    return problems, prompt_ids, sft


def prepare_eval_set(cfg: Config, tokenizer: str):
    """The periodic evaluation's problems and prompt ids (None without ``eval.every_steps``); the
    prompts must fit the training engines, which the evaluation runs on."""
    if not cfg.eval.every_steps:
        return None
    problems = load_eval_problems(cfg)
    from transformers import AutoTokenizer

    from nous_ray.eval import encode_prompts, prompt_style

    ids = encode_prompts(AutoTokenizer.from_pretrained(tokenizer), problems, prompt_style(cfg),
                         cfg.eval.enable_thinking)
    check_prompt_room(problems, ids, cfg.rollout.max_model_len, f"eval.dataset={cfg.eval.dataset} (periodic "
                      f"evaluation{', ' + cfg.eval.path if cfg.eval.path else ''})")
    return problems, ids


def check_local_placement(cfg: Config) -> None:
    """Without a cluster to join, the placement must fit this machine (CPU-only requests; a GPU count
    is Ray's to detect, and the placement is checked again once Ray runs)."""
    import os

    from actors.placement import check_fits, plan_placement
    from nous_ray.env import local_num_cpus

    if cfg.run.ray_address or os.environ.get("RAY_ADDRESS"):
        return
    requests = plan_placement(cfg)
    if not any(q.total("GPU") for q in requests):
        try:
            check_fits(requests, [{"CPU": float(local_num_cpus())}])
        except PlacementError as e:
            raise PlacementError(f"{e}; this machine's local Ray cluster is all there is (no run.ray_address, "
                                 f"no RAY_ADDRESS): ask for fewer workers or fewer CPUs each") from None


def build_workers(cfg: Config, model_path: str, placement):
    """Rollout workers, verifiers and learners in their placement groups, and the weight sync."""
    import ray

    from actors.learner import Learner
    from actors.pools import RolloutPool, VerifierPool
    from actors.weight_sync import WeightSync
    from nous_ray.driver.workers import Workers

    # Verifiers first: their start-up check (Modal credentials, the deployed judge) fails in seconds,
    # before minutes of engine and learner start-up.
    verifiers = VerifierPool(cfg, placement)
    try:
        ray.get([a.check.remote() for a in verifiers.actors])
    except Exception:
        verifiers.shutdown()
        raise
    rollout = RolloutPool(cfg, model_path, placement)
    learner = Learner.for_run(cfg, model_path, placement)
    return Workers(rollout=rollout, verifiers=verifiers, learner=learner, sync=WeightSync(cfg, learner, rollout))


def shutdown_workers(workers) -> None:
    for part in (workers.rollout, workers.learner, workers.verifiers):
        getattr(part, "shutdown", lambda: None)()


def run(cfg: Config, run_dir: Path, workers, model_path: str, inputs, eval_set=None, progress=print) -> dict:
    """One training run on already-started workers, with the inputs of :func:`prepare_inputs` and
    :func:`prepare_eval_set`; returns the summary (also in summary.json)."""
    from nous_ray.driver.loop import Driver

    t0 = time.monotonic()
    problems, prompt_ids, sft = inputs
    progress(f"run dir {run_dir} | model {model_path} | {len(problems)} problems | "
             f"loss {cfg.algo.loss} | {cfg.trainer.steps} steps")
    driver = Driver(cfg, problems, prompt_ids, workers, run_dir, sft_examples=sft, progress=progress,
                    eval_set=eval_set)
    summary = asyncio.run(driver.run())
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    c = summary["counters"]
    progress(f"done: {summary['step']} steps in {summary['wall_s']} s | samples generated {c['generated']}, "
             f"trained {c['trained']}, filtered {c['filtered']}, stale {c['dropped_stale']}, "
             f"infra {c['dropped_infra']}, in flight at the end {summary['pending']} | "
             f"metrics {run_dir / 'metrics.jsonl'}")
    return summary


STARTUP_ERRORS = (MissingInputs, BadInputs, ResumeError, PlacementError, RunDirError, ModalUnavailable)


def startup_error(e: BaseException) -> BaseException | None:
    """The start-up check failure behind ``e`` (raised here or inside an actor), else None."""
    cause = getattr(e, "cause", None) or e  # a RayTaskError carries the actor's exception as .cause
    return cause if isinstance(cause, STARTUP_ERRORS) else None


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM before the driver runs: unwind, shut the workers down


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    fetch_command = prefetch_command(args.config, args.overrides)
    from nous_ray.models.tiny import resolve_model_path, tokenizer_path

    # Everything that can be checked without Ray is, before Ray starts: seconds, not a minute of
    # actors starting up before a traceback.
    try:
        run_dir = resolve_run_dir(cfg.run.run_dir)
        require_inputs(cfg, fetch_command)
        find_resume_point(run_dir, cfg.trainer.resume)
        check_local_placement(cfg)
        inputs = prepare_inputs(cfg, tokenizer_path(cfg.model))
        eval_set = prepare_eval_set(cfg, tokenizer_path(cfg.model))
    except STARTUP_ERRORS as e:
        print(f"start-up error: {e}", file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    model_path = resolve_model_path(cfg.model, run_dir)

    from actors.node_check import check_nodes
    from actors.placement import Placement

    signal.signal(signal.SIGTERM, _interrupt)  # the driver installs its own (checkpoint, then exit)
    ray = start_ray(cfg.run.ray_address)
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}", flush=True)
    placement = workers = None
    try:
        placement = Placement(cfg)
        check_nodes(placement, run_dir, model_path, fetch_command)
        workers = build_workers(cfg, model_path, placement)
        run(cfg, run_dir, workers, model_path, inputs, eval_set, progress=lambda line: print(line, flush=True))
    except KeyboardInterrupt:  # before the driver took over the signals: nothing trained, nothing to save
        print("interrupted while starting the workers; no step was trained", file=sys.stderr)
        return 130
    except Exception as e:
        if (cause := startup_error(e)) is None:
            raise
        print(f"start-up error: {cause}", file=sys.stderr)
        return 2
    finally:
        if workers is not None:
            shutdown_workers(workers)
        if placement is not None:
            placement.remove()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
