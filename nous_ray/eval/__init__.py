"""Evaluation: LiveCodeBench pass@k with the training verifier, long-context (YaRN) engines, resume.

Public API::

    from nous_ray.eval import (select_problems, encode_prompts, long_context_settings, read_model_rope,
                               evaluate, summarize, metrics_for_log, format_table, plot_pass_at_1)

    problems = select_problems(cfg.eval)                          # LCB v6 window through the loaders
    ids = encode_prompts(tokenizer, problems, prompt_style(cfg))
    eng = long_context_settings(cfg.eval, max(map(len, ids)), read_model_rope(model_path))
    pool = RolloutPool(cfg, model_path, hf_overrides=eng.hf_overrides, max_model_len=eng.max_model_len)
    summary = await evaluate(cfg, problems, ids, pool, verifiers, out_dir, max_model_len=eng.max_model_len)

    # During training, on the training pools (no YaRN, their max_model_len), between steps:
    summary = await evaluate(cfg, problems, ids, workers.rollout, workers.verifiers,
                             run_dir / "eval" / f"step_{step:06d}", step=step, progress=False,
                             max_tokens=max_tokens_within(cfg.rollout.max_model_len, ids, cfg.eval.max_tokens))
    sinks.log(step, metrics_for_log(summary))                     # eval/pass@1, eval/pass@4, ...
"""

from nous_ray.eval.engine import (
                                  EngineSettings,
                                  ModelRope,
                                  long_context_settings,
                                  max_tokens_within,
                                  read_model_rope,
                                  yarn_hf_overrides,
)
from nous_ray.eval.records import EvalResumeError, ResultsFile, complete_problems, make_record, read_records
from nous_ray.eval.report import format_table, plot_pass_at_1, read_eval_history
from nous_ray.eval.runner import eval_sampling, evaluate
from nous_ray.eval.selection import encode_prompts, prompt_style, select_problems
from nous_ray.eval.summary import DEFAULT_KS, metrics_for_log, pass_at_ks, summarize

__all__ = [
    "DEFAULT_KS", "EngineSettings", "EvalResumeError", "ModelRope", "ResultsFile", "complete_problems",
    "encode_prompts", "eval_sampling", "evaluate", "format_table", "long_context_settings", "make_record",
    "max_tokens_within",
    "metrics_for_log", "pass_at_ks", "plot_pass_at_1", "prompt_style", "read_eval_history", "read_model_rope",
    "read_records", "select_problems", "summarize", "yarn_hf_overrides",
]
