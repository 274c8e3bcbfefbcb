"""The ``recgrpc`` command: its parser and subcommands (help and operator messages: cli_help)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

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


def _as_of(text: str) -> datetime:
    """ISO-8601 time for ``--as-of``; a time without a zone is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def cmd_train_churn(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.db import Database
    from recgrpc.jobs import churn_training as churn

    horizon = settings.churn_horizon_days if args.horizon_days is None else args.horizon_days
    db = Database(settings.database_url)
    try:
        now = datetime.now(UTC)
        if args.as_of is not None:
            as_of = args.as_of
        else:
            with db.reader() as session:
                as_of = churn.default_as_of(session, now)
        if as_of > now:
            print("recgrpc: --as-of must not be in the future", file=sys.stderr)
            return 2
        try:
            report = churn.train_churn(
                db, as_of=as_of, horizon_days=horizon, step_days=args.step_days, now=now
            )
        except ValueError as exc:
            print(f"recgrpc: cannot train the churn model: {exc}", file=sys.stderr)
            return 1
    finally:
        db.dispose()
    print(churn.format_report(report))
    return 0


def cmd_score_churn(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.db import Database
    from recgrpc.jobs import churn_scoring, churn_training

    db = Database(settings.database_url)
    try:
        scorer = churn_scoring.ActiveChurnModel(
            settings.churn_medium_threshold, settings.churn_high_threshold
        )
        if not scorer.refresh(db):
            print(f"recgrpc: {churn_scoring.NO_CHURN_MODEL}", file=sys.stderr)
            return 1
        now = datetime.now(UTC)
        with db.writer() as session:
            as_of = args.as_of or churn_training.default_as_of(session, now)
            if as_of > now:
                print("recgrpc: --as-of must not be in the future", file=sys.stderr)
                return 2
            predictions = scorer.score_all(session, as_of)
    finally:
        db.dispose()
    print(churn_scoring.format_level_summary(predictions, as_of))
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.db import Database
    from recgrpc.jobs import train as training
    from recgrpc.model.training import NotEnoughData, params_from_settings

    db = Database(settings.database_url)
    try:
        params = params_from_settings(
            settings,
            loss=args.loss,
            components=args.components,
            learning_rate=args.learning_rate,
        )
        report = training.train(db, settings, params=params, epochs=args.epochs, force=args.force)
    except NotEnoughData as exc:
        print(f"recgrpc: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"recgrpc: cannot train: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(training.format_training_report(report))
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from recgrpc.db import Database
    from recgrpc.jobs import online_metrics
    from recgrpc.jobs.train import evaluate_active
    from recgrpc.model.evaluation import format_online_metrics
    from recgrpc.model.training import NotEnoughData, metrics_table

    db = Database(settings.database_url)
    status = 0
    try:
        try:
            offline = evaluate_active(db, settings)
            print(f"offline: active model {offline.version} vs trending on the temporal holdout")
            print(metrics_table([("model", offline.model), ("trending", offline.trending)]))
        except (LookupError, NotEnoughData) as exc:
            print(f"recgrpc: {exc}", file=sys.stderr)
            status = 1
        window = timedelta(hours=args.window_hours)
        since = datetime.now(UTC) - timedelta(days=args.days)
        with db.reader() as session:
            online = online_metrics.online_metrics_since(session, since, window)
    finally:
        db.dispose()
    print(f"\nonline (last {args.days} days; hits within {args.window_hours}h of serving):")
    print(format_online_metrics(online))
    return status


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

    p = command("train-churn", "train, evaluate and activate the churn model")
    p.add_argument(
        "--as-of",
        type=_as_of,
        help="ISO-8601 reference time (default: now, or where the recorded history ends)",
    )
    p.add_argument(
        "--horizon-days",
        type=int,
        help=setting_help("days without activity that count as churn", "churn_horizon_days"),
    )
    p.add_argument("--step-days", type=int, default=14, help="days between training cut-offs")
    p.set_defaults(func=cmd_train_churn)

    p = command("score-churn", "score every user's churn risk into churn_predictions")
    p.add_argument(
        "--as-of",
        type=_as_of,
        help="ISO-8601 reference time (default: now, or where the recorded history ends)",
    )
    p.set_defaults(func=cmd_score_churn)

    p = command("train", "train the recommender; promote it if not worse than the active one")
    p.add_argument("--force", action="store_true", help="promote even if worse than the active")
    p.add_argument(
        "--epochs",
        type=int,
        help=setting_help("maximum epochs (early stopping may end sooner)", "epochs"),
    )
    p.add_argument("--components", type=int, help=setting_help("latent dimensions", "components"))
    p.add_argument(
        "--loss",
        choices=["warp", "bpr", "warp-kos", "logistic"],
        help=setting_help("LightFM loss", "loss"),
    )
    p.add_argument(
        "--learning-rate", type=float, help=setting_help("LightFM learning rate", "learning_rate")
    )
    p.set_defaults(func=cmd_train)

    p = command("evaluate", "active model vs trending on the holdout; online metrics")
    p.add_argument("--days", type=float, default=30.0, help="online metrics look-back (days)")
    p.add_argument(
        "--window-hours", type=float, default=24.0, help="a hit counts within this many hours"
    )
    p.set_defaults(func=cmd_evaluate)

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
