"""The pipeline on real workers (vLLM-CPU rollout worker, FSDP2 learners, the local sandbox).

Default: does the pipeline hide verification? Runs the real driver for a few steps per setting, with
an artificial delay added to every verification in the local backend (``verifier.debug_delay_s``),
and prints the learners' idle fraction for each delay next to the no-delay baseline measured in the
same run. Expected: idle stays flat while verifying a batch takes less time than generating one, and
rises once verification becomes the slower stage.

    .venv/bin/python benchmarks/pipeline.py [--steps 8] [--delays 0 0.05 0.1 0.2 0.4]

``--weight-update``: in-flight weight updates against draining, on a long-tailed response-length mix
(every response's length forced: 95% uniform in [median/2, 3 median/2], the top 5% ``--long-factor``
times the median; the same lengths in both modes). Each mode gets a fresh rollout engine and runs
the real driver; it prints engine busy fraction (time in engine steps), generated tokens/s, learner
idle fraction and token staleness per mode, and last the line ``inflight/drain tokens_per_s ratio: X``.

    .venv/bin/python benchmarks/pipeline.py --weight-update [--steps 10] [--median 32] [--rounds 1]
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


def _start(overrides: list[str], prefix: str):
    """The config, a scratch folder, the tiny model in it, a local Ray cluster and the placement."""
    from actors.placement import Placement
    from nous_ray.config import load_config
    from nous_ray.models.tiny import resolve_model_path

    cfg = load_config(None, overrides)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    model_path = resolve_model_path(cfg.model, tmp)
    ray = start_ray(dashboard=False)
    return cfg, tmp, model_path, ray, Placement(cfg)


class LengthMix:
    """The rollout pool as the driver sees it, with every response's length forced (``min_tokens`` =
    ``max_tokens``, EOS ignored): one call per response, its length drawn from (group id, index), so
    both modes generate the same lengths."""

    def __init__(self, pool, median: int, long_factor: float, long_frac: float, seed: int = 0):
        self.pool, self.median, self.long_factor, self.long_frac, self.seed = pool, median, long_factor, long_frac, seed

    @property
    def size(self) -> int:
        return self.pool.size

    def length(self, group_id: int, j: int) -> int:
        import random

        rng = random.Random(f"{self.seed}/{group_id}/{j}")
        if rng.random() < self.long_frac:
            return int(self.long_factor * self.median)
        return rng.randint(self.median // 2, 3 * self.median // 2)

    async def generate(self, i, requests, n, sampling, max_tokens):
        calls = []
        for q in requests:
            for j in range(n):
                length = self.length(q.group_id, j)
                calls.append(self.pool.generate(i, [q], 1, {**sampling, "min_tokens": length, "ignore_eos": True},
                                                length))
        return [s for g in await asyncio.gather(*calls) for s in g]

    async def replace(self, i):
        await self.pool.replace(i)

    async def score(self, i, prompt_ids, response_ids):
        return await self.pool.score(i, prompt_ids, response_ids)


def weight_update_benchmark(args) -> None:
    """Draining vs in-flight weight updates on a long-tailed length mix (see the module doc)."""
    from actors.learner import Learner
    from actors.pools import RolloutPool, VerifierPool
    from actors.weight_sync import WeightSync
    from launch.train import prepare_inputs
    from nous_ray.config import load_config
    from nous_ray.driver.loop import Driver
    from nous_ray.driver.workers import Workers
    from nous_ray.metrics import read_metrics

    long_len = int(args.long_factor * args.median)
    # Every group trains (forced lengths end "length": overlong filtering off), so both modes run the
    # same steps; the context must hold a prompt and the longest response.
    # 8 prompts per step (the tiny default's 16 halved) keep the learner's step short, so generation is
    # the slower stage, as in the recipe (the planner's 14B learners idle half the time).
    base = BASE + ["algo.overlong_filter=false", f"rollout.max_model_len={long_len + 128}",
                   f"trainer.max_off_policy_steps={args.bound}", f"trainer.prompts_per_step={args.prompts_per_step}"]
    cfg, tmp, model_path, ray, placement = _start(base + [f"trainer.steps={args.steps}"], "nous-inflight-")
    learner = Learner.for_run(cfg, model_path, placement)
    verifiers = VerifierPool(cfg, placement)
    problems, prompt_ids, _ = prepare_inputs(cfg, model_path)

    totals = {m: {"tokens": 0.0, "wall": 0.0, "busy": 0.0, "idle": [], "tok_stale": [], "tok_stale_max": 0,
                  "stale_max": 0, "spanning": [], "steps": 0} for m in ("drain", "inflight")}
    done_steps = 0
    per_round = []  # tokens/s per mode, per round (the machine's load changes between rounds)
    for r in range(args.rounds):
        per_round.append({})
        for mode in ("drain", "inflight"):
            cfg_m = load_config(None, base + [f"trainer.steps={done_steps + args.steps}",
                                              f"rollout.weight_update={mode}"])
            rollout = RolloutPool(cfg_m, model_path, placement)
            sync = WeightSync(cfg_m, learner, rollout)
            mix = LengthMix(rollout, args.median, args.long_factor, args.long_frac, seed=r)
            run_dir = tmp / f"{mode}_{r}"
            driver = Driver(cfg_m, problems, prompt_ids, Workers(mix, verifiers, learner, sync), run_dir,
                            progress=lambda line: None)
            driver.step = done_steps
            marks = {}

            async def mark_after_first_step(driver=driver, rollout=rollout, marks=marks):
                # Steady state: from the end of the first step (the engine warm, the pipeline full).
                while driver.step < done_steps + 1:
                    await asyncio.sleep(0.01)
                stats = await asyncio.wrap_future(rollout.workers[0].stats.remote().future())
                marks["t"], marks["step_s"] = asyncio.get_running_loop().time(), stats["step_s"]

            async def main(driver=driver, rollout=rollout, marks=marks):
                watch = asyncio.ensure_future(mark_after_first_step())
                await driver.run()
                watch.cancel()
                stats = await asyncio.wrap_future(rollout.workers[0].stats.remote().future())
                return asyncio.get_running_loop().time() - marks["t"], stats["step_s"] - marks["step_s"]

            wall, busy = asyncio.run(main())
            done_steps += args.steps
            rollout.shutdown()
            rows = [row for row in read_metrics(run_dir) if "reward_mean" in row][1:]
            t = totals[mode]
            t["tokens"] += sum(row["tokens_per_s"] * row["time_step_s"] for row in rows)
            t["wall"] += wall
            t["busy"] += busy
            t["idle"] += [row["learner_idle_frac"] for row in rows]
            t["tok_stale"] += [row["token_staleness_mean"] for row in rows]
            t["tok_stale_max"] = max(t["tok_stale_max"], max(row["token_staleness_max"] for row in rows))
            t["stale_max"] = max(t["stale_max"], max(row["staleness_max"] for row in rows))
            t["spanning"] += [row["spanning_frac"] for row in rows]
            t["steps_s"] = t.get("steps_s", 0.0) + sum(row["time_step_s"] for row in rows)
            t["steps"] += len(rows)
            per_round[-1][mode] = sum(row["tokens_per_s"] * row["time_step_s"] for row in rows) / \
                sum(row["time_step_s"] for row in rows)
            print(f"round {r} {mode} done: {len(rows)} steps in {wall:.1f} s", file=sys.stderr, flush=True)

    verifiers.shutdown()
    learner.shutdown()
    placement.remove()
    ray.shutdown()

    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"\nweight updates: {args.rounds} round(s) x {args.steps} steps per mode (first step of each left out), "
          f"{cfg.trainer.prompts_per_step} groups x {cfg.rollout.group_size} responses per step, staleness bound "
          f"{args.bound}; response lengths: 95% uniform in [{args.median // 2}, {3 * args.median // 2}], "
          f"{100 * args.long_frac:.0f}% {long_len} ({args.long_factor:g}x the median {args.median})")
    print(f"{'mode':>9} {'step s':>7} {'tokens/s':>9} {'engine busy':>11} {'learner idle':>12} "
          f"{'tok stale mean':>14} {'tok stale max':>13} {'spanning':>8}")
    tps = {}
    for mode, t in totals.items():
        tps[mode] = t["tokens"] / t["steps_s"]
        print(f"{mode:>9} {t['steps_s'] / t['steps']:7.2f} {tps[mode]:9.0f} {t['busy'] / t['wall']:11.3f} "
              f"{mean(t['idle']):12.3f} {mean(t['tok_stale']):14.3f} {t['tok_stale_max']:13d} "
              f"{mean(t['spanning']):8.3f}")
    print("per round: " + ", ".join(f"{p['drain']:.0f} -> {p['inflight']:.0f} tokens/s "
                                    f"({p['inflight'] / p['drain']:.2f}x)" for p in per_round))
    bound_kept = all(t["stale_max"] <= args.bound for t in totals.values())
    print(f"staleness bound {args.bound} kept in both modes: {bound_kept}")
    print(f"inflight/drain tokens_per_s ratio: {tps['inflight'] / tps['drain']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--delays", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.4])
    ap.add_argument("--weight-update", action="store_true", help="drain vs inflight on a long-tailed length mix")
    ap.add_argument("--median", type=int, default=32, help="median forced response length (tokens)")
    ap.add_argument("--long-factor", type=float, default=8.0, help="long responses are this times the median")
    ap.add_argument("--long-frac", type=float, default=0.05, help="fraction of long responses")
    ap.add_argument("--bound", type=int, default=2, help="trainer.max_off_policy_steps")
    ap.add_argument("--rounds", type=int, default=1, help="drain, inflight alternations")
    ap.add_argument("--prompts-per-step", type=int, default=8, help="trainer.prompts_per_step")
    args = ap.parse_args()
    if args.weight_update:
        weight_update_benchmark(args)
        return

    from actors.learner import Learner
    from actors.pools import RolloutPool, VerifierPool
    from actors.weight_sync import WeightSync
    from launch.train import prepare_inputs
    from nous_ray.config import load_config
    from nous_ray.driver.loop import Driver
    from nous_ray.driver.workers import Workers
    from nous_ray.metrics import read_metrics

    cfg, tmp, model_path, ray, placement = _start(BASE + [f"trainer.steps={args.steps}"], "nous-pipeline-")
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
