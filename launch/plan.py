"""Plan a run: ``python launch/plan.py --config FILE [key=value ...] [--json]``.

Runs the real driver on stand-in workers whose durations come from the cost model
(``nous_ray/sim``; its parameters are the ``sim.*`` keys) on a virtual clock, for ``--steps`` steps,
and prints per role: GPUs, busy fraction, tokens/s, the step-time breakdown, the learners' idle time
split into waiting on generation and on verification, the weight-sync time; memory per GPU; and the
step time of every rollout/learner split of the cluster (``--splits-steps 0`` skips them). With
``--json`` it writes one JSON object to stdout instead. Exit status 1 when something does not fit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nous_ray.env import apply_stack_env  # noqa: E402

apply_stack_env()

from launch.config_cli import config_parser, load_named_config  # noqa: E402


def parse_args(argv):
    p = config_parser(__doc__, "key=value overrides, e.g. trainer.prompts_per_step=64")
    p.add_argument("--steps", type=int, default=20, help="steps to simulate (default 20)")
    p.add_argument("--splits-steps", type=int, default=8,
                   help="steps per candidate split of the cluster (default 8; 0 = do not compare splits)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_named_config("plan", args)
    if cfg is None:
        return 2
    from nous_ray.sim.planner import compare_splits, format_report, simulate

    try:
        report = simulate(cfg, args.steps)
        if report["fits"] and args.splits_steps > 0:
            report["candidates"] = compare_splits(cfg, args.splits_steps)
    except ValueError as e:  # an unknown GPU or model, with the key that names it
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, default=float))
    else:
        print(format_report(report))
    if not report["fits"]:
        print(f"error: {report['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
