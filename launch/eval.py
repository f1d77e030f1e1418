"""Evaluate: ``python launch/eval.py --model PATH_OR_CHECKPOINT [--config FILE] [key=value ...]``.

LiveCodeBench v6 pass@1 by default (``eval.*`` in the config: 454 problems dated 2024-08-01 ..
2025-05-01, 16 samples each at temperature 0.6 / top_p 0.95, up to 81,920 response tokens with
YaRN factor 2.0 over 40,960 positions). Generation runs on vLLM rollout workers across the Ray
cluster, verification on the training verifier. Writes to ``--out DIR`` (default ``eval.out_dir``; for
a training checkpoint ``<run_dir>/eval_standalone/step_N``, beside the run's periodic evaluations in
``<run_dir>/eval/step_N``, which are made with the training engines' settings):

- ``results.jsonl``: one line per sample (problem id, sample index, verdict, reward, response tokens,
  finish reason, completion text), a problem at a time;
- ``summary.json``: pass@1, pass@k (k in 1, 4, 8, 16, k <= samples), by difficulty and platform,
  truncation rate, mean response length, verdict counts (infra errors counted, outside the means);
- ``pass_at_1.png``: pass@1 by difficulty (and by step, for a training run with periodic evals);

and prints a table. Interrupted (Ctrl-C prints one line and exits 130)? Run the same command again:
finished problems are kept, not generated again (``--fresh`` starts over). Results made with other
settings (model, sampling, limits) are never mixed in: the command stops before any engine starts.

``--model`` is one of:
- ``tiny``: the bundled tiny model (random weights, built from ``model.tiny_*``);
- a Hugging Face folder (``config.json`` + weights + tokenizer) or a cached hub name;
- a training checkpoint ``<run_dir>/checkpoints/step_N``: its learner state is exported to a
  Hugging Face folder ``step_N/hf`` first (learner ranks load it and write it; done once), using the
  run's own ``config.yaml`` for the architecture. Its run's ``metrics.jsonl`` feeds the by-step plot.

Examples::

    python launch/eval.py --model Qwen/Qwen3-14B --config configs/nouscoder_14b.yaml
    python launch/eval.py --model runs/tiny/checkpoints/step_000060 eval.dataset=tiny eval.max_tokens=64
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nous_ray.env import apply_stack_env, setup_logging, start_ray  # noqa: E402

apply_stack_env()

from nous_ray.config import Config, ConfigError, load_config  # noqa: E402
from nous_ray.driver.checkpoint import CHECKPOINT_DONE  # noqa: E402

log = logging.getLogger("nous_ray.eval")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help='"tiny", a Hugging Face folder or hub name, or a training '
                   "checkpoint <run_dir>/checkpoints/step_N")
    p.add_argument("--config", default=None, help="YAML config (default: configs/tiny.yaml)")
    p.add_argument("--out", default=None, help="output folder (default: eval.out_dir, else "
                   "<run_dir>/eval_standalone/step_N for a checkpoint, else runs/eval/<model name>)")
    p.add_argument("--run-dir", default=None, help="a training run whose metrics.jsonl eval/pass@1 "
                   "entries are plotted by step (found automatically for a checkpoint)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in the output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. eval.n_samples=4")
    return p.parse_args(argv)


def is_checkpoint(path: Path) -> bool:
    return (path / CHECKPOINT_DONE).exists() and (path / "learner").is_dir()


STANDALONE_DIR = "eval_standalone"  # in a run dir; "eval" holds the periodic evaluations of training


def out_dir(out: str | None, cfg: Config, model_arg: str, ckpt: Path | None) -> Path:
    """``--out``, else ``eval.out_dir``, else a default named after the model or checkpoint."""
    if out:
        return Path(out)
    if cfg.eval.out_dir:
        return Path(cfg.eval.out_dir)
    if ckpt is not None:
        return ckpt.parent.parent / STANDALONE_DIR / ckpt.name
    return Path("runs") / "eval" / (Path(model_arg.rstrip("/")).name or "model")


def export_checkpoint(ckpt: Path, cfg: Config) -> Path:
    """``<ckpt>/hf``: the checkpoint's weights as a Hugging Face folder (written once, then reused).

    The learner ranks (one is enough: the sharded checkpoint reshards on load) rebuild the run's
    model, load the checkpoint and write the folder with the learner's own export.
    """
    out = ckpt / "hf"
    if (out / "config.json").exists():
        return out
    from actors.learner import Learner
    from nous_ray.models.tiny import resolve_model_path

    run_dir = ckpt.parent.parent
    run_cfg = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else copy.deepcopy(cfg)
    run_cfg.learner.num_ranks = 1
    base = resolve_model_path(run_cfg.model, run_dir)
    print(f"exporting checkpoint {ckpt} to a Hugging Face folder (base {base})", file=sys.stderr, flush=True)

    async def go():
        learner = Learner.for_run(run_cfg, base)
        try:
            await learner.load_checkpoint(str(ckpt / "learner"))
            await learner.export_hf(str(out))
        finally:
            learner.shutdown()

    asyncio.run(go())
    return out


def engine_report(pool) -> list | None:
    """What each running engine actually uses (rope settings, context), if the worker can say."""
    import ray

    try:
        return ray.get([w.engine_info.remote() for w in pool.workers])
    except AttributeError:
        log.warning("rollout workers have no engine_info(); the effective rope settings are not reported")
        return None


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    from transformers import AutoTokenizer

    from nous_ray.eval import (
        EvalResumeError,
        encode_prompts,
        evaluate,
        format_table,
        long_context_settings,
        plot_pass_at_1,
        prompt_style,
        read_eval_history,
        read_model_rope,
        select_problems,
    )
    from nous_ray.eval.records import finished_problems
    from nous_ray.eval.runner import check_resumable
    from nous_ray.models.tiny import build_tiny_model_dir

    model_arg = args.model
    ckpt = Path(model_arg) if is_checkpoint(Path(model_arg)) else None
    out = out_dir(args.out, cfg, model_arg, ckpt)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(args.run_dir) if args.run_dir else (ckpt.parent.parent if ckpt is not None else None)

    # Everything that can fail cheaply fails before the cluster starts.
    try:
        problems = select_problems(cfg.eval)
    except (ValueError, FileNotFoundError) as e:
        print(f"eval: cannot load problems: {e}", file=sys.stderr)
        return 2

    ray, pools = None, []
    try:
        if model_arg == "tiny":
            model_path = str(build_tiny_model_dir(cfg.model, out / "tiny_model"))
        elif ckpt is not None:
            if not (ckpt / "hf" / "config.json").exists():  # exported once, by the learner ranks
                ray = start_ray(cfg.run.ray_address, dashboard=False)
            model_path = str(export_checkpoint(ckpt, cfg))
        else:
            if Path(model_arg).is_dir() and not (Path(model_arg) / "config.json").exists():
                print(f"eval: --model {model_arg}: a folder without config.json is neither a Hugging Face "
                      f"model nor a complete checkpoint (<run_dir>/checkpoints/step_N with {CHECKPOINT_DONE})",
                      file=sys.stderr)
                return 2
            model_path = model_arg
        tok = AutoTokenizer.from_pretrained(model_path)
        prompt_ids = encode_prompts(tok, problems, prompt_style(cfg), cfg.eval.enable_thinking)
        rope = read_model_rope(model_path) if cfg.eval.yarn_original_max_positions else None
        eng = long_context_settings(cfg.eval, max(len(p) for p in prompt_ids), rope)
        for note in eng.notes:
            print(f"eval: {note}", file=sys.stderr, flush=True)
        if not args.fresh:  # before "already done" or any engine: results made otherwise are never reused
            check_resumable(cfg, out, model=model_path, engine=eng.to_dict())
        print(f"eval: model {model_path} | {len(problems)} problems | {cfg.eval.n_samples} samples each | "
              f"max_tokens {cfg.eval.max_tokens} (at most max_model_len minus the prompt) | "
              f"max_model_len {eng.max_model_len} | out {out}", file=sys.stderr, flush=True)

        rollout = verifiers = None
        info = {"engine_notes": eng.notes, "engine_reported": None}
        pending = [p.id for p in problems if p.id not in finished_problems(out, cfg.eval.n_samples)]
        if pending or args.fresh:
            from actors.placement import Placement
            from actors.pools import RolloutPool, VerifierPool

            ray = ray or start_ray(cfg.run.ray_address, dashboard=False)
            pcfg = copy.deepcopy(cfg)
            pcfg.learner.num_ranks = 0  # no learners in an evaluation
            placement = Placement(pcfg)
            pools.append(placement)
            rollout = RolloutPool(cfg, model_path, placement, hf_overrides=eng.hf_overrides,
                                  max_model_len=eng.max_model_len)
            pools.append(rollout)
            verifiers = VerifierPool(cfg, placement)
            pools.append(verifiers)
            info["engine_reported"] = engine_report(rollout)
        else:
            print("eval: every problem is already in results.jsonl; no engine started", file=sys.stderr, flush=True)
        summary = asyncio.run(evaluate(cfg, problems, prompt_ids, rollout, verifiers, out, model=model_path,
                                       max_model_len=eng.max_model_len,
                                       engine=eng.to_dict(), info=info, fresh=args.fresh,
                                       progress=not args.no_progress, plot=False))
    except EvalResumeError as e:
        print(f"eval: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what is recorded stays, and the same command resumes from it
        done = len({p.id for p in problems} & finished_problems(out, cfg.eval.n_samples))
        print(f"eval: interrupted; {done} of {len(problems)} problems are complete in {out / 'results.jsonl'}; "
              f"run the same command to resume", file=sys.stderr, flush=True)
        return 130
    finally:
        for part in reversed(pools):
            getattr(part, "shutdown", getattr(part, "remove", lambda: None))()
        if ray is not None:
            ray.shutdown()

    history = read_eval_history(run_dir) if run_dir is not None else []
    try:
        plot_pass_at_1(summary, out / "pass_at_1.png", history=history or None)
    except Exception as e:  # a view; the numbers are already written
        log.warning("plot not written: %s", e)
    print(format_table(summary))
    print(f"pass@1 {summary['pass@1']} | {out / 'summary.json'} | {out / 'results.jsonl'} | "
          f"problems generated {summary['run']['problems_generated']}, resumed {summary['run']['problems_resumed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
