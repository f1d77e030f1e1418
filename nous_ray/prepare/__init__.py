"""The training set as the recipe needs it: one command, five switchable stages, one report.

1. normalize  -- load every source with the project's loaders, skipping and counting malformed rows;
2. dedupe     -- exact and near-duplicate statements inside the training set (keep the most tests);
3. decontaminate -- against the evaluation set, by contest date and by statement 13-gram overlap;
4. verify_tests  -- reference solutions through the training judge; broken, multi-answer and
   too-small test sets dropped, disagreeing tests reported;
5. difficulty -- N samples per problem from the starting model; always or never solved dropped.

Public API::

    from nous_ray.prepare import prepare
    report = prepare(cfg, ["deepcoder/taco", "lcb"], "lcb", "data/prepared", open_sampler=...)

Pure library: no Ray, no actors; ``launch/prepare_data.py`` brings the rollout workers for stage 5.
"""

from nous_ray.prepare.pipeline import PASS_COUNTS_FILE, PROBLEMS_FILE, REPORT_FILE, VERIFY_FILE, prepare

__all__ = ["PASS_COUNTS_FILE", "PROBLEMS_FILE", "REPORT_FILE", "VERIFY_FILE", "prepare"]
