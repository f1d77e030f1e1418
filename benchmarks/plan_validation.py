"""Does the planner predict a real run? The CPU default run, then the planner with rates measured here.

1. The CPU default run (``configs/tiny.yaml``: warm start, then RL steps) on real workers: vLLM-CPU
   rollout worker, FSDP2 learners over gloo, the local sandbox. Its mean step time is the reference;
   its response lengths, pass rates, prompt lengths and repeated programs are recorded (the workload,
   an input).
2. Each component alone on the same workers, now idle: decode step time at running batches of 8 to
   128 sequences (vLLM, fixed-length responses), prefill, a train step at two batch sizes, verifying
   programs that run 4 tests or 1, a weight sync (learner side and engine load).
3. The planner on the same config with those rates (``sim.*`` overrides, printed) predicts the mean
   step time; the last line is ``planner/real mean step time: X`` (goal: within 25%).

All roles share this machine's cores, with each other and with whatever else runs here. A sampler
process counts the runnable threads every 0.5 s: those of the roles (rollout worker, learner ranks,
verifier and its sandbox processes) and the rest (the driver, Ray, other users). The isolated timings
are turned into idle-machine ones with the rest's count at that moment, and the planner shares
``sim.host_cores`` among the roles and the rest's mean count during the run (``sim.host_background``).

    .venv/bin/python benchmarks/plan_validation.py [--steps 60]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nous_ray.env import apply_stack_env, start_ray  # noqa: E402

apply_stack_env()


ROLES = ("ray::RolloutWorker", "ray::LearnerActor", "ray::VerifierActor")


def sample_load(out_path: str, root: int, interval: float = 0.5) -> None:
    """Forever: ``monotonic runnable_threads role_threads`` per line, from /proc (a separate process,
    so the counting does not take the driver's time). Roles: processes under ``root`` (this benchmark)
    named as our actors, and their children (the sandbox's)."""
    me = os.getpid()
    with open(out_path, "a", buffering=1) as out:
        while True:
            t0 = time.monotonic()
            parent, running, roots = {}, {}, set()
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if f.read().split(b"\0")[0].decode(errors="replace").startswith(ROLES):
                            roots.add(int(pid))
                    n = 0
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        with open(f"/proc/{pid}/task/{tid}/stat") as f:
                            n += f.read().rsplit(")", 1)[1].split()[0] == "R"
                    running[int(pid)] = n
                except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                    continue

            def in_role(pid: int) -> bool:
                role = False
                for _ in range(64):
                    role = role or pid in roots
                    if pid == root:
                        return role
                    pid = parent.get(pid, 0)
                    if pid <= 1:
                        return False
                return False

            total = sum(running.values()) - running.get(me, 0)
            roles = sum(n for pid, n in running.items() if pid != me and in_role(pid))
            out.write(f"{t0:.3f} {total} {roles}\n")
            time.sleep(max(0.0, interval - (time.monotonic() - t0)))


class Load:
    """Runnable threads over time, from the sampler process."""

    def __init__(self, path: Path):
        self.path = path
        self.proc = subprocess.Popen([sys.executable, __file__, "--sample-load", str(path), "--root",
                                      str(os.getpid())])

    def other(self, a: float, b: float) -> float:
        """Mean runnable threads between monotonic times a and b that are not the roles' own."""
        rows = [tuple(map(float, line.split())) for line in self.path.read_text().splitlines() if line.strip()]
        vals = [total - roles for t, total, roles in rows if a <= t <= b]
        return statistics.fmean(vals) if vals else 0.0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def _t(coro_fn, repeats=3, load: Load | None = None, threads: float = 1.0, cores: float = 1.0):
    """Median wall time of ``repeats`` runs of ``await coro_fn()``; with ``load``, the time it would take
    on an idle machine (divided by the slowdown of ``threads`` among the other runnable ones)."""
    out = []
    for _ in range(repeats):
        t0 = time.monotonic()
        asyncio.run(coro_fn())
        t1 = time.monotonic()
        slow = max(1.0, (threads + load.other(t0, t1)) / cores) if load else 1.0
        out.append((t1 - t0) / slow)
    return statistics.median(out)


def _line(xs, ys):
    """Least-squares a, b of y = a + b x."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def fit_lognormal_censored(lengths: list[int], limits: list[int]) -> tuple[float, float]:
    """Median and sigma of a log-normal from lengths cut at their limits (``length == limit`` is cut):
    maximum likelihood on a grid, over the counts of each (length, cut) pair."""
    counts: dict = {}
    for n, lim in zip(lengths, limits):
        key = (lim, True) if n >= lim else (n, False)
        counts[key] = counts.get(key, 0) + 1
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    best = None
    for mu in [math.log(4) + k * 0.02 for k in range(200)]:
        for sigma in [0.05 + k * 0.02 for k in range(100)]:
            ll = 0.0
            for (n, cut), c in counts.items():
                z = (math.log(n) - mu) / sigma
                ll += c * (math.log(max(1e-300, 1 - phi(z))) if cut else -0.5 * z * z - math.log(sigma * n))
            if best is None or ll > best[0]:
                best = (ll, mu, sigma)
    return math.exp(best[1]), best[2]


def fit_beta(rates: list[float]) -> tuple[float, float]:
    """Beta(alpha, beta) with the mean and variance of the per-problem pass rates."""
    m = statistics.fmean(rates)
    v = max(1e-4, statistics.pvariance(rates))
    common = max(0.05, m * (1 - m) / v - 1)
    return max(1e-3, m * common), max(1e-3, (1 - m) * common)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="RL steps of the real run (the default's 60)")
    ap.add_argument("--sample-load", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sample_load:
        sample_load(args.sample_load, args.root)
        return

    from actors.placement import Placement
    from launch.train import build_workers, run, shutdown_workers
    from nous_ray.config import load_config
    from nous_ray.metrics import read_metrics
    from nous_ray.models.tiny import resolve_model_path
    from nous_ray.samples import GenerationRequest
    from nous_ray.sim.cost import CostModel
    from nous_ray.sim.planner import simulate
    from nous_ray.verify.extract import extract_code

    tmp = Path(tempfile.mkdtemp(prefix="nous-planval-"))
    base = [f"trainer.steps={args.steps}", f"run.run_dir={tmp / 'run'}", "trainer.checkpoint_every=0"]
    cfg = load_config(None, base)
    model_path = resolve_model_path(cfg.model, tmp)
    ray = start_ray(dashboard=False)
    placement = Placement(cfg)
    workers = build_workers(cfg, model_path, placement)
    load = Load(tmp / "load.txt")
    cores = float(len(os.sched_getaffinity(0)))

    # ---- 1. the real run, recording its workload ---------------------------------------------
    lengths, limits, by_problem, last_batch, prompt_lens, distinct = [], [], {}, [], [], []
    generate, verify, train = workers.rollout.generate, workers.verifiers.verify_group, workers.learner.train_step

    async def rec_generate(i, requests, n, sampling, max_tokens):
        out = await generate(i, requests, n, sampling, max_tokens)
        if n == cfg.rollout.group_size and sampling.get("temperature") == cfg.rollout.sampling.temperature:
            lengths.extend(len(s.response_ids) for s in out)
            limits.extend([max_tokens] * len(out))
            prompt_lens.extend(len(q.prompt_ids) for q in requests)
        return out

    async def rec_verify(problem, completions):
        out = await verify(problem, completions)
        by_problem.setdefault(problem.id, []).extend(v["verdict"] == "accepted" for v in out)
        codes = [c for c in map(extract_code, completions) if c is not None]
        if len(codes) > 1:  # the judge runs a group's repeated programs once
            distinct.append((len(set(codes)) - 1) / (len(codes) - 1))
        return out

    async def rec_train(samples, temperature=1.0, policy_version=None):
        last_batch[:] = samples
        return await train(samples, temperature, policy_version)

    workers.rollout.generate, workers.verifiers.verify_group = rec_generate, rec_verify
    workers.learner.train_step = rec_train
    rl_started = []

    def progress(line: str) -> None:
        if line.startswith("step ") and not rl_started:
            rl_started.append(time.monotonic())

    t0 = time.monotonic()
    run(cfg, tmp / "run", workers, model_path, progress=progress)
    t_end = time.monotonic()
    background = load.other(rl_started[0], t_end)
    print(f"real run: {args.steps} RL steps in {t_end - t0:.0f} s (warm start included); {background:.1f} "
          f"other runnable threads on {cores:g} cores during the RL steps", flush=True)
    workers.rollout.generate, workers.verifiers.verify_group = generate, verify
    workers.learner.train_step = train
    rows = [r for r in read_metrics(tmp / "run") if "time_step_s" in r]
    real = statistics.fmean(r["time_step_s"] for r in rows[1:])

    # ---- 2. each component alone -------------------------------------------------------------
    from nous_ray.data import load_problems

    problems = load_problems(cfg.data.train)
    prompt = [1] * round(statistics.fmean(prompt_lens))
    n = cfg.rollout.group_size

    def gen(groups, max_tokens):
        reqs = [GenerationRequest(k, "p", prompt) for k in range(groups)]
        return lambda: workers.rollout.generate(0, reqs, n, {"temperature": 1.0, "ignore_eos": True}, max_tokens)

    t_engine = dict(load=load, threads=1.0, cores=cores)  # one engine thread
    batches, steps_s = [8, 32, 64, 128], []
    for b in batches:
        full, one = _t(gen(b // n, 48), **t_engine), _t(gen(b // n, 1), **t_engine)
        steps_s.append((full - one) / 47)
    a, per_seq = _line(batches, steps_s)
    one_1, one_16 = _t(gen(1, 1), **t_engine), _t(gen(16, 1), **t_engine)
    prefill_per_prompt = max(1e-6, (one_16 - one_1) / 15)

    half = last_batch[: len(last_batch) // 2]
    ranks = dict(load=load, threads=float(cfg.learner.num_ranks), cores=cores)
    t_half = _t(lambda: workers.learner.train_step(half, 1.0), **ranks)
    t_full = _t(lambda: workers.learner.train_step(last_batch, 1.0), **ranks)
    cost = CostModel.from_config(cfg)
    f_half, f_full = cost.train_flops([s.num_tokens for s in half]), cost.train_flops([s.num_tokens for s in last_batch])
    rate = (f_full - f_half) / max(1e-9, t_full - t_half)
    train_overhead = max(0.0, t_full - f_full / rate) / cfg.learner.minibatches

    def programs(good: bool, groups=16):
        async def go():
            calls = []
            for k in range(groups):
                p = problems[k % len(problems)]
                code = p.solutions[0] if good else "print(0)"
                texts = [f"```python\n{code}\n# {k}-{j}\n```" for j in range(n)]
                calls.append(workers.verifiers.verify_group(p, texts))
            return await asyncio.gather(*calls)
        return go

    slots = cost.verify_slots()
    good = asyncio.run(programs(True)())
    tests_good = statistics.fmean(v["tests_run"] for g in good for v in g)
    tests_bad = statistics.fmean(v["tests_run"] for g in asyncio.run(programs(False)()) for v in g)
    sandbox = dict(load=load, threads=float(slots), cores=cores)
    per_prog_good = _t(programs(True), **sandbox) * slots / (16 * n)
    per_prog_bad = _t(programs(False), **sandbox) * slots / (16 * n)
    test_s = max(1e-6, (per_prog_good - per_prog_bad) / max(1e-9, tests_good - tests_bad))
    start_s = max(0.0, per_prog_bad - tests_bad * test_s)

    learner_side, engine_side = [], []

    async def one_sync(version):
        t = time.monotonic()
        loads = await workers.sync.publish(version)  # the trainer waits for this much
        t1 = time.monotonic()
        learner_side.append((t1 - t) / max(1.0, (cfg.learner.num_ranks + load.other(t, t1)) / cores))
        await asyncio.gather(*loads.values())  # then each engine loads (between requests)
        t2 = time.monotonic()
        engine_side.append((t2 - t1) / max(1.0, (1 + load.other(t1, t2)) / cores))

    for v in range(3):
        asyncio.run(one_sync(10_000 + v))
    sync_learner, sync_engine = statistics.median(learner_side), statistics.median(engine_side)
    load.stop()
    shutdown_workers(workers)
    placement.remove()
    ray.shutdown()

    # ---- 3. the planner with these rates -------------------------------------------------------
    median, sigma = fit_lognormal_censored(lengths, limits)
    alpha, beta = fit_beta([statistics.fmean(v) for v in by_problem.values()])
    bytes_ = cost.weight_bytes
    sim = {
        "sim.gpu": "cpu", "sim.hbm_tb_s": 1e3, "sim.decode_mfu": 1e6,  # measured step = overheads alone
        "sim.decode_step_overhead_s": max(0.0, a), "sim.decode_seq_overhead_s": max(0.0, per_seq),
        "sim.peak_tflops": rate / cfg.learner.num_ranks / 1e12, "sim.learner_mfu": 1.0,
        "sim.prefill_mfu": cost.prefill_s(len(prompt)) * cfg.sim.prefill_mfu * cost.gpu.peak_tflops * 1e12
        / (rate / cfg.learner.num_ranks) / prefill_per_prompt,
        "sim.train_step_overhead_s": train_overhead,
        "sim.container_start_s": start_s, "sim.test_time_s": test_s, "sim.timeout_frac": 0.0,
        "sim.tests_per_problem": 4, "sim.num_problems": len(problems),
        "sim.sync_bandwidth_gb_s": 1e3, "sim.sync_overhead_s": max(0.0, sync_learner - bytes_ / 1e12),
        "sim.engine_load_gb_s": bytes_ / 1e9 / max(1e-6, sync_engine),
        "sim.response_len_median": median, "sim.response_len_sigma": sigma,
        "sim.prompt_tokens": len(prompt), "sim.pass_alpha": alpha, "sim.pass_beta": beta,
        "sim.distinct_programs": statistics.fmean(distinct) if distinct else 1.0,
        "sim.host_cores": cores, "sim.host_background": background,
    }
    plan_cfg = load_config(None, base + [f"{k}={v}" for k, v in sim.items()])
    rep = simulate(plan_cfg, args.steps)

    print("\nmeasured components (this machine, each alone; as on an idle machine):")
    print(f"  decode step {1e3 * a:.2f} ms + {1e3 * per_seq:.3f} ms per running sequence "
          f"(batch {batches}: {[round(1e3 * s, 2) for s in steps_s]} ms); prefill {1e3 * prefill_per_prompt:.2f} ms "
          f"per {len(prompt)}-token prompt")
    print(f"  train step: {t_half:.3f} s ({len(half)} samples), {t_full:.3f} s ({len(last_batch)}): "
          f"{rate / 1e9:.2f} GFLOP/s + {train_overhead:.3f} s per optimizer step")
    print(f"  verification: {start_s * 1e3:.1f} ms per program + {test_s * 1e3:.2f} ms per test, {slots} at once")
    print(f"  weight sync: learner side {sync_learner:.3f} s, then engine load {sync_engine:.3f} s")
    print(f"  workload: responses log-normal median {median:.1f} sigma {sigma:.2f} (cut at {sorted(set(limits))}), "
          f"pass rate Beta({alpha:.2f}, {beta:.2f}), prompts {len(prompt)} tokens, "
          f"{sim['sim.distinct_programs']:.2f} of a group's programs distinct")
    print("  planner overrides: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in sim.items()))
    print(f"\n{'':24} {'real':>8} {'planner':>8}")
    steady = rows[1:]
    for name, key, planned in [
        ("step s", "time_step_s", rep["step_time_s"]),
        ("train s", "time_train_s", rep["step"]["train_s"]),
        ("weight sync s", "time_sync_s", rep["step"]["sync_s"]),
        ("wait generation s", "learner_wait_generation_s", rep["step"]["wait_generation_s"]),
        ("wait verification s", "learner_wait_verification_s", rep["step"]["wait_verification_s"]),
        ("filtered groups/step", "filtered_groups", rep["samples"]["filtered_groups_per_step"]),
        ("response tokens", "response_len_mean", rep["samples"]["response_len_mean"]),
    ]:
        print(f"{name:24} {statistics.fmean(r[key] for r in steady):8.3f} {planned:8.3f}")
    print(f"\nplanner/real mean step time: {rep['step_time_s'] / real:.3f} "
          f"(planner {rep['step_time_s']:.3f} s, real {real:.3f} s, steps 2-{len(rows)})")


if __name__ == "__main__":
    main()
