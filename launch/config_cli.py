"""The command line the helper entry points share: ``--config FILE``, ``--dry-run``, ``key=value ...``."""

from __future__ import annotations

import argparse
import sys

from nous_ray.config import Config, ConfigError, load_config


def config_parser(doc: str, overrides_help: str, dry_run_help: str | None = None) -> argparse.ArgumentParser:
    """``--config FILE``, ``key=value`` overrides and, with its help, ``--dry-run``; callers add theirs."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (default: configs/tiny.yaml)")
    if dry_run_help:
        p.add_argument("--dry-run", action="store_true", help=dry_run_help)
    p.add_argument("overrides", nargs="*", help=overrides_help)
    return p


def parse_config_args(doc: str, argv, dry_run_help: str, overrides_help: str) -> argparse.Namespace:
    return config_parser(doc, overrides_help, dry_run_help).parse_args(argv)


def load_named_config(name: str, args: argparse.Namespace) -> Config | None:
    """The config ``args`` name; None after printing a config error (the caller exits with 2)."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"{name}: config error: {e}", file=sys.stderr)
        return None


def config_from_argv(name: str, doc: str, argv, dry_run_help: str,
                     overrides_help: str) -> tuple[argparse.Namespace, Config | None]:
    """The parsed arguments and the config they name; None after printing a config error (the caller
    exits with 2)."""
    args = parse_config_args(doc, argv, dry_run_help, overrides_help)
    return args, load_named_config(name, args)
