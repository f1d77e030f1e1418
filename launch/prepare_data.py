"""Prepare the training set: ``python launch/prepare_data.py --train SOURCE [--train SOURCE ...]
--eval SOURCE --out DIR [--config FILE] [key=value ...]``.

A SOURCE is ``NAME`` or ``NAME:PATH`` with the loaders' names (``deepcoder``, ``rlvr``, ``lcb``,
``jsonl``, ``tiny``; a DeepCoder subset as ``deepcoder/taco``); PATH a hub name or local files. An
``lcb`` evaluation source is cut to the window ``eval.start_date`` .. ``eval.end_date``.

Stages (``prepare.*`` keys switch them and set their thresholds; see nous_ray/config.py):
1. normalize and validate (malformed rows skipped and counted);
2. exact and near-duplicate removal (word 5-gram Jaccard >= 0.7, MinHash LSH), keeping the most tests;
3. decontamination: contest date on or after the evaluation window's start; statement 13-gram
   overlap >= 0.5 with any evaluation problem;
4. test verification: up to 3 reference solutions through the training judge; broken, multi-answer
   and fewer-than-5-test problems dropped; tests on which references disagree reported;
5. difficulty (``prepare.difficulty=true``; needs ``model.path``): ``prepare.difficulty_samples``
   responses per problem from rollout workers, problems solved by all or none of them dropped.

Writes DIR/problems.jsonl (train on it with ``data.train=jsonl data.train_path=DIR/problems.jsonl``),
DIR/report.json and prints a table. Stages 4 and 5 save their per-problem results
(DIR/verify_results.jsonl, DIR/pass_counts.jsonl): an interrupted run resumes from them, and a
re-run reuses them.

Examples::

    python launch/prepare_data.py --config configs/nouscoder_14b.yaml --out data/nouscoder \\
        --train deepcoder/primeintellect --train deepcoder/taco --train deepcoder/lcbv5 --eval lcb
    python launch/prepare_data.py --train tiny --eval lcb:tests/fixtures/data/prepare/lcb_eval.jsonl \\
        --out runs/prepared prepare.min_tests=4 prepare.difficulty=true
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nous_ray.env import apply_stack_env, setup_logging, start_ray  # noqa: E402

apply_stack_env()

from nous_ray.config import Config, ConfigError, load_config  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="append", required=True, metavar="SOURCE",
                   help="a training source, NAME or NAME:PATH (repeat for several)")
    p.add_argument("--eval", default=None, metavar="SOURCE", help="the evaluation set to decontaminate against")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--config", default=None, help="YAML config (default: configs/tiny.yaml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. prepare.min_tests=3")
    return p.parse_args(argv)


class PoolSampler:
    """The difficulty stage's rollout workers: vLLM engines in a placement group on the Ray cluster
    this runs in (or a local one), with the model's tokenizer for the prompts."""

    def __init__(self, cfg: Config, out_dir: Path):
        from transformers import AutoTokenizer

        from actors.placement import Placement
        from actors.pools import RolloutPool
        from nous_ray.models.tiny import resolve_model_path

        self.cfg = cfg
        self.model_path = resolve_model_path(cfg.model, out_dir)
        print(f"prepare: starting {cfg.rollout.num_workers} rollout worker(s) for {self.model_path}",
              file=sys.stderr, flush=True)
        self.ray = start_ray(cfg.run.ray_address, dashboard=False)
        self.placement = self.pool = None
        try:
            pcfg = copy.deepcopy(cfg)
            pcfg.learner.num_ranks = 0  # rollout workers only; the judge runs in this process
            pcfg.verifier.num_actors = 0
            self.placement = Placement(pcfg)
            self.pool = RolloutPool(cfg, self.model_path, self.placement)
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        except BaseException:
            self.close()
            raise
        self.size = self.pool.size

    def encode(self, problems):
        from nous_ray.eval import encode_prompts

        return encode_prompts(self.tokenizer, problems, self.cfg.data.prompt_format)

    async def generate(self, i, requests, n, sampling, max_tokens):
        return await self.pool.generate(i, requests, n, sampling, max_tokens)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        if self.placement is not None:
            self.placement.remove()
            self.placement = None
        self.ray.shutdown()


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    out = Path(args.out)
    from nous_ray.prepare import prepare
    from nous_ray.prepare.sources import SourceError

    try:
        cfg = load_config(args.config, args.overrides)
        prepare(cfg, args.train, args.eval, out, open_sampler=lambda: PoolSampler(cfg, out),
                progress=not args.no_progress, say=lambda line: print(line, flush=True))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (SourceError, FileNotFoundError, ConnectionError, ValueError) as e:  # a source that cannot be read
        print(f"prepare: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prepare: interrupted; what was judged is saved in {out}: run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
