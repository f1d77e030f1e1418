"""Deploy the Modal verifier with a run's settings: ``python launch/deploy_modal.py --config FILE [key=value ...]``.

Reads the ``verifier`` section of the config (``modal_app``, ``modal_function``, the ``modal_*``
autoscaler keys and the judge's limits), prints the function's settings and deploys
``nous_ray/verify/modal_app.py`` under ``verifier.modal_app`` with them. Needs a Modal token where it
runs (``modal token new``, or MODAL_TOKEN_ID / MODAL_TOKEN_SECRET). Deploy again after changing any
``verifier.*`` key or the judge's code. ``--dry-run`` prints the settings and deploys nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nous_ray.config import ConfigError, load_config  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (default: configs/tiny.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the settings, deploy nothing")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. verifier.modal_max_containers=200")
    return p.parse_args(argv)


def load_app(verifier_cfg):
    """``nous_ray.verify.modal_app`` defined with ``verifier_cfg`` (re-imported if it was loaded before)."""
    from nous_ray.verify.modal_app import CONFIG_ENV

    os.environ[CONFIG_ENV] = json.dumps(dataclasses.asdict(verifier_cfg))
    import nous_ray.verify.modal_app as modal_app

    return importlib.reload(modal_app)


def deploy(modal_app) -> None:
    import modal

    with modal.enable_output():
        modal_app.app.deploy(name=modal_app.CFG.modal_app)


def main(argv=None, deploy_app=deploy, out=print) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    app = load_app(cfg.verifier)
    shown = {k: v for k, v in app.FUNCTION_SETTINGS.items() if k != "env"}
    out(f"Modal app {app.app.name!r}, function {shown['name']!r}: {json.dumps(shown)}")
    if args.dry_run:
        return 0
    deploy_app(app)
    out(f"deployed; runs with verifier.backend=modal and verifier.modal_app={app.app.name} call it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
