"""The ``buzon`` command: run the daemon, check the config, ingest files, inspect tickets.

Exit codes: 0 success, 2 bad usage or configuration, 1 any other failure.
Machine output (``--json``) goes to stdout; logs of the one-shot commands go
to stderr so they never mix with it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from daemon import cli_args
from daemon import config as config_mod
from daemon import logging as logmod
from daemon.errors import ConfigError, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 — one exit per kind of command
    args = cli_args.parser().parse_args(argv)
    if args.command == "logs":  # needs no config: a journal reader may not read the data
        from daemon import logs_command

        return logs_command.main(args)
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"buzon: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        return _run_daemon(cfg)
    logmod.configure("warning", cfg.log.format, stream=sys.stderr)
    if args.command == "check-config":
        print(f"# configuration OK: {cfg.source}")
        print(json.dumps(cfg.redacted(), indent=2))
        return EXIT_OK
    handler = handler_for(args.command, getattr(args, "action", None))
    try:
        result: int = handler(cfg, args)
    except UsageError as exc:
        print(f"buzon: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a message, not a traceback, for the admin
        print(f"buzon: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return result


def handler_for(command: str, action: str | None) -> Callable[..., Any]:
    """The function that runs ``buzon COMMAND [ACTION]``, its module imported only now."""
    module, _, name = cli_args.HANDLERS[(command, action)].partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _run_daemon(cfg: config_mod.Config) -> int:
    logmod.configure(cfg.log.level, cfg.log.format, components=dict(cfg.log.components))
    from daemon.app import serve

    try:
        return asyncio.run(serve(cfg))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return EXIT_FAILURE
    except Exception as exc:  # one clear line for the admin, then exit 1
        logmod.get_logger(component="daemon").error(
            "daemon.failed", error=f"{type(exc).__name__}: {exc}"
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
