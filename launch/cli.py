"""What the entry points share: ``--config FILE [key=value ...]`` on the command line."""

from __future__ import annotations

import argparse
import sys

from nous_ray.config import Config, ConfigError, load_config


def config_parser(doc: str, example: str) -> argparse.ArgumentParser:
    """A parser with ``--config FILE`` and the ``key=value`` overrides (``example`` shows one)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (default: configs/tiny.yaml)")
    p.add_argument("overrides", nargs="*", help=f"key=value overrides, e.g. {example}")
    return p


def load_cli_config(args: argparse.Namespace) -> Config | None:
    """The config the command line names, or None after printing the error that names the key."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return None
