"""The ``recgrpc`` command: its parser and subcommands (help and operator messages: cli_help)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from recgrpc import __version__
from recgrpc.cli_discovery import add_similar_command
from recgrpc.cli_help import (
    HelpFormatter,
    display_url,
    global_options,
    operator_problem,
    setting_help,
)
from recgrpc.cli_lookup import add_lookup_commands
from recgrpc.cli_models import add_model_commands
from recgrpc.config import ENV_PREFIX, Settings
from recgrpc.logs import configure_logging

log = logging.getLogger("recgrpc")

Command = Callable[[argparse.Namespace, Settings], int]

DESCRIPTION = (
    "recgrpc: a recommendation service over gRPC. Every subcommand takes --database-url and "
    "--log-level, before or after its name; other settings come from the subcommand's flags or "
    f"{ENV_PREFIX}* environment variables (see the README's configuration table)."
)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in (
            "database_url",
            "host",
            "port",
            "metrics_port",
            "dashboard_port",
            "workers",
            "log_json",
        )
    }
    return Settings.from_env(**overrides)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.db import upgrade

    upgrade(settings.database_url)
    print(f"database at {display_url(settings.database_url)} is up to date")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.server import serve

    return serve(settings)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc import bench_command as bench

    # Only an explicit URL is benchmarked: seeding must never touch the configured database.
    args.bench_database_url = args.bench_database_url or args.database_url or ""
    return bench.run(args)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from recgrpc.db import Database, upgrade
    from recgrpc.jobs.importer import ImportRefused, ImportRefusedByDatabase, import_file
    from recgrpc.validation import RatingScale

    path = Path(args.file)
    if not path.is_file():
        print(f"recgrpc: no such file: {path}", file=sys.stderr)
        return 2
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    try:
        report = import_file(
            db,
            args.kind,
            path,
            progress=not args.quiet and sys.stderr.isatty(),
            ratings=RatingScale.of(settings),
        )
    except ImportRefused as exc:
        print(f"recgrpc: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        if exc.bad_rows > len(exc.problems):
            print(f"  ... (first {len(exc.problems)} problems shown)", file=sys.stderr)
        # A row only the database refuses is for the operator to look into, like an outage.
        return 2 if isinstance(exc, ImportRefusedByDatabase) else 1
    finally:
        db.dispose()
    line = f"imported {report.rows} rows of {report.kind} from {path}: {report.new_rows} new"
    if report.created_users or report.created_items:
        line += (
            f"; created {report.created_users} users and {report.created_items} items"
            " that were not in the database"
        )
    print(line)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.db import Database, upgrade
    from recgrpc.jobs.demo import generate_demo, write_demo

    try:
        data = generate_demo(
            seed=args.seed, n_users=args.users, n_items=args.items, n_interactions=args.interactions
        )
    except ValueError as exc:
        print(f"recgrpc: {exc}", file=sys.stderr)
        return 2
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    try:
        report = write_demo(db, data)
    finally:
        db.dispose()
    print(
        f"demo (seed {args.seed}) in {display_url(settings.database_url)}: "
        f"{report.items} items, {report.users} users ({report.preferences} preferences), "
        f"{report.interactions} interactions ({report.new_interactions} new), "
        f"{report.impressions} impressions ({report.new_impressions} new), "
        f"{report.new_feedback} new feedback; {len(data.churner_ids)} planted churners"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recgrpc",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
        parents=[global_options(None)],
    )
    parser.add_argument("--version", action="version", version=f"recgrpc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # SUPPRESS: a flag not given after the subcommand keeps the value given before it.
    common = global_options(argparse.SUPPRESS)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=help, parents=[common], formatter_class=HelpFormatter
        )

    p = command("migrate", "create or upgrade the database schema")
    p.set_defaults(func=cmd_migrate)

    p = command("serve", "run the gRPC server, the Prometheus endpoint and the dashboard")
    p.add_argument("--host", help=setting_help("bind address", "host"))
    p.add_argument("--port", type=int, help=setting_help("gRPC port", "port"))
    p.add_argument(
        "--metrics-port", type=int, help=setting_help("Prometheus port, 0 = off", "metrics_port")
    )
    p.add_argument(
        "--dashboard-port",
        type=int,
        help=setting_help("analytics dashboard (HTTP) port, 0 = off", "dashboard_port"),
    )
    p.add_argument(
        "--workers",
        type=int,
        help=setting_help(
            "server processes sharing the port (SO_REUSEPORT); worker i serves metrics on "
            "--metrics-port + i and the dashboard on --dashboard-port + i",
            "workers",
        ),
    )
    p.add_argument(
        "--log-json",
        action="store_true",
        default=None,
        help=setting_help("JSON log lines", "log_json"),
    )
    p.set_defaults(func=cmd_serve)

    add_model_commands(command)

    p = command("import", "bulk-import a CSV file (all rows or nothing)")
    p.add_argument("kind", choices=["items", "users", "preferences", "interactions"])
    p.add_argument("file", help="CSV file with a header row (see the README for the columns)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)

    p = command("demo", "generate the demo catalogue and history into the database")
    p.add_argument("--seed", type=int, default=42, help="random seed (same seed, same data)")
    p.add_argument("--users", type=int, default=3000, help="number of users")
    p.add_argument("--items", type=int, default=2000, help="number of items")
    p.add_argument("--interactions", type=int, default=100_000, help="number of interactions")
    p.set_defaults(func=cmd_demo)

    add_similar_command(command)
    add_lookup_commands(command)

    from recgrpc.bench_command import add_arguments as add_bench_arguments

    p = command(
        "bench", "throughput and latency of every RPC beside the health check (seeds its own data)"
    )
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"recgrpc: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or settings.log_level, json_lines=settings.log_json)
    func: Command = args.func
    try:
        return func(args, settings)
    except Exception as exc:
        problem = operator_problem(exc, settings)
        if problem is None:
            raise
        print(f"recgrpc: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
