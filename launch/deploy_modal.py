"""Deploy the Modal verifier with a run's settings: ``python launch/deploy_modal.py --config FILE [key=value ...]``.

Reads the ``verifier`` section of the config (``modal_app``, ``modal_function``, the ``modal_*``
autoscaler keys and the judge's limits), prints the function's settings and deploys
``nous_ray/verify/modal_app.py`` under ``verifier.modal_app`` with them. Needs a Modal token where it
runs (``modal token new``, or MODAL_TOKEN_ID / MODAL_TOKEN_SECRET). Deploy again after changing any
``verifier.*`` key or the judge's code. ``--dry-run`` prints the settings and deploys nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch.config_cli import config_from_argv  # noqa: E402


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
    args, cfg = config_from_argv("deploy_modal", __doc__, argv, "print the settings, deploy nothing",
                                 "key=value overrides, e.g. verifier.modal_max_containers=200")
    if cfg is None:
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
