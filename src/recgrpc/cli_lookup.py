"""``recgrpc search`` and ``recgrpc stats``: what SearchItems and GetUserStats (with the user's
latest interactions and churn predictions) return, printed for support staff.

They call a running server through the typed client, so they show exactly what the service
answers (and need no database access of their own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from recgrpc.config import Settings

if TYPE_CHECKING:
    from recgrpc.client import RecommendationClient

Command = Callable[[argparse.Namespace, Settings], int]
AddCommand = Callable[[str, str], argparse.ArgumentParser]


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        help="server address HOST:PORT (default: 127.0.0.1 and the configured port)",
    )
    p.add_argument("--token", help="bearer token when the server requires one")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline per call (seconds)")


def add_lookup_commands(command: AddCommand) -> None:
    """Register ``search`` and ``stats`` on the ``recgrpc`` parser."""
    p = command("search", "search the catalogue as SearchItems does, on a running server")
    p.add_argument("query", help="what to search for (1-255 characters)")
    p.add_argument("--limit", type=int, default=10, help="items wanted (at most 100)")
    p.add_argument("--user", help="re-rank for this user (and record the list)")
    p.add_argument("--category", action="append", help="only items in this category (repeat)")
    p.add_argument(
        "--exclude-seen", action="store_true", help="leave out what --user already interacted with"
    )
    _client_options(p)
    p.set_defaults(func=cmd_search)

    p = command("stats", "a user's numbers, latest interactions and churn history")
    p.add_argument("user", help="user id")
    p.add_argument("--history", type=int, default=10, help="latest interactions to list (0: none)")
    _client_options(p)
    p.set_defaults(func=cmd_stats)


def _client(args: argparse.Namespace, settings: Settings) -> RecommendationClient:
    from recgrpc.client import RecommendationClient  # noqa: PLC0415 - keeps --help fast

    target = args.target or f"127.0.0.1:{settings.port}"
    return RecommendationClient(target, token=args.token or None, timeout=args.timeout)


def _failed(exc: Exception) -> int:
    from recgrpc.client import NotFoundError, RecGrpcError, UnavailableError  # noqa: PLC0415

    if isinstance(exc, NotFoundError):
        print(f"recgrpc: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, UnavailableError):
        print(f"recgrpc: the server is not reachable ({exc}); is `recgrpc serve` running "
              "there? (--target HOST:PORT)", file=sys.stderr)  # fmt: skip
        return 2
    if isinstance(exc, RecGrpcError):
        print(f"recgrpc: {exc}", file=sys.stderr)
        return 2
    raise exc


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.client import RecGrpcError  # noqa: PLC0415

    try:
        with _client(args, settings) as client:
            found = client.search_items(
                args.query, limit=args.limit, user_id=args.user or "",
                categories=args.category or (), exclude_seen=args.exclude_seen,
            )  # fmt: skip
    except RecGrpcError as exc:
        return _failed(exc)
    if found.fallback_reason:
        print(f"no item matches {args.query!r} ({found.fallback_reason}): trending items instead")
    for hit in found.items:
        categories = ", ".join(hit.categories)
        print(f"{hit.rank:>3}  {hit.item_id:<24} {hit.score:8.3f}  {hit.reason:<19} "
              f"{hit.title}  [{categories}]")  # fmt: skip
    model = f", model {found.model_version}" if found.model_version else ""
    print(f"recset_id {found.recset_id}{model}")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from recgrpc.client import RecGrpcError  # noqa: PLC0415

    try:
        with _client(args, settings) as client:
            stats = client.get_user_stats(args.user)
            history = (
                client.list_interactions(args.user, page_size=args.history).interactions
                if args.history > 0
                else ()
            )
            churn = client.list_churn_predictions(args.user, page_size=5).predictions
    except RecGrpcError as exc:
        return _failed(exc)
    print(f"user {stats.user_id}")
    print(f"  lists served      {stats.lists_served} ({stats.items_shown} items shown)")
    print(f"  items clicked     {stats.items_clicked}")
    print(f"  items dismissed   {stats.items_dismissed}")
    print(f"  click-through     {stats.click_through_rate:.1%}")
    by_type = ", ".join(f"{k.value} {n}" for k, n in sorted(stats.interactions.items()))
    print(f"  interactions      {stats.total_interactions}" + (f" ({by_type})" if by_type else ""))
    print(f"  first activity    {_when(stats.first_activity)}")
    print(f"  last activity     {_when(stats.last_activity)}")
    if stats.churn_risk is None or stats.risk_level is None:
        print("  churn risk        never predicted")
    else:
        print(f"  churn risk        {stats.churn_risk:.2f} {stats.risk_level.value} "
              f"(predicted {_when(stats.churn_predicted_at)})")  # fmt: skip
    if history:
        print(f"latest {len(history)} interactions:")
        for event in history:
            what = event.item_id or f"query {event.metadata.get('query', '')!r}"
            kind = event.type.value if event.type is not None else "?"
            print(f"  {_when(event.occurred_at)}  {kind:<12} {what}")
    if churn:
        print("churn predictions:")
        for p in churn:
            level = p.level.value if p.level is not None else "?"
            print(f"  {_when(p.predicted_at)}  {p.risk:.2f} {level:<6} model {p.model_version}")
    return 0
