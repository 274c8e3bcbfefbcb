"""The ``recgrpc`` command. Every subcommand takes ``--database-url`` (else RECGRPC_DATABASE_URL,
else the SQLite file ``recgrpc.db``); other settings come from flags or ``RECGRPC_*`` variables.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from recgrpc.config import Settings

log = logging.getLogger("recgrpc")

Command = Callable[[argparse.Namespace, Settings], int]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in ("database_url", "host", "port", "metrics_port", "workers", "log_json")
    }
    return Settings.from_env(**overrides)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.db import upgrade

    upgrade(settings.database_url)
    print(f"database at {_display_url(settings.database_url)} is up to date")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.server import serve

    return serve(settings)


def _display_url(url: str) -> str:
    from recgrpc.db import normalise_url

    return normalise_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recgrpc", description=__doc__)
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: RECGRPC_DATABASE_URL)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ...")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("serve", help="run the gRPC server and the Prometheus endpoint")
    p.add_argument("--host", help="bind address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="gRPC port (default 50051)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 9464; 0 = off)")
    p.add_argument("--workers", type=int, help="server processes sharing the port")
    p.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"recgrpc: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=(args.log_level or settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Command = args.func
    return func(args, settings)


if __name__ == "__main__":
    raise SystemExit(main())
