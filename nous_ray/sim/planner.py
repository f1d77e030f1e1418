"""The planner: run the real :class:`~nous_ray.driver.loop.Driver` on stand-in workers for a config, on a
virtual clock, and report what each role does; try the other rollout/learner splits of the cluster.

:func:`simulate` returns one report (the JSON of ``launch/plan.py --json``); :func:`format_report`
prints it as a table. Steps after the first are averaged: the first fills the pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time

from nous_ray.config import Config
from nous_ray.sim.clock import SimClock, run_virtual
from nous_ray.sim.cost import CostModel, DoesNotFit
from nous_ray.sim.workers import make_sim_workers
from nous_ray.sim.workload import synthetic_problems


def sim_config(cfg: Config, steps: int) -> Config:
    """``cfg`` for a simulated run of ``steps`` RL steps: no warm start, periodic evaluation, checkpoints
    or sample files (they cost real time and say nothing about the split)."""
    return dataclasses.replace(
        cfg,
        trainer=dataclasses.replace(cfg.trainer, steps=steps, checkpoint_every=0, save_samples=0, resume="never"),
        eval=dataclasses.replace(cfg.eval, every_steps=0),
        init=dataclasses.replace(cfg.init, sft_steps=0),
        weight_sync=dataclasses.replace(cfg.weight_sync, verify_after_sync=False),
    )


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return sum(vals) / len(vals) if vals else 0.0


def simulate(cfg: Config, steps: int = 20) -> dict:
    """Simulate ``steps`` steps of ``cfg``; the report's figures are simulated seconds and fractions."""
    from nous_ray.driver.loop import Driver
    from nous_ray.metrics import read_metrics

    cost = CostModel.from_config(cfg)
    report = _static_report(cost)
    try:
        cost.check_fits()
    except DoesNotFit as e:
        return {**report, "fits": False, "error": str(e)}
    scfg = sim_config(cfg, steps)
    problems, prompt_ids = synthetic_problems(scfg.sim)
    t_real = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nous-plan-") as run_dir:
        async def main():
            workers = make_sim_workers(scfg, SimClock())
            driver = Driver(scfg, problems, prompt_ids, workers, run_dir, progress=lambda m: None)
            summary = await driver.run()
            return workers, summary

        quiet = logging.getLogger("nous_ray.driver")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # a simulated run's warnings are the stand-ins' business
        try:
            workers, summary = run_virtual(main())
        finally:
            quiet.setLevel(level)
        rows = [r for r in read_metrics(run_dir) if "time_step_s" in r]
    return {**report, **_measured(cost, workers, summary, rows), "fits": True, "error": None,
            "real_s": time.monotonic() - t_real}


def _static_report(cost: CostModel) -> dict:
    cfg = cost.cfg
    em, lm = cost.engine_memory(), cost.learner_memory()
    ctx = cfg.sim.prompt_tokens + cfg.sim.response_len_median
    return {
        "config": {"gpu": cost.gpu.name, "model": cost.model.name, "rollout_engines": cfg.rollout.num_workers,
                   "tensor_parallel_size": cost.tp, "learner_ranks": cfg.learner.num_ranks,
                   "prompts_per_step": cfg.trainer.prompts_per_step, "group_size": cfg.rollout.group_size,
                   "max_off_policy_steps": cfg.trainer.max_off_policy_steps,
                   "max_prompts_per_worker": cfg.rollout.max_prompts_per_worker,
                   "weight_update": cfg.rollout.weight_update},
        "memory_gb_per_gpu": cost.memory_gb_per_gpu(),
        "memory": {"learner": lm, "rollout": {**em, "kv_capacity_seqs": int(em["kv_capacity_tokens"] / ctx),
                                              "at_context_tokens": int(ctx)}},
    }


def _measured(cost: CostModel, workers, summary: dict, rows: list[dict]) -> dict:
    cfg = cost.cfg
    steady = rows[1:] or rows  # the first step fills the pipeline
    t0 = sum(r["time_step_s"] for r in rows[:1])
    T = sum(r["time_step_s"] for r in steady)
    step_s = T / max(1, len(steady))
    pool = workers.rollout
    engines = [e.records for e in pool.engines]
    recs = engines + pool.retired
    window = [t0, t0 + T]

    def within(intervals) -> float:
        return sum(max(0.0, min(b, window[1]) - max(a, window[0])) for a, b in intervals)

    busy, load = [], []
    for e in pool.engines:
        iv, loads = e.busy_intervals(now=window[1]), e.records.load_intervals
        overlap = sum(within([(max(a, c), min(b, d))]) for a, b in iv for c, d in loads if c < b and a < d)
        busy.append((within(iv) - overlap) / T if T else 0.0)  # an in-flight load pauses a busy engine
        load.append(within(loads) / T if T else 0.0)
    allowed = _mean(steady, "rollout_allowed_frac")
    total_tokens = sum(r.tokens for r in recs)
    wall_all = sum(r["time_step_s"] for r in rows)
    lw_gen = sum(r["learner_wait_generation_s"] for r in steady)
    lw_ver = sum(r["learner_wait_verification_s"] for r in steady)
    trained = sum(r.get("train/tokens", 0) for r in steady)
    v = workers.verifiers
    gpus = cost.gpus()
    return {
        "steps": len(rows),
        "step_time_s": step_s,
        "first_step_s": t0,
        "rollout": {
            "gpus": gpus["rollout"], "engines": len(engines),
            "busy_frac": sum(busy) / len(busy),
            "busy_frac_min": min(busy),
            # busy over what the staleness bound allows (its fair share of the window, less weight loads)
            "busy_frac_of_allowed": min(b / max(1e-9, allowed - ld) for b, ld in zip(busy, load)),
            "allowed_frac": allowed,
            "load_frac": sum(load) / len(load),
            "tokens_per_s": total_tokens / wall_all if wall_all else 0.0,
            "tokens_per_s_per_engine": total_tokens / wall_all / len(engines) if wall_all else 0.0,
            "mean_batch": sum(r.batch_s for r in recs) / max(1e-9, sum(r.busy_s for r in recs)),
            "preemptions": sum(r.preemptions for r in recs),
        },
        "learner": {
            "gpus": gpus["learner"], "ranks": cfg.learner.num_ranks,
            "idle_frac": (lw_gen + lw_ver) / T if T else 0.0,
            "idle_generation_frac": lw_gen / T if T else 0.0,
            "idle_verification_frac": lw_ver / T if T else 0.0,
            "tokens_per_s": trained / T if T else 0.0,
        },
        "verifier": {
            "slots": cost.verify_slots(),
            "busy_frac": v.program_s / (cost.verify_slots() * wall_all) if wall_all else 0.0,
            "group_s": _mean(steady, "time_verify_group_s"),
        },
        "weight_sync": {"gb": cost.weight_bytes / 1e9, "learner_s": cost.sync_learner_s(),
                        "engine_load_s": cost.sync_engine_s()},
        "step": {
            "wait_generation_s": lw_gen / max(1, len(steady)),
            "wait_verification_s": lw_ver / max(1, len(steady)),
            "train_s": _mean(steady, "time_train_s"),
            "sync_s": _mean(steady, "time_sync_s"),
            "generate_group_s": _mean(steady, "time_generate_call_s"),
        },
        "samples": {
            "trained_per_step": cfg.trainer.prompts_per_step * cfg.rollout.group_size,
            "response_len_mean": _mean(steady, "response_len_mean"),
            "truncated_frac": _mean(steady, "truncated_frac"),
            "filtered_groups_per_step": _mean(steady, "filtered_groups"),
            "staleness_mean": _mean(steady, "staleness_mean"),
            "stale_groups": summary["counters"]["stale_groups"],
        },
        "counters": summary["counters"],
        "pending": summary["pending"],
    }


def split_candidates(cfg: Config) -> list[Config]:
    """Every split of the cluster's GPUs with the learners on whole nodes and the rest in engines."""
    s, r, lc = cfg.sim, cfg.rollout, cfg.learner
    total = s.nodes * s.gpus_per_node
    per_engine, per_rank = max(1.0, r.gpus_per_worker), max(1.0, lc.gpus_per_rank)
    out = []
    for nodes in range(1, s.nodes):
        learner_gpus = nodes * s.gpus_per_node
        engines = int((total - learner_gpus) // per_engine)
        if engines < 1:
            continue
        out.append(dataclasses.replace(
            cfg, rollout=dataclasses.replace(r, num_workers=engines),
            learner=dataclasses.replace(lc, num_ranks=int(learner_gpus // per_rank))))
    return out


def compare_splits(cfg: Config, steps: int = 8) -> list[dict]:
    """Simulate each candidate split; the best (shortest step among those that fit) is marked."""
    rows = []
    for c in split_candidates(cfg):
        rep = simulate(c, steps)
        rows.append({"learner_gpus": int(c.learner.num_ranks * max(1.0, c.learner.gpus_per_rank)),
                     "rollout_gpus": int(c.rollout.num_workers * max(1.0, c.rollout.gpus_per_worker)),
                     "engines": c.rollout.num_workers, "learner_ranks": c.learner.num_ranks,
                     "fits": rep["fits"], "error": rep["error"],
                     "step_time_s": rep.get("step_time_s"),
                     "rollout_busy_frac": rep.get("rollout", {}).get("busy_frac"),
                     "learner_idle_frac": rep.get("learner", {}).get("idle_frac"),
                     "current": (c.rollout.num_workers, c.learner.num_ranks) == (cfg.rollout.num_workers,
                                                                                 cfg.learner.num_ranks)})
    fitting = [r for r in rows if r["fits"]]
    if fitting:
        best = min(fitting, key=lambda r: r["step_time_s"])
        best["best"] = True
        for r in fitting:  # steps vary by ~10% with the groups they get: a few of them 10% apart is a tie
            r["tie"] = r is not best and r["step_time_s"] <= 1.10 * best["step_time_s"]
    return rows


def format_report(rep: dict) -> str:
    c = rep["config"]
    lines = [f"plan: {c['model']} on {c['gpu']} | {c['rollout_engines']} engines (TP={c['tensor_parallel_size']}) + "
             f"{c['learner_ranks']} learner ranks | {c['prompts_per_step']} prompts x {c['group_size']} per step, "
             f"staleness {c['max_off_policy_steps']}, {c['max_prompts_per_worker']} prompts per engine at most, "
             f"weight update: {c['weight_update']}"]
    m, mem = rep["memory_gb_per_gpu"], rep["memory"]
    lr, ro = mem["learner"], mem["rollout"]
    lines += ["", "memory per GPU (GB)",
              f"  learner  {m['learner']:7.1f} = states {lr['states_gb']:.1f} + gathered layers {lr['gathered_gb']:.1f} "
              f"+ activations {lr['activations_gb']:.1f} + logits {lr['logits_gb']:.1f}",
              f"  rollout  {m['rollout']:7.1f} = weights {ro['weights_gb']:.1f} + reserved {ro['reserved_gb']:.1f} "
              f"+ KV cache {ro['kv_cache_gb']:.1f} = {ro['kv_capacity_tokens']:,} tokens "
              f"= {ro['kv_capacity_seqs']} sequences of {ro['at_context_tokens']:,}"]
    if not rep["fits"]:
        return "\n".join(lines + ["", f"error: {rep['error']}"])
    r, lg, v, st, sm = rep["rollout"], rep["learner"], rep["verifier"], rep["step"], rep["samples"]
    lines += [
        "",
        f"{'role':9} {'GPUs':>5} {'busy':>6} {'tokens/s':>10}  notes",
        f"{'rollout':9} {r['gpus']:5d} {r['busy_frac']:6.1%} {r['tokens_per_s']:10,.0f}  "
        f"{r['engines']} engines, {r['tokens_per_s_per_engine']:,.0f} tok/s each at a mean batch of "
        f"{r['mean_batch']:.0f} sequences; busy >= {r['busy_frac_of_allowed']:.1%} of what the staleness bound "
        f"allows ({r['allowed_frac']:.1%} of the time); loading weights {r['load_frac']:.1%}; "
        f"{r['preemptions']} preemptions",
        f"{'learner':9} {lg['gpus']:5d} {1 - lg['idle_frac']:6.1%} {lg['tokens_per_s']:10,.0f}  "
        f"idle {lg['idle_frac']:.1%}: waiting on generation {lg['idle_generation_frac']:.1%}, on verification "
        f"{lg['idle_verification_frac']:.1%}",
        f"{'verifier':9} {'-':>5} {v['busy_frac']:6.1%} {'':>10}  {v['slots']} programs at once; a group takes "
        f"{v['group_s']:.1f} s",
        "",
        f"step {rep['step_time_s']:.1f} s (first {rep['first_step_s']:.1f} s) = waiting on generation "
        f"{st['wait_generation_s']:.1f} + on verification {st['wait_verification_s']:.1f} + train {st['train_s']:.1f}"
        f" + weight sync {st['sync_s']:.1f} (learner side; each engine then loads for "
        f"{rep['weight_sync']['engine_load_s']:.2f} s)",
        f"a group generates in {st['generate_group_s']:.0f} s; responses {sm['response_len_mean']:,.0f} tokens, "
        f"{sm['truncated_frac']:.1%} truncated; {sm['filtered_groups_per_step']:.1f} groups filtered per step; "
        f"staleness {sm['staleness_mean']:.2f}; {sm['stale_groups']} stale groups",
        f"{rep['steps']} steps simulated in {rep['real_s']:.1f} s",
    ]
    if rep.get("candidates"):
        lines += ["", "splits of the cluster (learners on whole nodes; the rest rollout engines)",
                  f"  {'learner GPUs':>12} {'engines':>8} {'step s':>8} {'rollout busy':>12} {'learner idle':>12}"]
        for cnd in rep["candidates"]:
            mark = ("  <- best" if cnd.get("best") else "  <- within 10% of the best" if cnd.get("tie") else "") \
                + ("  (this config)" if cnd["current"] else "")
            if not cnd["fits"]:
                lines.append(f"  {cnd['learner_gpus']:12d} {cnd['engines']:8d}  does not fit: {cnd['error']}")
                continue
            lines.append(f"  {cnd['learner_gpus']:12d} {cnd['engines']:8d} {cnd['step_time_s']:8.1f} "
                         f"{cnd['rollout_busy_frac']:12.1%} {cnd['learner_idle_frac']:12.1%}{mark}")
    return "\n".join(lines)
