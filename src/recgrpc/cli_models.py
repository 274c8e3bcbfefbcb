"""``recgrpc train``, ``evaluate``, ``train-churn`` and ``score-churn``: the model commands, which
train, evaluate and score against the database directly (no server needed)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from recgrpc.cli_help import setting_help
from recgrpc.config import Settings

AddCommand = Callable[[str, str], argparse.ArgumentParser]


def add_model_commands(command: AddCommand) -> None:
    """Register ``train-churn``, ``score-churn``, ``train`` and ``evaluate``, in that order."""
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
